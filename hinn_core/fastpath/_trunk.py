"""One `ScalarTrunk` (``singleLayer → resnetNN → singleLayer``) on a block of rows, compiled.

Rows are samples: ``U: (S, d)``. Weights come packed per trunk ``t`` (`hinn_core.fastpath.pack`):
``net = (W0, b0, W0T, Wr, br, WrT, Wo, bo)`` with hessQuik's row-vector convention
``z = u @ K + b``, resnet ``a ← a + rh·σ(a @ K + b)``. Products are axpy loops (output index
innermost, contiguous), which LLVM vectorises without being allowed to reassociate sums;
transposed copies (``W0T``, ``WrT``) keep the backward sweep in the same form.

Derivatives mirror the torch paths in `hinn_core.networks.ScalarTrunk`: the input gradient by the
transposed chain rule; the Hessian as Σ_l J_lᵀ diag(μ_l ⊙ σ''(z_l)) J_l with the Jacobians
J_l = ∂z_l/∂u carried forward as ``d`` tangent rows per sample; the Jacobian of a vector trunk
by the same forward sweep.

Workspace ``ws = (Z, A, D1, D2, G, E, JA, JZ, HT, JF, T)``: Z, A, G, E ``(S, w)``; D1, D2
``(L+1, S, w)``; JA ``(S·d, w)``; JZ ``(L+1, S·d, w)``; HT ``(w, d)``; JF ``(S·d, m)``; T ``(S·w,)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hinn_core.fastpath._math import JIT, KERNEL, activate, activate_value, cst


@njit(**KERNEL)
def matmul(A, K, Z, R, accumulate):
    """``Z[r] (+)= A[r] @ K`` for rows ``r < R``.

    Eight rows of ``K`` per pass over ``Z[r]``: one load/store of the accumulator per eight
    multiply-adds instead of per one (the sum is grouped in pairs — round-off only).
    """
    m, n = K.shape
    m8 = m - m % 8
    for r in range(R):
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


#: BLAS (numba's ``np.dot``: scipy's BLAS) for blocks of at least this many rows; each call keeps
#: rows·k·n at most `BLAS_MAX_WORK`, below OpenBLAS's threshold for starting its own threads.
BLAS_MIN_ROWS = 8
BLAS_MAX_WORK = 1 << 17


@njit(**JIT)  # np.dot needs numba's reference counting
def _gemm(A, K, Z, R, accumulate, T):
    m, n = K.shape
    chunk = max(BLAS_MIN_ROWS, BLAS_MAX_WORK // (m * n))
    for r0 in range(0, R, chunk):
        r1 = min(R, r0 + chunk)
        if accumulate:
            out = T[: (r1 - r0) * n].reshape((r1 - r0, n))
            np.dot(A[r0:r1], K, out)
            for r in range(r0, r1):
                for j in range(n):
                    Z[r, j] += out[r - r0, j]
        else:
            np.dot(A[r0:r1], K, Z[r0:r1])


@njit(**KERNEL)
def matmul_wide(A, K, Z, R, accumulate, T):
    """`matmul` for full-width operands (``A: (·, k)``, ``Z: (·, n)`` exactly): through BLAS for
    blocks of rows (3–4× the loops at 16 rows), loops below; ``T`` is scratch of ≥ R·n."""
    if R >= BLAS_MIN_ROWS:
        _gemm(A, K, Z, R, accumulate, T)
    else:
        matmul(A, K, Z, R, accumulate)


@njit(**KERNEL)
def matmul_bias(A, K, b, Z, R):
    """``Z[r] = b + A[r] @ K`` for rows ``r < R``."""
    n = K.shape[1]
    for r in range(R):
        for j in range(n):
            Z[r, j] = b[j]
    matmul(A, K, Z, R, True)


@njit(inline="always", **KERNEL)
def forward(net, t, act, rh, U, S, ws):
    """Hidden state ``A`` of rows ``s < S``; σ'(z_l), σ''(z_l) into ``D1[l], D2[l]``."""
    Z, A, D1, D2 = ws[0], ws[1], ws[2], ws[3]
    Wr, br = net[3][t], net[4][t]
    matmul_bias(U, net[0][t], net[1][t], Z, S)
    activate(Z, A, D1[0], D2[0], S, act, rh, False)
    for layer in range(Wr.shape[0]):
        b = br[layer]
        for s in range(S):
            for j in range(b.shape[0]):
                Z[s, j] = b[j]
        matmul_wide(A, Wr[layer], Z, S, True, ws[10])
        activate(Z, A, D1[layer + 1], D2[layer + 1], S, act, rh, True)


@njit(inline="always", **KERNEL)
def outputs(net, t, S, ws, F):
    """``F[s] = bo + A[s] @ Wo`` after `forward`: ``(S, m)``."""
    matmul_bias(ws[1], net[6][t], net[7][t], F, S)


@njit(**KERNEL)
def value(net, t, act, rh, U, S, ws, val):
    """Output of a scalar trunk, ``val: (S,)`` (the forward pass without the activations' derivatives)."""
    Z, A = ws[0], ws[1]
    Wr, br = net[3][t], net[4][t]
    matmul_bias(U, net[0][t], net[1][t], Z, S)
    activate_value(Z, A, S, act, rh, False)
    for layer in range(Wr.shape[0]):
        b = br[layer]
        for s in range(S):
            for j in range(b.shape[0]):
                Z[s, j] = b[j]
        matmul_wide(A, Wr[layer], Z, S, True, ws[10])
        activate_value(Z, A, S, act, rh, True)
    _scalar_out(net, t, S, ws, val)


@njit(inline="always", **KERNEL)
def _scalar_out(net, t, S, ws, val):
    A = ws[1]
    wo = net[6][t]
    c = net[7][t][0]
    for s in range(S):
        acc = c
        a = A[s]
        for j in range(a.shape[0]):
            acc += a[j] * wo[j, 0]
        val[s] = acc


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
        d = D1[layer + 1]
        for s in range(S):
            for j in range(w):
                E[s, j] = rh * G[s, j] * d[s, j]
        matmul_wide(E, WrT[layer], G, S, True, ws[10])


@njit(**KERNEL)
def grad(net, t, act, rh, U, S, ws, val, gu):
    """Scalar trunk: output ``val: (S,)`` and input gradient ``gu: (S, d)``."""
    forward(net, t, act, rh, U, S, ws)
    _scalar_out(net, t, S, ws, val)
    _backward_to_first(net, t, rh, S, ws)
    G, E, D1 = ws[4], ws[5], ws[2]
    for s in range(S):
        for j in range(G.shape[1]):
            E[s, j] = G[s, j] * D1[0][s, j]
    matmul(E, net[2][t], gu, S, False)


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
        matmul_wide(JA, Wr[layer], jz, R, False, ws[10])
        dl = D1[layer + 1]
        for s in range(S):
            for c in range(d):
                r = s * d + c
                for j in range(w):
                    JA[r, j] += rh * dl[s, j] * jz[r, j]


@njit(inline="always", **KERNEL)
def _curvature(jz, m, s, d, HT, H):
    """``H += jzᵀ diag(m) jz`` for sample ``s``'s ``d`` tangent rows of ``jz``."""
    w = HT.shape[0]
    for c in range(d):
        row = jz[s * d + c]
        for j in range(w):
            HT[j, c] = row[j]
    for j in range(w):
        mj = m[j]
        ht = HT[j]
        for c1 in range(d):
            a = ht[c1] * mj
            h = H[c1]
            for c2 in range(d):
                h[c2] += a * ht[c2]


@njit(**KERNEL)
def grad_hessian(net, t, act, rh, U, S, ws, val, gu, hess):
    """Scalar trunk: output, gradient ``(S, d)`` and Hessian ``(S, d, d)`` in one sweep."""
    forward(net, t, act, rh, U, S, ws)
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
        for s in range(S):
            for j in range(w):
                E[s, j] = mu * G[s, j] * D1[layer][s, j]
        if layer > 0:
            matmul_wide(E, WrT[layer - 1], G, S, True, ws[10])
    matmul(E, net[2][t], gu, S, False)


@njit(**KERNEL)
def vector(net, t, act, rh, U, S, ws, F):
    """Vector trunk output ``F: (S, m)``."""
    forward(net, t, act, rh, U, S, ws)
    outputs(net, t, S, ws, F)


@njit(**KERNEL)
def vector_jacobian(net, t, act, rh, U, S, ws, F, jac):
    """Vector trunk output ``F: (S, m)`` and ``jac[s, o, c] = ∂F_o/∂u_c``: ``(S, m, d)``."""
    forward(net, t, act, rh, U, S, ws)
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
