"""One `ScalarTrunk` (``singleLayer → resnetNN → singleLayer``) on a block of rows, compiled.

Rows are samples: ``U: (S, d)``. Weights come packed per trunk ``t`` (`hinn_core.fastpath.pack`):
``net = (W0, b0, W0T, Wr, br, WrT, Wo, bo)`` with hessQuik's row-vector convention
``z = u @ K + b``, resnet ``a ← a + rh·σ(a @ K + b)``. Products are register tiles (`matmul`:
vector tiles and rows written in LLVM IR for widths 32 and 64, `_vectiles`; tiled loops with the
output index innermost otherwise); transposed copies (``W0T``, ``WrT``) keep the backward sweep in the
same form.

Derivatives mirror the torch paths in `hinn_core.networks.ScalarTrunk`: the input gradient by the
transposed chain rule; the Hessian as Σ_l J_lᵀ diag(μ_l ⊙ σ''(z_l)) J_l with the Jacobians
J_l = ∂z_l/∂u carried forward as ``d`` tangent rows per sample; the Jacobian of a vector trunk
by the same forward sweep.

Workspace ``ws = (Z, A, D1, D2, G, E, JA, JZ, HT, JF)``: Z, A, G, E ``(S, w)``; D1, D2
``(L+1, S, w)``; JA ``(S·d, w)``; JZ ``(L+1, S·d, w)``; HT ``(w, d)`` (`_curvature`'s scratch:
``w`` elements of it); JF ``(S·d, m)``.
"""

from __future__ import annotations

from numba import njit

from hinn_core.fastpath._math import KERNEL, activate, activate_first, activate_value, cst, flat
from hinn_core.fastpath._vectiles import vector_row, vector_tiles


@njit(inline="always", **KERNEL)
def _matmul_rows(A, K, Z, r0, R, accumulate, n):
    """`matmul` one row at a time, for rows ``r0 ≤ r < R`` (the tail of `matmul`'s 4-row tiles)."""
    m = K.shape[0]
    m8 = m - m % 8
    for r in range(r0, R):
        if not accumulate:
            for j in range(n):
                Z[r, j] = cst(Z, 0.0)
        for i in range(0, m8, 8):
            a0, a1, a2, a3 = A[r, i], A[r, i + 1], A[r, i + 2], A[r, i + 3]
            a4, a5, a6, a7 = A[r, i + 4], A[r, i + 5], A[r, i + 6], A[r, i + 7]
            for j in range(n):
                Z[r, j] += (((a0 * K[i, j] + a1 * K[i + 1, j]) + (a2 * K[i + 2, j] + a3 * K[i + 3, j]))
                            + ((a4 * K[i + 4, j] + a5 * K[i + 5, j]) + (a6 * K[i + 6, j] + a7 * K[i + 7, j])))
        for i in range(m8, m):
            a = A[r, i]
            for j in range(n):
                Z[r, j] += a * K[i, j]


@njit(inline="always", **KERNEL)
def _matmul_tiles(A, K, Z, R, accumulate, n):
    """`matmul` for the widths without vector tiles (`_vectiles.WIDTHS`): loop tiles of 4 rows."""
    m = K.shape[0]
    m4 = m - m % 4
    R4 = R - R % 4
    zero = cst(Z, 0.0)
    for r in range(0, R4, 4):
        z0, z1, z2, z3 = Z[r], Z[r + 1], Z[r + 2], Z[r + 3]
        x0, x1, x2, x3 = A[r], A[r + 1], A[r + 2], A[r + 3]
        if not accumulate:
            for j in range(n):
                z0[j] = zero
                z1[j] = zero
                z2[j] = zero
                z3[j] = zero
        for i in range(0, m4, 4):
            k0, k1, k2, k3 = K[i], K[i + 1], K[i + 2], K[i + 3]
            a00, a01, a02, a03 = x0[i], x0[i + 1], x0[i + 2], x0[i + 3]
            a10, a11, a12, a13 = x1[i], x1[i + 1], x1[i + 2], x1[i + 3]
            a20, a21, a22, a23 = x2[i], x2[i + 1], x2[i + 2], x2[i + 3]
            a30, a31, a32, a33 = x3[i], x3[i + 1], x3[i + 2], x3[i + 3]
            for j in range(n):
                c0, c1, c2, c3 = k0[j], k1[j], k2[j], k3[j]
                z0[j] += (a00 * c0 + a01 * c1) + (a02 * c2 + a03 * c3)
                z1[j] += (a10 * c0 + a11 * c1) + (a12 * c2 + a13 * c3)
                z2[j] += (a20 * c0 + a21 * c1) + (a22 * c2 + a23 * c3)
                z3[j] += (a30 * c0 + a31 * c1) + (a32 * c2 + a33 * c3)
        for i in range(m4, m):
            k0 = K[i]
            a0, a1, a2, a3 = x0[i], x1[i], x2[i], x3[i]
            for j in range(n):
                c0 = k0[j]
                z0[j] += a0 * c0
                z1[j] += a1 * c0
                z2[j] += a2 * c0
                z3[j] += a3 * c0
    _matmul_rows(A, K, Z, R4, R, accumulate, n)


@njit(inline="always", **KERNEL)
def _product(A, K, Z, R, accumulate, b):
    """`matmul` (``b`` None) or `matmul_bias` (``b`` the bias) at widths 32 and 64: the vector tiles,
    and vector rows for the rows no tile covers."""
    if K.shape[1] == 32:
        for r in range(vector_tiles(A, K, Z, R, accumulate, 32, b), R):
            vector_row(A, K, Z, r, accumulate, 32, b)
    else:
        for r in range(vector_tiles(A, K, Z, R, accumulate, 64, b), R):
            vector_row(A, K, Z, r, accumulate, 64, b)


@njit(**KERNEL)
def matmul(A, K, Z, R, accumulate):
    """``Z[r] (+)= A[r] @ K`` for rows ``r < R`` (``A`` may be wider than ``K`` has rows).

    Widths 32 and 64: `_vectiles.vector_tiles` for the rows that fill whole tiles (accumulators in
    vector registers through the whole sum), `_vectiles.vector_row` for the rest (batch 1).
    `python -m bench.perf.kernels`: 1.4–2.9× the loop tiles below, 2.7–5.5× numba's BLAS call, at
    16–256 rows (Zen 5, 2026-11-29). Other widths: loop tiles of 4 rows × 4 rows of ``K`` (each
    vector of ``K[i]`` loaded once serves four rows, each load/store of an accumulator vector carries
    four multiply-adds; 1.35–2× a row at a time, `_matmul_rows`).
    """
    n = K.shape[1]
    if n == 32 or n == 64:
        _product(A, K, Z, R, accumulate, None)
    else:
        _matmul_tiles(A, K, Z, R, accumulate, n)


@njit(**KERNEL)
def matmul_bias(A, K, b, Z, R):
    """``Z[r] = b + A[r] @ K`` for rows ``r < R``; at widths 32 and 64 the sums start from ``b`` in
    the vector registers (no pass that first fills ``Z`` with it)."""
    n = K.shape[1]
    if n == 32 or n == 64:
        _product(A, K, Z, R, False, b)
        return
    for r in range(R):
        for j in range(n):
            Z[r, j] = b[j]
    _matmul_tiles(A, K, Z, R, True, n)


@njit(inline="always", **KERNEL)
def _activate_layer(Z, A, D1, D2, S, act, rh, accumulate, order):
    """A layer's activation with the derivatives up to ``order`` (0: value, 1: σ', 2: σ'')."""
    if order == 2:
        activate(Z, A, D1, D2, S, act, rh, accumulate)
    elif order == 1:
        activate_first(Z, A, D1, S, act, rh, accumulate)
    else:
        activate_value(Z, A, S, act, rh, accumulate)


@njit(inline="always", **KERNEL)
def forward(net, t, act, rh, U, S, ws, order):
    """Hidden state ``A`` of rows ``s < S``; σ'(z_l), σ''(z_l) into ``D1[l], D2[l]`` as far as
    ``order`` asks (a literal at every call, so the choice compiles away): gradient sweeps read
    σ' only, and only the Hessian sweep reads σ''."""
    Z, A, D1, D2 = ws[0], ws[1], ws[2], ws[3]
    Wr, br = net[3][t], net[4][t]
    matmul_bias(U, net[0][t], net[1][t], Z, S)
    _activate_layer(Z, A, D1[0], D2[0], S, act, rh, False, order)
    for layer in range(Wr.shape[0]):
        matmul_bias(A, Wr[layer], br[layer], Z, S)
        _activate_layer(Z, A, D1[layer + 1], D2[layer + 1], S, act, rh, True, order)


@njit(inline="always", **KERNEL)
def outputs(net, t, S, ws, F):
    """``F[s] = bo + A[s] @ Wo`` after `forward`: ``(S, m)``."""
    matmul_bias(ws[1], net[6][t], net[7][t], F, S)


@njit(**KERNEL)
def value(net, t, act, rh, U, S, ws, val):
    """Output of a scalar trunk, ``val: (S,)`` (the forward pass without the activations' derivatives)."""
    forward(net, t, act, rh, U, S, ws, 0)
    _scalar_out(net, t, S, ws, val)


@njit(inline="always", **KERNEL)
def dot8(x, y, n, acc):
    """``acc + Σ_{j<n} x[j]·y[j]`` with eight partial sums, so the loop is a vector multiply-add and
    one horizontal sum rather than a chain of ``n`` dependent ones (1-d contiguous ``x``, ``y``)."""
    n8 = n - n % 8
    p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = cst(acc, 0.0)
    for j in range(0, n8, 8):
        p0 += x[j] * y[j]
        p1 += x[j + 1] * y[j + 1]
        p2 += x[j + 2] * y[j + 2]
        p3 += x[j + 3] * y[j + 3]
        p4 += x[j + 4] * y[j + 4]
        p5 += x[j + 5] * y[j + 5]
        p6 += x[j + 6] * y[j + 6]
        p7 += x[j + 7] * y[j + 7]
    acc = acc + (((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)))
    for j in range(n8, n):
        acc += x[j] * y[j]
    return acc


@njit(inline="always", **KERNEL)
def _scalar_out(net, t, S, ws, val):
    """``val[s] = bo + A[s] · wo`` (`dot8`)."""
    A = ws[1]
    wo = net[6][t]
    c = net[7][t][0]
    w = A.shape[1]
    wv = wo.reshape(w)  # (w, 1) → (w,): contiguous, once per sweep
    for s in range(S):
        val[s] = dot8(A[s], wv, w, c)


@njit(inline="always", **KERNEL)
def _scaled_product(c, X, Y, E, S):
    """``E = c·X ⊙ Y`` for rows ``s < S``, as one flat run (the rows are contiguous), so the loop
    vectorises whatever the width (`flat`)."""
    x, y, e = flat(X, S), flat(Y, S), flat(E, S)
    for k in range(S * X.shape[1]):
        e[k] = c * x[k] * y[k]


#: inputs up to this many take the input gradient as dot products with W0's rows (`dot8`):
#: as a product with ``d`` output columns the tiles' inner loop would run ``d`` lanes
DOT_MAX_INPUTS = 3


@njit(inline="always", **KERNEL)
def _input_grad(net, t, E, S, gu):
    """``gu[s] = E[s] @ W0ᵀ`` (``∂out/∂z_0 → ∂out/∂u``)."""
    W0 = net[0][t]
    d, w = W0.shape
    if d > DOT_MAX_INPUTS:
        matmul(E, net[2][t], gu, S, False)
        return
    for s in range(S):
        e = E[s]
        for c in range(d):
            gu[s, c] = dot8(e, W0[c], w, cst(E, 0.0))


@njit(inline="always", **KERNEL)
def _backward_to_first(net, t, rh, S, ws):
    """The transposed chain rule through the resnet: ``G = ∂out/∂a_0`` (rows ``s < S``)."""
    G, E, D1 = ws[4], ws[5], ws[2]
    wo = net[6][t]
    WrT = net[5][t]
    w = G.shape[1]
    for s in range(S):
        for j in range(w):
            G[s, j] = wo[j, 0]
    for layer in range(WrT.shape[0] - 1, -1, -1):
        _scaled_product(rh, G, D1[layer + 1], E, S)
        matmul(E, WrT[layer], G, S, True)


@njit(**KERNEL)
def grad(net, t, act, rh, U, S, ws, val, gu):
    """Scalar trunk: output ``val: (S,)`` and input gradient ``gu: (S, d)``."""
    forward(net, t, act, rh, U, S, ws, 1)
    _scalar_out(net, t, S, ws, val)
    _backward_to_first(net, t, rh, S, ws)
    G, E, D1 = ws[4], ws[5], ws[2]
    _scaled_product(cst(rh, 1.0), G, D1[0], E, S)
    _input_grad(net, t, E, S, gu)


@njit(inline="always", **KERNEL)
def _tangents(net, t, rh, S, ws):
    """After `forward`: ∂z_l/∂u into ``JZ[l]`` and ∂a_L/∂u into ``JA``, ``d`` rows per sample."""
    D1, JA, JZ = ws[2], ws[6], ws[7]
    W0, Wr = net[0][t], net[3][t]
    d, w = W0.shape
    for s in range(S):
        for c in range(d):
            r = s * d + c
            for j in range(w):
                JZ[0][r, j] = W0[c, j]
                JA[r, j] = D1[0][s, j] * W0[c, j]
    R = S * d
    for layer in range(Wr.shape[0]):
        jz = JZ[layer + 1]
        matmul(JA, Wr[layer], jz, R, False)
        dl = D1[layer + 1]
        for s in range(S):
            for c in range(d):
                r = s * d + c
                for j in range(w):
                    JA[r, j] += rh * dl[s, j] * jz[r, j]


@njit(inline="always", **KERNEL)
def _curvature(jz, m, s, d, HT, H):
    """``H += jzᵀ diag(m) jz`` for sample ``s``'s ``d`` tangent rows of ``jz``: for each row, its
    product with ``m`` (into ``HT``'s storage), then `dot8` with each row up to it, mirrored — a
    vector loop over the width per entry of the lower triangle, whatever ``d``."""
    w = HT.shape[0]
    y = HT.reshape(-1)
    zero = cst(m, 0.0)
    for c1 in range(d):
        r1 = jz[s * d + c1]
        for j in range(w):
            y[j] = r1[j] * m[j]
        h = H[c1]
        for c2 in range(c1 + 1):
            v = dot8(y, jz[s * d + c2], w, zero)
            h[c2] += v
            if c2 != c1:
                H[c2, c1] += v


@njit(**KERNEL)
def grad_hessian(net, t, act, rh, U, S, ws, val, gu, hess):
    """Scalar trunk: output, gradient ``(S, d)`` and Hessian ``(S, d, d)`` in one sweep."""
    forward(net, t, act, rh, U, S, ws, 2)
    _scalar_out(net, t, S, ws, val)
    _tangents(net, t, rh, S, ws)
    D1, D2, G, E, JZ, HT = ws[2], ws[3], ws[4], ws[5], ws[7], ws[8]
    wo = net[6][t]
    WrT = net[5][t]
    d, w = net[0][t].shape
    for s in range(S):
        for j in range(w):
            G[s, j] = wo[j, 0]
        for c1 in range(d):
            for c2 in range(d):
                hess[s, c1, c2] = cst(hess, 0.0)
    for layer in range(WrT.shape[0], -1, -1):
        mu = rh if layer > 0 else cst(rh, 1.0)  # ∂out/∂σ(z_l) = rh·G for resnet layers, G for the first
        for s in range(S):
            for j in range(w):
                E[s, j] = mu * G[s, j] * D2[layer][s, j]
            _curvature(JZ[layer], E[s], s, d, HT, hess[s])
        _scaled_product(mu, G, D1[layer], E, S)
        if layer > 0:
            matmul(E, WrT[layer - 1], G, S, True)
    _input_grad(net, t, E, S, gu)


@njit(**KERNEL)
def vector(net, t, act, rh, U, S, ws, F):
    """Vector trunk output ``F: (S, m)``."""
    forward(net, t, act, rh, U, S, ws, 0)
    outputs(net, t, S, ws, F)


@njit(**KERNEL)
def vector_jacobian(net, t, act, rh, U, S, ws, F, jac):
    """Vector trunk output ``F: (S, m)`` and ``jac[s, o, c] = ∂F_o/∂u_c``: ``(S, m, d)``."""
    forward(net, t, act, rh, U, S, ws, 1)
    outputs(net, t, S, ws, F)
    _tangents(net, t, rh, S, ws)
    JF = ws[9]
    d = net[0][t].shape[0]
    matmul(ws[6], net[6][t], JF, S * d, False)
    m = JF.shape[1]
    for s in range(S):
        for c in range(d):
            for o in range(m):
                jac[s, o, c] = JF[s * d + c, o]
