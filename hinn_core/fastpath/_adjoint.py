"""Reverse mode through a whole training rollout, compiled: the fast training path's kernels.

Training differentiates the rolled-out states with respect to the weights (and the start states).
The torch path records every op of every step and autograd replays them; here one compiled call
per block of samples re-runs the block's rollout with `_rollout.step` (the prediction step, so the
states are bitwise those of the forward pass), keeps the stage inputs, and sweeps back through
the steps with each integrator's adjoint. Every field evaluation on the way back is a
vector–Jacobian product of the rates: for H nets that is the adjoint of the gradient sweep —
the Hessian–vector product for the states and ∂/∂θ (c · ∇H) for the weights, the same algebra as
`hinn_core.networks._ValueAndGrad.backward`; for the vector field plain backpropagation.

Trunk workspace ``tw = (Z, AH, D1, D2, GL, DS, DG, DE, DA, DZ, U, C, DU, W)``: Z, DG, DE, DA, DZ
``(S, w)``; AH, D1, D2, GL, DS ``(L+1, S, w)`` (hidden states, σ', σ'', backward-sweep g_l and the
cotangents of σ'(z_l) per layer); W (a weight matrix's size) scratch; U, C, DU ``(S, d)``.
Weight gradients ``gw = (gW0, gb0, gWr, gbr, gWo, gbo)`` have the packed weights' shapes
(`hinn_core.fastpath.pack`) and are accumulated into.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hinn_core.fastpath import _field as fd
from hinn_core.fastpath import _rollout as rk
from hinn_core.fastpath._math import JIT, KERNEL, activate, cst
from hinn_core.fastpath._trunk import matmul, matmul_bias

#: weight gradients through one BLAS call (numba's ``np.dot``) for blocks of at least this many rows
BLAS_MIN_ROWS = 8


@njit(**KERNEL)
def _outer_loops(X, Y, G, S, alpha):
    m, n = G.shape
    for s in range(S):
        for i in range(m):
            a = alpha * X[s, i]
            g = G[i]
            for j in range(n):
                g[j] += a * Y[s, j]


@njit(**JIT)  # np.dot needs numba's reference counting
def _outer_blas(X, Y, G, S, alpha, W):
    m, n = G.shape
    out = W[: m * n].reshape((m, n))
    np.dot(X[:S].T, Y[:S], out)
    for i in range(m):
        for j in range(n):
            G[i, j] += alpha * out[i, j]


@njit(**KERNEL)
def _outer_acc(X, Y, G, S, alpha, W):
    """``G += alpha · X[:S]ᵀ Y[:S]`` (weight gradients: a sum over the block's samples); one BLAS
    call into the scratch ``W`` for blocks of `BLAS_MIN_ROWS` rows or more (a load and store of G
    per multiply-add otherwise)."""
    if S >= BLAS_MIN_ROWS:
        _outer_blas(X, Y, G, S, alpha, W)
    else:
        _outer_loops(X, Y, G, S, alpha)


@njit(**KERNEL)
def _col_sum_acc(X, g, S):
    for s in range(S):
        for j in range(g.shape[0]):
            g[j] += X[s, j]


@njit(**KERNEL)
def sweep_saved(net, t, act, rh, U, S, tw, scalar):
    """Forward pass keeping every layer's hidden state, σ' and σ''; for a scalar trunk also the
    backward sweep g_l = ∂out/∂a_l (g_L = wo, g_{l−1} = g_l + rh·(g_l ⊙ σ'(z_l)) K_lᵀ)."""
    Z, AH, D1, D2, GL, E = tw[0], tw[1], tw[2], tw[3], tw[4], tw[7]
    Wr, br, WrT = net[3][t], net[4][t], net[5][t]
    L = Wr.shape[0]
    w = Z.shape[1]
    matmul_bias(U, net[0][t], net[1][t], Z, S)
    activate(Z, AH[0], D1[0], D2[0], S, act, rh, False)
    for layer in range(L):
        prev, cur = AH[layer], AH[layer + 1]
        for s in range(S):
            for j in range(w):
                cur[s, j] = prev[s, j]
        matmul_bias(prev, Wr[layer], br[layer], Z, S)
        activate(Z, cur, D1[layer + 1], D2[layer + 1], S, act, rh, True)
    if not scalar:
        return
    wo = net[6][t]
    for s in range(S):
        for j in range(w):
            GL[L][s, j] = wo[j, 0]
    for layer in range(L, 0, -1):
        g, gn, d = GL[layer], GL[layer - 1], D1[layer]
        for s in range(S):
            for j in range(w):
                E[s, j] = rh * g[s, j] * d[s, j]
                gn[s, j] = g[s, j]
        matmul(E, WrT[layer - 1], gn, S, True)


@njit(**KERNEL)
def _forward_adjoint(net, t, rh, U, S, tw, gw):
    """From ``DA`` (= ∂/∂a_L) and ``DS[l]`` (= ∂/∂σ'(z_l)): back through the forward pass to ``DU``
    (= ∂/∂u), accumulating the weight gradients of K_l, b_l, K_0, b_0."""
    AH, D1, D2, DS, DA, DZ, DU = tw[1], tw[2], tw[3], tw[5], tw[8], tw[9], tw[12]
    WrT = net[5][t]
    L = WrT.shape[0]
    w = DA.shape[1]
    for layer in range(L, 0, -1):
        ds, d1, d2 = DS[layer], D1[layer], D2[layer]
        for s in range(S):
            for j in range(w):
                DZ[s, j] = ds[s, j] * d2[s, j] + rh * DA[s, j] * d1[s, j]
        _outer_acc(AH[layer - 1], DZ, gw[2][t][layer - 1], S, cst(rh, 1.0), tw[13])
        _col_sum_acc(DZ, gw[3][t][layer - 1], S)
        matmul(DZ, WrT[layer - 1], DA, S, True)
    ds, d1, d2 = DS[0], D1[0], D2[0]
    for s in range(S):
        for j in range(w):
            DZ[s, j] = ds[s, j] * d2[s, j] + DA[s, j] * d1[s, j]
    _outer_acc(U, DZ, gw[0][t], S, cst(rh, 1.0), tw[13])
    _col_sum_acc(DZ, gw[1][t], S)
    matmul(DZ, net[2][t], DU, S, False)


@njit(**KERNEL)
def scalar_vjp(net, t, act, rh, U, C, S, tw, gw):
    """Scalar trunk, cotangent ``C (S, d)`` on its input gradient ∇_u out: ``DU = ∇²_u out · C``
    per sample, and ∂/∂θ Σ_s C_s · ∇_u out(u_s) added to ``gw[·][t]``."""
    sweep_saved(net, t, act, rh, U, S, tw, True)
    D1, GL, DS, DG, DE, DA = tw[2], tw[4], tw[5], tw[6], tw[7], tw[8]
    Wr = net[3][t]
    L = Wr.shape[0]
    w = DG.shape[1]
    zero = cst(rh, 0.0)
    # adjoint of the backward sweep: ∇_u = e_0 K0ᵀ with e_l = g_l ⊙ σ'(z_l)
    matmul(C, net[0][t], DE, S, False)  # ∂/∂e_0
    g0, d0 = GL[0], D1[0]
    for s in range(S):
        for j in range(w):
            DG[s, j] = DE[s, j] * d0[s, j]
            DS[0][s, j] = DE[s, j] * g0[s, j]
            DA[s, j] = g0[s, j] * d0[s, j]  # e_0, as scratch
    _outer_acc(C, DA, gw[0][t], S, cst(rh, 1.0), tw[13])
    for layer in range(1, L + 1):
        matmul(DG, Wr[layer - 1], DE, S, False)  # ∂/∂e_l = rh·DG K_l (rh below)
        g, d = GL[layer], D1[layer]
        for s in range(S):
            for j in range(w):
                DA[s, j] = g[s, j] * d[s, j]  # e_l
        _outer_acc(DG, DA, gw[2][t][layer - 1], S, rh, tw[13])
        ds = DS[layer]
        for s in range(S):
            for j in range(w):
                de = rh * DE[s, j]
                DG[s, j] += de * d[s, j]
                ds[s, j] = de * g[s, j]
    gwo = gw[4][t]
    for s in range(S):
        for j in range(w):
            gwo[j, 0] += DG[s, j]
    for s in range(S):
        for j in range(w):
            DA[s, j] = zero  # the output enters the loss only through ∇H
    _forward_adjoint(net, t, rh, U, S, tw, gw)


@njit(**KERNEL)
def vector_vjp(net, t, act, rh, U, C, S, tw, gw):
    """Vector trunk, cotangent ``C (S, m)`` on its output: ``DU = Cᵀ ∂out/∂u`` per sample and the
    weight gradients (plain backpropagation)."""
    sweep_saved(net, t, act, rh, U, S, tw, False)
    AH, DS, DA = tw[1], tw[5], tw[8]
    Wo = net[6][t]
    L = net[3][t].shape[0]
    w, m = Wo.shape
    zero = cst(rh, 0.0)
    _outer_acc(AH[L], C, gw[4][t], S, cst(rh, 1.0), tw[13])
    _col_sum_acc(C, gw[5][t], S)
    for s in range(S):
        for j in range(w):
            acc = zero
            for o in range(m):
                acc += C[s, o] * Wo[j, o]
            DA[s, j] = acc
    for layer in range(L + 1):
        ds = DS[layer]
        for s in range(S):
            for j in range(w):
                ds[s, j] = zero
    _forward_adjoint(net, t, rh, U, S, tw, gw)


@njit(**KERNEL)
def half_vjp(net, nrm, t, act, rh, n, X, LH, S, tw, gw, DH):
    """Separable net, trunk ``t`` (0: V at q, giving dp/dt = −V'(q); 1: T at p, giving dq/dt = T'(p)):
    cotangent ``LH (S, n)`` on that rate; the cotangent of its half of the state ``X`` is added to
    ``DH (S, n)``."""
    U, C, DU = tw[10], tw[11], tw[12]
    off = t * n
    fd.normalise(X, S, off, n, nrm, U)
    gsc, scale = nrm[3], nrm[1]
    sign = cst(rh, -1.0) if t == 0 else cst(rh, 1.0)
    for s in range(S):
        for c in range(n):
            C[s, c] = sign * LH[s, c] * gsc[off + c]
    scalar_vjp(net, t, act, rh, U, C, S, tw, gw)
    for s in range(S):
        for c in range(n):
            DH[s, c] += DU[s, c] / scale[off + c]


@njit(**KERNEL)
def field_vjp(net, nrm, arch, act, rh, n, X, LQ, LP, S, tw, gw, DQ, DP):
    """Cotangents ``LQ, LP (S, n)`` on the rates (dq/dt, dp/dt) at ``X (S, 2n)``: the state's
    cotangent is added to ``DQ, DP``, the weights' to ``gw``."""
    if arch == fd.SEPARABLE:
        half_vjp(net, nrm, 0, act, rh, n, X, LP, S, tw, gw, DQ)
        half_vjp(net, nrm, 1, act, rh, n, X, LQ, S, tw, gw, DP)
        return
    U, C, DU = tw[10], tw[11], tw[12]
    fd.normalise(X, S, 0, 2 * n, nrm, U)
    if arch == fd.GENERAL:
        gsc = nrm[3]  # rates = (∂H/∂p, −∂H/∂q), ∇H = gsc ⊙ ∇trunk
        for s in range(S):
            for c in range(n):
                C[s, c] = -LP[s, c] * gsc[c]
                C[s, n + c] = LQ[s, c] * gsc[n + c]
        scalar_vjp(net, 0, act, rh, U, C, S, tw, gw)
    else:
        osc = nrm[2]
        for s in range(S):
            for c in range(n):
                C[s, c] = LQ[s, c] * osc[c]
                C[s, n + c] = LP[s, c] * osc[n + c]
        vector_vjp(net, 0, act, rh, U, C, S, tw, gw)
    scale = nrm[1]
    for s in range(S):
        for c in range(n):
            DQ[s, c] += DU[s, c] / scale[c]
            DP[s, c] += DU[s, n + c] / scale[n + c]


@njit(inline="always", **JIT)
def _trunk_workspace(net, S, dtype_like):
    W0, Wr = net[0], net[3]
    din, w = W0.shape[1], W0.shape[2]
    L = Wr.shape[1]
    dt = dtype_like.dtype
    big = max(din, w, net[6].shape[2])
    return (np.empty((S, w), dt), np.empty((L + 1, S, w), dt), np.empty((L + 1, S, w), dt),
            np.empty((L + 1, S, w), dt), np.empty((L + 1, S, w), dt), np.empty((L + 1, S, w), dt),
            np.empty((S, w), dt), np.empty((S, w), dt), np.empty((S, w), dt), np.empty((S, w), dt),
            np.empty((S, din), dt), np.empty((S, din), dt), np.empty((S, din), dt),
            np.empty(big * big, dt))


@njit(inline="always", **KERNEL)
def _scaled(src, hs, f, S, dst):
    """``dst[s] = f·hs[s]·src[s]``."""
    for s in range(S):
        a = f * hs[s]
        for c in range(src.shape[1]):
            dst[s, c] = a * src[s, c]


@njit(inline="always", **KERNEL)
def _zero(A, S):
    for s in range(S):
        for c in range(A.shape[1]):
            A[s, c] = cst(A, 0.0)


@njit(nogil=True, **JIT)
def rollout_vjp(net, nrm, cfg, par, q0, p0, h, gq, gp, dq0, dp0, block, blk0, blk1, gw, err, target, sse):
    """Blocks ``blk0 … blk1−1``: re-run the rollout, then sweep back through the steps.

    ``gq, gp (B, T+1, n)`` are the cotangents of the rolled-out states — or, with ``cfg[7]``
    (fused loss), outputs: those of Σ_{k≥1} |x_k − target_{k−1}|² for ``target (B, T, 2n)``, whose
    value per block goes to ``sse[blk]``. The start states' cotangents go to ``dq0, dp0 (B, n)``
    and the weights' are added to ``gw``. A step that cannot be re-run or whose implicit adjoint is
    singular sets ``err[blk] = (code, step)``.
    """
    arch, act, integ, n, max_iter, fused = cfg[0], cfg[1], cfg[2], cfg[3], cfg[5], cfg[7] != 0
    rh, offset, tol = par[0], par[1], par[2]
    mdl = (net, nrm, arch, act, rh, n, tol, max_iter, offset, 0)  # 0: full Newton, as torch
    B, T = q0.shape[0], h.shape[1]
    shared = h.shape[0] == 1
    m = 2 * n
    dt = q0.dtype
    ws, fw, sw = rk._workspaces(net, n, block, q0)
    tw = _trunk_workspace(net, block, q0)
    Xs = np.empty((T + 1, block, m), dt)
    Ys = np.empty((T, 3, block, m), dt)
    # implicit midpoint: the last Newton iteration's Jacobian per step — the torch path's differentiable
    # Newton step uses that one too, and it spares a Hessian sweep per step
    Js = np.empty((T if integ == rk.IMPLICIT_MIDPOINT else 0, block, m, m), dt)
    Hs = np.empty((T, block), dt)  # per-step sizes
    Hb = np.empty(block, dt)
    LQ, LP = np.empty((block, n), dt), np.empty((block, n), dt)
    TQ, TP = np.empty((block, n), dt), np.empty((block, n), dt)
    DQ, DP = np.empty((block, n), dt), np.empty((block, n), dt)
    NQ, NP = np.empty((block, n), dt), np.empty((block, n), dt)
    Mt, r = sw[6], sw[7]
    hf = cst(q0, 0.5)
    one = cst(q0, 1.0)
    for blk in range(blk0, blk1):
        b0 = blk * block
        S = min(block, B - b0)
        X0 = Xs[0]
        for s in range(S):
            for c in range(n):
                X0[s, c] = q0[b0 + s, c]
                X0[s, n + c] = p0[b0 + s, c]
        # forward again, keeping each step's stage inputs
        failed = False
        for k in range(T):
            hs = Hs[k]
            for s in range(S):
                hs[s] = h[0, k] if shared else h[b0 + s, k]
            X, Xn = Xs[k], Xs[k + 1]
            code, _ = rk.step(integ, mdl, X, Xn, hs, S, ws, fw, sw, Hb, k > 0 and integ == rk.LEAPFROG)
            if code != rk.OK:
                err[blk, 0] = code
                err[blk, 1] = k + 1
                failed = True
                break
            Y = Ys[k]
            if integ == rk.LEAPFROG:
                for s in range(S):
                    for c in range(m):
                        Y[0, s, c] = sw[4][s, c]  # p½ in the second half
            elif integ == rk.IMPLICIT_MIDPOINT:
                Jk = Js[k]
                for s in range(S):
                    for c in range(m):
                        Y[0, s, c] = sw[10][s, c]  # the midpoint
                        for j in range(m):
                            Jk[s, c, j] = sw[5][s, c, j]
            elif integ == rk.RK4:
                R, K2, K3 = sw[0], sw[1], sw[2]
                for s in range(S):
                    for c in range(m):  # the stage inputs, as `_rollout.step` forms them
                        Y[0, s, c] = X[s, c] + hf * hs[s] * R[s, c]
                        Y[1, s, c] = X[s, c] + hf * hs[s] * K2[s, c]
                        Y[2, s, c] = X[s, c] + hs[s] * K3[s, c]
            if fused:  # the loss's residuals give the cotangents: d/dx Σ r² = 2r
                acc = 0.0
                for s in range(S):
                    for c in range(n):
                        rq = Xn[s, c] - target[b0 + s, k, c]
                        rp = Xn[s, n + c] - target[b0 + s, k, n + c]
                        acc += float(rq) * float(rq) + float(rp) * float(rp)
                        gq[b0 + s, k + 1, c] = cst(one, 2.0) * rq
                        gp[b0 + s, k + 1, c] = cst(one, 2.0) * rp
                sse[blk] += acc
        if failed:
            continue
        if fused:
            for s in range(S):
                for c in range(n):
                    gq[b0 + s, 0, c] = cst(one, 0.0)
                    gp[b0 + s, 0, c] = cst(one, 0.0)
        for s in range(S):
            for c in range(n):
                LQ[s, c] = gq[b0 + s, T, c]
                LP[s, c] = gp[b0 + s, T, c]
        if integ == rk.LEAPFROG:  # the last step's closing kick; the others merge with the next opening one
            _scaled(LP, Hs[T - 1], hf, S, TP)
            half_vjp(net, nrm, 0, act, rh, n, Xs[T], TP, S, tw, gw, LQ)
        for k in range(T - 1, -1, -1):
            hs, X, Xn, Y = Hs[k], Xs[k], Xs[k + 1], Ys[k]
            if integ == rk.LEAPFROG:  # p½ = p + h/2·F(q); q1 = q + h·G(p½); p1 = p½ + h/2·F(q1)
                _scaled(LQ, hs, one, S, TQ)
                half_vjp(net, nrm, 1, act, rh, n, Y[0], TQ, S, tw, gw, LP)
                # the opening kick of step k and the closing kick of step k−1 both evaluate F(q_k):
                # one adjoint sweep with the sum of their cotangents (λp of x_k includes gp[k])
                for s in range(S):
                    a = hf * hs[s]
                    b = hf * Hs[k - 1][s] if k > 0 else cst(one, 0.0)
                    for c in range(n):
                        TP[s, c] = a * LP[s, c] + b * (LP[s, c] + gp[b0 + s, k, c])
                half_vjp(net, nrm, 0, act, rh, n, X, TP, S, tw, gw, LQ)
            elif integ == rk.SYMPLECTIC_EULER:  # p1 = p + h·F(q); q1 = q + h·G(p1)
                _scaled(LQ, hs, one, S, TQ)
                half_vjp(net, nrm, 1, act, rh, n, Xn, TQ, S, tw, gw, LP)
                _scaled(LP, hs, one, S, TP)
                half_vjp(net, nrm, 0, act, rh, n, X, TP, S, tw, gw, LQ)
            elif integ == rk.EULER:
                _scaled(LQ, hs, one, S, TQ)
                _scaled(LP, hs, one, S, TP)
                field_vjp(net, nrm, arch, act, rh, n, X, TQ, TP, S, tw, gw, LQ, LP)
            elif integ == rk.RK4:  # x1 = x + h/6·(k1 + 2k2 + 2k3 + k4), k_i at the stage inputs
                sixth, third = one / cst(one, 6.0), one / cst(one, 3.0)
                for s in range(S):
                    for c in range(n):
                        NQ[s, c] = LQ[s, c]
                        NP[s, c] = LP[s, c]
                _scaled(LQ, hs, sixth, S, TQ)  # ∂/∂k4
                _scaled(LP, hs, sixth, S, TP)
                for stage in range(3, -1, -1):
                    _zero(DQ, S)
                    _zero(DP, S)
                    Xst = X if stage == 0 else Y[stage - 1]
                    field_vjp(net, nrm, arch, act, rh, n, Xst, TQ, TP, S, tw, gw, DQ, DP)
                    if stage == 0:
                        break
                    f = one if stage == 3 else hf  # k_{i+1} takes x + f·h·k_i
                    w_next = sixth if stage == 1 else third  # weight of k_i in the update
                    for s in range(S):
                        a, b = hs[s] * w_next, f * hs[s]
                        for c in range(n):
                            NQ[s, c] += DQ[s, c]
                            NP[s, c] += DP[s, c]
                            TQ[s, c] = a * LQ[s, c] + b * DQ[s, c]
                            TP[s, c] = a * LP[s, c] + b * DP[s, c]
                for s in range(S):
                    for c in range(n):
                        LQ[s, c] = NQ[s, c] + DQ[s, c]
                        LP[s, c] = NP[s, c] + DP[s, c]
            else:  # implicit midpoint: z − x − h/2·f(z) = 0, x1 = 2z − x (J: ∂f at the last Newton iterate)
                Z = Y[0]
                J = Js[k]
                bad = False
                for s in range(S):
                    a = hf * hs[s]
                    for i in range(m):
                        for j in range(m):  # Mt = (I − h/2·J)ᵀ
                            Mt[i, j] = (one if i == j else cst(one, 0.0)) - a * J[s, j, i]
                    for c in range(n):
                        r[c] = cst(one, 2.0) * LQ[s, c]
                        r[n + c] = cst(one, 2.0) * LP[s, c]
                    if not rk.solve_inplace(Mt, r, m):
                        bad = True
                        break
                    for c in range(n):  # ∂/∂x = −λ + μ; the weights see (h/2)·μ on f(z)
                        LQ[s, c] = r[c] - LQ[s, c]
                        LP[s, c] = r[n + c] - LP[s, c]
                        TQ[s, c] = a * r[c]
                        TP[s, c] = a * r[n + c]
                if bad:
                    err[blk, 0] = rk.SINGULAR
                    err[blk, 1] = k + 1
                    failed = True
                    break
                _zero(DQ, S)
                _zero(DP, S)
                field_vjp(net, nrm, arch, act, rh, n, Z, TQ, TP, S, tw, gw, DQ, DP)
            for s in range(S):
                for c in range(n):
                    LQ[s, c] += gq[b0 + s, k, c]
                    LP[s, c] += gp[b0 + s, k, c]
        if failed:
            continue
        for s in range(S):
            for c in range(n):
                dq0[b0 + s, c] = LQ[s, c]
                dp0[b0 + s, c] = LP[s, c]
