"""One `ScalarTrunk` (``singleLayer → resnetNN → singleLayer``) on a block of rows, compiled.

Rows are samples: ``U: (S, d)``. Weights come packed per trunk ``t`` (`hinn_core.fastpath.pack`):
``net = (W0, b0, W0T, Wr, br, WrT, Wo, bo)`` with hessQuik's row-vector convention
``z = u @ K + b``, resnet ``a ← a + rh·σ(a @ K + b)``. Products are written as axpy loops (output
index innermost, contiguous), which LLVM vectorises without reassociating sums; transposed
copies (``W0T``, ``WrT``) keep the backward sweep in the same form.

Derivatives mirror the torch paths in `hinn_core.networks.ScalarTrunk`: the input gradient by the
transposed chain rule; the Hessian as Σ_l J_lᵀ diag(μ_l ⊙ σ''(z_l)) J_l with the Jacobians
J_l = ∂z_l/∂u carried forward as ``d`` tangent rows per sample; the Jacobian of a vector trunk
by the same forward sweep.

Workspace ``ws = (Z, A, D1, D2, G, E, JA, JZ, HT, JF)``: Z, A, G, E ``(S, w)``; D1, D2 ``(L+1, S, w)``;
JA ``(S·d, w)``; JZ ``(L+1, S·d, w)``; HT ``(w, d)``; JF ``(S·d, m)``.
"""

from __future__ import annotations

from numba import njit

from hinn_core.fastpath._math import JIT, activate, cst


@njit(**JIT)
def matmul(A, K, Z, R, accumulate):
    """``Z[r] (+)= A[r] @ K`` for rows ``r < R``."""
    m, n = K.shape
    for r in range(R):
        z = Z[r]
        a = A[r]
        if not accumulate:
            for j in range(n):
                z[j] = cst(z, 0.0)
        for i in range(m):
            ai = a[i]
            k = K[i]
            for j in range(n):
                z[j] += ai * k[j]


@njit(**JIT)
def matmul_bias(A, K, b, Z, R):
    """``Z[r] = b + A[r] @ K`` for rows ``r < R``."""
    m, n = K.shape
    for r in range(R):
        z = Z[r]
        a = A[r]
        for j in range(n):
            z[j] = b[j]
        for i in range(m):
            ai = a[i]
            k = K[i]
            for j in range(n):
                z[j] += ai * k[j]


@njit(**JIT)
def forward(net, t, act, rh, U, S, ws, need_d1, need_d2):
    """Hidden state ``A`` of rows ``s < S``; σ'(z_l), σ''(z_l) into ``D1[l], D2[l]`` when asked."""
    Z, A, D1, D2 = ws[0], ws[1], ws[2], ws[3]
    Wr, br = net[3][t], net[4][t]
    matmul_bias(U, net[0][t], net[1][t], Z, S)
    activate(Z, A, D1[0], D2[0], S, act, rh, False, need_d1, need_d2)
    for layer in range(Wr.shape[0]):
        matmul_bias(A, Wr[layer], br[layer], Z, S)
        activate(Z, A, D1[layer + 1], D2[layer + 1], S, act, rh, True, need_d1, need_d2)


@njit(**JIT)
def outputs(net, t, S, ws, F):
    """``F[s] = bo + A[s] @ Wo`` after `forward`: ``(S, m)``."""
    matmul_bias(ws[1], net[6][t], net[7][t], F, S)


@njit(**JIT)
def value(net, t, act, rh, U, S, ws, val):
    """Output of a scalar trunk, ``val: (S,)``."""
    forward(net, t, act, rh, U, S, ws, False, False)
    _scalar_out(net, t, S, ws, val)


@njit(**JIT)
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


@njit(**JIT)
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
        matmul(E, WrT[layer], G, S, True)


@njit(**JIT)
def grad(net, t, act, rh, U, S, ws, val, gu):
    """Scalar trunk: output ``val: (S,)`` and input gradient ``gu: (S, d)``."""
    forward(net, t, act, rh, U, S, ws, True, False)
    _scalar_out(net, t, S, ws, val)
    _backward_to_first(net, t, rh, S, ws)
    G, E, D1 = ws[4], ws[5], ws[2]
    for s in range(S):
        for j in range(G.shape[1]):
            E[s, j] = G[s, j] * D1[0][s, j]
    matmul(E, net[2][t], gu, S, False)


@njit(**JIT)
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


@njit(**JIT)
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


@njit(**JIT)
def grad_hessian(net, t, act, rh, U, S, ws, val, gu, hess):
    """Scalar trunk: output, gradient ``(S, d)`` and Hessian ``(S, d, d)`` in one sweep."""
    forward(net, t, act, rh, U, S, ws, True, True)
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
            matmul(E, WrT[layer - 1], G, S, True)
    matmul(E, net[2][t], gu, S, False)


@njit(**JIT)
def vector(net, t, act, rh, U, S, ws, F):
    """Vector trunk output ``F: (S, m)``."""
    forward(net, t, act, rh, U, S, ws, False, False)
    outputs(net, t, S, ws, F)


@njit(**JIT)
def vector_jacobian(net, t, act, rh, U, S, ws, F, jac):
    """Vector trunk output ``F: (S, m)`` and ``jac[s, o, c] = ∂F_o/∂u_c``: ``(S, m, d)``."""
    forward(net, t, act, rh, U, S, ws, True, False)
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
