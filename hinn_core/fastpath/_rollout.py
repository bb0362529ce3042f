"""Whole rollouts in one compiled call: every integrator of `hinn_core.integrators`, block by block.

Samples are processed in blocks of ``S`` rows that stay in cache for all T steps; blocks are
independent, so running ranges of blocks on several threads (the kernel releases the GIL) gives
the same numbers as one thread. Each step mirrors the torch `Integrator.step` formula for formula;
implicit stages run Newton to the same tolerance (``|Δz| ≤ tol·(1 + |z|)``) and iteration cap, both
passed in from `hinn_core.integrators`, tested per sample (the torch path tests the batch).
Training also uses the torch path's initial guess and full Newton (its adjoint needs the last
Jacobian); prediction solves by simplified Newton and starts implicit midpoint from the last two
steps' slopes (`_midpoint_from_history`): the same roots to the tolerance, fewer sweeps.

Errors are returned, not raised: ``err[block] = (code, step)`` and ``errv[block]`` (the last
Newton correction); `hinn_core.fastpath` turns them into the torch path's `IntegrationError`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hinn_core.fastpath import _field as fd
from hinn_core.fastpath import _trunk as tk
from hinn_core.fastpath._math import JIT, KERNEL, cst

EULER, SYMPLECTIC_EULER, LEAPFROG, IMPLICIT_MIDPOINT, RK4 = 0, 1, 2, 3, 4
OK, NONFINITE_STATE, NONFINITE_NEWTON, SINGULAR, NO_CONVERGENCE = 0, 1, 2, 3, 4
#: Newton unknowns: the midpoint (2n), the momentum stage P or the position stage Q (n each)
MIDPOINT, P_STAGE, Q_STAGE = 0, 1, 2
#: simplified Newton (prediction): re-evaluate the Jacobian when an iteration shrinks the correction
#: by less than this factor (1e-3: with a fresher Jacobian the next iterations cost less than the
#: re-evaluation, which is 2–4 gradient sweeps; measured at d2w32/d8w64, batch 1 and 4096, against
#: 2e-4 … 0.05); at most CHORD_FACTOR × the Newton cap iterations in all
CHORD_RATE, CHORD_FACTOR = 1e-3, 4


@njit(**KERNEL)
def solve_inplace(M, r, d):
    """``r ← M⁻¹ r`` for the leading ``d × d`` block (M is overwritten): LU with partial pivoting
    as LAPACK's getrf; False when a pivot is exactly zero (singular)."""
    for k in range(d):
        piv = k
        big = abs(M[k, k])
        for i in range(k + 1, d):
            v = abs(M[i, k])
            if v > big:
                big = v
                piv = i
        if M[piv, k] == cst(M, 0.0):
            return False
        if piv != k:
            for j in range(d):
                tmp = M[k, j]
                M[k, j] = M[piv, j]
                M[piv, j] = tmp
            tmp = r[k]
            r[k] = r[piv]
            r[piv] = tmp
        inv = M[k, k]
        for i in range(k + 1, d):
            f = M[i, k] / inv
            if f != cst(M, 0.0):
                for j in range(k + 1, d):
                    M[i, j] -= f * M[k, j]
                r[i] -= f * r[k]
    for k in range(d - 1, -1, -1):
        acc = r[k]
        for j in range(k + 1, d):
            acc -= M[k, j] * r[j]
        r[k] = acc / M[k, k]
    return True


@njit(inline="always", **JIT)
def newton(kind, mdl, x, base, v0, hh, z, S, ws, fw, sw):
    """Solve a block's implicit stage in place of ``z`` (initial guess in, root out).

    MIDPOINT: z − x − hh·f(z) = 0 (z: 2n); P_STAGE: P − p − hh·f_p(q, P) = 0; Q_STAGE:
    Q − q − hh·(v0 + f_q(Q, p½)) = 0 with ``base = p½``. Returns ``(code, last correction)``.

    ``mdl[9] == 0`` (training): Newton with a fresh Jacobian every iteration, as the torch path,
    whose differentiable step needs the last iteration's Jacobian. ``mdl[9] == 1`` (prediction):
    simplified Newton: the block's Jacobian (``sw[5]``, valid while ``sw[16][0]``) is kept across
    iterations and steps and re-evaluated at the current iterate only when an iteration that does
    not converge contracts by less than `CHORD_RATE`, fails to be finite, or meets a singular matrix. The root and the
    stopping test are the same; only Newton iterations (fresh Jacobians) count against the cap.
    """
    net, nrm, arch, act, rh, n, tol, max_iter = mdl[0], mdl[1], mdl[2], mdl[3], mdl[4], mdl[5], mdl[6], mdl[7]
    reuse = mdl[9] != 0
    rate = cst(x, mdl[9] * 1e-6)  # the contraction below which a kept Jacobian stays (`CHORD_RATE`)
    Y, R, J, M, r, Hs, active = sw[4], sw[0], sw[5], sw[6], sw[7], sw[8], sw[9]
    prev, valid = sw[15], sw[16]
    dz = 2 * n if kind == MIDPOINT else n
    lo = n if kind == P_STAGE else 0  # the rows/columns of J that belong to the unknown
    one = cst(x, 1.0)
    for s in range(S):
        active[s] = True
        prev[s] = cst(x, np.inf)
    last = cst(x, 0.0)
    fresh_count = 0
    for _ in range(CHORD_FACTOR * max_iter):
        for s in range(S):
            if kind == MIDPOINT:
                for c in range(2 * n):
                    Y[s, c] = z[s, c]
            elif kind == P_STAGE:
                for c in range(n):
                    Y[s, c] = x[s, c]
                    Y[s, n + c] = z[s, c]
            else:
                for c in range(n):
                    Y[s, c] = z[s, c]
                    Y[s, n + c] = base[s, c]
        fresh = not (reuse and valid[0])
        if fresh:
            if fresh_count == max_iter:
                return NO_CONVERGENCE, last
            fresh_count += 1
            fd.rates_jacobian(net, nrm, arch, act, rh, n, Y, S, ws, fw, R, J, Hs)
            valid[0] = True
        else:
            fd.rates(net, nrm, arch, act, rh, n, Y, S, ws, fw, R)
        last = cst(x, 0.0)
        remaining = 0
        for s in range(S):
            if not active[s]:
                continue
            h = hh[s]
            for i in range(dz):
                if kind == Q_STAGE:
                    r[i] = z[s, i] - x[s, i] - h * (v0[s, i] + R[s, i])
                else:
                    r[i] = z[s, i] - x[s, lo + i] - h * R[s, lo + i]
                for j in range(dz):
                    M[i, j] = (one if i == j else cst(x, 0.0)) - h * J[s, lo + i, lo + j]
            if not solve_inplace(M, r, dz):
                if fresh:
                    return SINGULAR, cst(x, 0.0)
                valid[0] = False  # a stale Jacobian went singular: re-evaluate, retry
                remaining += 1
                continue
            big_dz = cst(x, 0.0)
            big_z = cst(x, 0.0)
            finite = True
            for i in range(dz):
                zi = z[s, i] - r[i]
                if not np.isfinite(zi):
                    finite = False
                big_dz = max(big_dz, abs(r[i]))
                big_z = max(big_z, abs(zi))
            if not finite:
                if fresh:
                    for i in range(dz):
                        z[s, i] = z[s, i] - r[i]
                    return NONFINITE_NEWTON, cst(x, 0.0)
                valid[0] = False  # keep z, retry with a fresh Jacobian
                remaining += 1
                continue
            for i in range(dz):
                z[s, i] = z[s, i] - r[i]
            converged = big_dz <= tol * (one + big_z)
            if reuse and not fresh and not converged and big_dz > rate * prev[s]:
                # the stale Jacobian contracts too slowly: refresh. Not on the converging
                # iteration, whose correction is at round-off and says nothing of the Jacobian
                valid[0] = False
            prev[s] = big_dz
            if converged:
                active[s] = False
            else:
                remaining += 1
                last = max(last, big_dz)
        if remaining == 0:
            return OK, last
    return NO_CONVERGENCE, last


#: the history predictor extrapolates at most this far, in units of the span between the two
#: slopes it extrapolates from (constant steps: 1); beyond, explicit Euler from the rates at x
EXTRAPOLATE_MAX = 2.0


@njit(inline="always", **JIT)
def _remember_slope(X, Xn, hs, S, m, sw):
    """After a midpoint step: its slope (x' − x)/h = f(z), the rates at the midpoint, becomes the
    newest of the two that `_midpoint_from_history` extrapolates from."""
    S1, S2, Hh, hist = sw[17], sw[18], sw[19], sw[20]
    for s in range(S):
        Hh[s, 1] = Hh[s, 0]
        Hh[s, 0] = hs[s]
        for c in range(m):
            S2[s, c] = S1[s, c]
            S1[s, c] = (Xn[s, c] - X[s, c]) / hs[s]
    hist[0] += 1


@njit(inline="always", **JIT)
def _midpoint_from_history(mdl, X, Xn, hs, S, ws, fw, sw):
    """Implicit midpoint (prediction) with Newton started from the last two steps' midpoint slopes
    extrapolated to this step's midpoint time: z₀ = x + h/2·(s₁ + (s₁ − s₂)·(h₁ + h)/(h₂ + h₁)).

    That guess is O(h³) from the root where explicit Euler's x + h/2·f(x) is O(h²), and it costs
    no network sweep (the slopes are (x_k − x_{k−1})/h of states already computed); H at x then
    comes from the rollout's deferred energy pass. Rows whose steps change too abruptly
    (`EXTRAPOLATE_MAX`) start from explicit Euler, as the torch path. Same root and stopping test.
    """
    net, nrm, arch, act, rh, n = mdl[0], mdl[1], mdl[2], mdl[3], mdl[4], mdl[5]
    R, Zs, half, S1, S2, Hh = sw[0], sw[10], sw[11], sw[17], sw[18], sw[19]
    m = 2 * n
    hf = cst(X, 0.5)
    limit = cst(X, EXTRAPOLATE_MAX)
    euler = False
    for s in range(S):
        half[s] = hf * hs[s]
        if (Hh[s, 0] + hs[s]) > limit * (Hh[s, 1] + Hh[s, 0]):
            euler = True
    if euler:
        fd.rates(net, nrm, arch, act, rh, n, X, S, ws, fw, R)
    for s in range(S):
        ratio = (Hh[s, 0] + hs[s]) / (Hh[s, 1] + Hh[s, 0])
        if (Hh[s, 0] + hs[s]) > limit * (Hh[s, 1] + Hh[s, 0]):
            for c in range(m):
                Zs[s, c] = X[s, c] + half[s] * R[s, c]
        else:
            for c in range(m):
                Zs[s, c] = X[s, c] + half[s] * (S1[s, c] + (S1[s, c] - S2[s, c]) * ratio)
    code, val = newton(MIDPOINT, mdl, X, X, X, half, Zs, S, ws, fw, sw)
    two = cst(X, 2.0)
    for s in range(S):
        for c in range(m):
            Xn[s, c] = two * Zs[s, c] - X[s, c]
    _remember_slope(X, Xn, hs, S, m, sw)
    return code, val


@njit(inline="always", **JIT)
def step(integ, mdl, X, Xn, hs, S, ws, fw, sw, Hb, cached):
    """One step of integrator ``integ`` for rows ``s < S``: ``X → Xn`` with sizes ``hs (S,)``.

    Also leaves H at ``X`` in ``Hb`` (H nets), from the trunk outputs of the step's first gradient
    sweep — for the explicit separable schemes only V's raw output (see `_kinetic_pass`); not for
    implicit midpoint started from history (`_midpoint_from_history`: see `_energy_pass`).
    ``cached``: separable leapfrog's −V'(q) and V(q̂) at ``X`` are in ``sw[13:15]`` from the
    previous step's last kick (torch recomputes them: same numbers, one sweep fewer).
    Returns ``(code, last Newton correction)``.
    """
    net, nrm, arch, act, rh, n, offset = mdl[0], mdl[1], mdl[2], mdl[3], mdl[4], mdl[5], mdl[8]
    R, K2, K3, K4, Y = sw[0], sw[1], sw[2], sw[3], sw[4]
    Zs, half, V0, Rc, Vc = sw[10], sw[11], sw[12], sw[13], sw[14]
    m = 2 * n
    hf = cst(X, 0.5)
    zero = cst(X, 0.0)
    hamiltonian = arch != fd.VECTOR
    for s in range(S):
        half[s] = hf * hs[s]
    if arch == fd.SEPARABLE and (integ == SYMPLECTIC_EULER or integ == LEAPFROG):
        # explicit: kick with −V'(q), drift with T'(p). H(X) = out_scale·(T + V) + offset: V's
        # output comes with the kick (Hb gets it raw); T(p̂) is added by `_kinetic_pass`, in blocks
        if not cached:
            fd.half_grad(net, nrm, 0, act, rh, n, X, S, ws, fw, Rc)
            for s in range(S):
                Vc[s] = fw[2][s]
        for s in range(S):
            Hb[s] = Vc[s]
        hk = hs if integ == SYMPLECTIC_EULER else half
        for s in range(S):
            for c in range(n):
                Y[s, n + c] = X[s, n + c] + hk[s] * Rc[s, n + c]  # p after the first kick
        fd.half_grad(net, nrm, 1, act, rh, n, Y, S, ws, fw, R)
        for s in range(S):
            for c in range(n):
                Xn[s, c] = X[s, c] + hs[s] * R[s, c]
                Xn[s, n + c] = Y[s, n + c]
        if integ == LEAPFROG:
            fd.half_grad(net, nrm, 0, act, rh, n, Xn, S, ws, fw, Rc)  # −V'(q1): also next step's first kick
            for s in range(S):
                Vc[s] = fw[2][s]
                for c in range(n):
                    Xn[s, n + c] = Y[s, n + c] + half[s] * Rc[s, n + c]
        return OK, zero
    if integ == IMPLICIT_MIDPOINT and mdl[9] != 0 and sw[20][0] >= 2:
        return _midpoint_from_history(mdl, X, Xn, hs, S, ws, fw, sw)
    # every other scheme starts with the rates at X: H(X) comes from that sweep
    fd.rates(net, nrm, arch, act, rh, n, X, S, ws, fw, R)
    if hamiltonian:
        fd.energy_from_outputs(nrm, arch, offset, S, fw, Hb)
    if integ == EULER:
        for s in range(S):
            for c in range(m):
                Xn[s, c] = X[s, c] + hs[s] * R[s, c]
        return OK, zero
    if integ == RK4:
        for s in range(S):
            for c in range(m):
                Y[s, c] = X[s, c] + hf * hs[s] * R[s, c]
        fd.rates(net, nrm, arch, act, rh, n, Y, S, ws, fw, K2)
        for s in range(S):
            for c in range(m):
                Y[s, c] = X[s, c] + hf * hs[s] * K2[s, c]
        fd.rates(net, nrm, arch, act, rh, n, Y, S, ws, fw, K3)
        for s in range(S):
            for c in range(m):
                Y[s, c] = X[s, c] + hs[s] * K3[s, c]
        fd.rates(net, nrm, arch, act, rh, n, Y, S, ws, fw, K4)
        two = cst(X, 2.0)
        sixth = cst(X, 6.0)
        for s in range(S):
            h6 = hs[s] / sixth
            for c in range(m):
                Xn[s, c] = X[s, c] + h6 * (R[s, c] + two * K2[s, c] + two * K3[s, c] + K4[s, c])
        return OK, zero
    if integ == IMPLICIT_MIDPOINT:
        for s in range(S):
            for c in range(m):
                Zs[s, c] = X[s, c] + half[s] * R[s, c]
        code, val = newton(MIDPOINT, mdl, X, X, X, half, Zs, S, ws, fw, sw)
        two = cst(X, 2.0)
        for s in range(S):
            for c in range(m):
                Xn[s, c] = two * Zs[s, c] - X[s, c]
        if mdl[9] != 0:
            _remember_slope(X, Xn, hs, S, m, sw)
        return code, val
    # symplectic Euler / leapfrog, non-separable: the momentum stage (and leapfrog's position
    # stage) by Newton
    hk = hs if integ == SYMPLECTIC_EULER else half
    for s in range(S):
        for c in range(n):
            Zs[s, c] = X[s, n + c] + hk[s] * R[s, n + c]
    code, val = newton(P_STAGE, mdl, X, X, X, hk, Zs, S, ws, fw, sw)
    if code != OK:
        return code, val
    for s in range(S):
        for c in range(n):
            Y[s, c] = X[s, c]
            Y[s, n + c] = Zs[s, c]
    fd.rates(net, nrm, arch, act, rh, n, Y, S, ws, fw, R)  # dq/dt(q, p1), or v0 = dq/dt(q, p½)
    if integ == SYMPLECTIC_EULER:
        for s in range(S):
            for c in range(n):
                Xn[s, c] = X[s, c] + hs[s] * R[s, c]
                Xn[s, n + c] = Zs[s, c]
        return OK, zero
    for s in range(S):
        for c in range(n):
            V0[s, c] = R[s, c]
            Xn[s, n + c] = Zs[s, c]  # p½, the base of the position stage
            Zs[s, c] = X[s, c] + hs[s] * R[s, c]
    code, val = newton(Q_STAGE, mdl, X, Xn[:, n:], V0, half, Zs, S, ws, fw, sw)
    if code != OK:
        return code, val
    for s in range(S):
        for c in range(n):
            Y[s, c] = Zs[s, c]
            Y[s, n + c] = Xn[s, n + c]
    fd.rates(net, nrm, arch, act, rh, n, Y, S, ws, fw, R)
    for s in range(S):
        for c in range(n):
            Xn[s, c] = Zs[s, c]
            Xn[s, n + c] = Y[s, n + c] + half[s] * R[s, n + c]
    return OK, zero


@njit(inline="always", **JIT)
def _sweep_workspaces(net, n, S, dtype_like):
    """Workspaces of the network sweeps on ``S`` rows: the trunks' ``ws`` (`_trunk`) and the
    field's ``fw`` (`_field`)."""
    W0, Wr, Wo = net[0], net[3], net[6]
    din, w = W0.shape[1], W0.shape[2]
    L = Wr.shape[1]
    mo = Wo.shape[2]
    dt = dtype_like.dtype
    ws = (np.empty((S, w), dt), np.empty((S, w), dt), np.empty((L + 1, S, w), dt), np.empty((L + 1, S, w), dt),
          np.empty((S, w), dt), np.empty((S, w), dt), np.empty((S * din, w), dt), np.empty((L + 1, S * din, w), dt),
          np.empty((w, din), dt), np.empty((S * din, mo), dt))
    m = 2 * n
    fw = (np.empty((S, m), dt), np.empty((S, m), dt), np.empty(S, dt), np.empty(S, dt), np.empty((S, m, m), dt),
          np.empty((S, mo), dt), np.empty((S, mo, m), dt))
    return ws, fw


@njit(inline="always", **JIT)
def _workspaces(net, n, S, dtype_like):
    """`_sweep_workspaces` and the integrators' ``sw`` (stages, Newton's matrices)."""
    ws, fw = _sweep_workspaces(net, n, S, dtype_like)
    dt = dtype_like.dtype
    m = 2 * n
    sw = (np.empty((S, m), dt), np.empty((S, m), dt), np.empty((S, m), dt), np.empty((S, m), dt),
          np.empty((S, m), dt), np.empty((S, m, m), dt), np.empty((m, m), dt), np.empty(m, dt),
          np.empty((m, m), dt), np.empty(S, np.bool_), np.empty((S, m), dt), np.empty(S, dt), np.empty((S, n), dt),
          np.empty((S, m), dt), np.empty(S, dt), np.empty(S, dt), np.zeros(1, np.bool_),
          np.empty((S, m), dt), np.empty((S, m), dt), np.empty((S, 2), dt), np.zeros(1, np.int64))
    return ws, fw, sw


#: rows per block of the deferred kinetic-energy pass (wide enough for BLAS)
POST_ROWS = 64


@njit(inline="always", **JIT)
def _kinetic_pass(net, nrm, act, rh, n, offset, pout, Hout, b0, S, T, ws, fw):
    """``H = out_scale·(T(p̂) + V) + offset`` for the block's states, where ``Hout`` holds V's raw
    output: T in blocks of `POST_ROWS` (time points) rather than one per step."""
    U, val = fw[0], fw[3]
    shift, scale, osc = nrm[0], nrm[1], nrm[2][0]
    total = S * (T + 1)
    for i0 in range(0, total, POST_ROWS):
        cnt = min(POST_ROWS, total - i0)
        for r in range(cnt):
            s, k = divmod(i0 + r, T + 1)
            for c in range(n):
                U[r, c] = (pout[b0 + s, k, c] - shift[n + c]) / scale[n + c]
        tk.value(net, 1, act, rh, U, cnt, ws, val)
        for r in range(cnt):
            s, k = divmod(i0 + r, T + 1)
            Hout[b0 + s, k] = osc * (val[r] + Hout[b0 + s, k]) + offset


@njit(inline="always", **JIT)
def _energy_pass(net, nrm, arch, act, rh, n, offset, qout, pout, Hout, b0, S, T, ws, fw, Xb, Hb):
    """H at every state of the block, in blocks of `POST_ROWS` states (a value sweep each), for
    schemes whose steps do not evaluate the network at x (implicit midpoint from history)."""
    total = S * (T + 1)
    for i0 in range(0, total, POST_ROWS):
        cnt = min(POST_ROWS, total - i0)
        for r in range(cnt):
            s, k = divmod(i0 + r, T + 1)
            for c in range(n):
                Xb[r, c] = qout[b0 + s, k, c]
                Xb[r, n + c] = pout[b0 + s, k, c]
        fd.energy(net, nrm, arch, act, rh, n, offset, Xb, cnt, ws, fw, Hb)
        for r in range(cnt):
            s, k = divmod(i0 + r, T + 1)
            Hout[b0 + s, k] = Hb[r]


@njit(nogil=True, **JIT)
def rollout(net, nrm, cfg, par, q0, p0, h, qout, pout, Hout, block, blk0, blk1, err, errv):
    """Blocks ``blk0 … blk1−1`` of ``block`` rows through all steps, one after another; outputs
    written in place (``Hout`` only when ``cfg[6]``), errors into ``err[blk]``, ``errv[blk]``."""
    arch, act, integ, n, newton_used, max_iter = cfg[0], cfg[1], cfg[2], cfg[3], cfg[4], cfg[5]
    rh, offset, tol = par[0], par[1], par[2]
    mdl = (net, nrm, arch, act, rh, n, tol, max_iter, offset, cfg[8])  # cfg[8]: 1e6 × CHORD_RATE, or 0
    B, T = q0.shape[0], h.shape[1]
    shared = h.shape[0] == 1
    m = 2 * n
    hamiltonian = arch != fd.VECTOR and cfg[6] != 0  # cfg[6]: the caller wants H
    ws, fw, sw = _workspaces(net, n, block, q0)
    deferred = arch == fd.SEPARABLE and (integ == SYMPLECTIC_EULER or integ == LEAPFROG)
    # implicit midpoint in prediction starts Newton from history, not from the rates at x: H after
    deferred_all = integ == IMPLICIT_MIDPOINT and cfg[8] != 0
    ws2, fw2 = _sweep_workspaces(net, n, POST_ROWS if deferred or deferred_all else 1, q0)
    Xpost = np.empty((POST_ROWS if deferred_all else 1, m), q0.dtype)
    Hpost = np.empty(POST_ROWS if deferred_all else 1, q0.dtype)
    X0 = np.empty((block, m), q0.dtype)
    X1 = np.empty((block, m), q0.dtype)
    hs = np.empty(block, q0.dtype)
    Hb = np.empty(block, q0.dtype)
    for blk in range(blk0, blk1):
        b0 = blk * block
        S = min(block, B - b0)
        X, Xn = X0, X1
        for s in range(S):
            for c in range(n):
                X[s, c] = q0[b0 + s, c]
                X[s, n + c] = p0[b0 + s, c]
                qout[b0 + s, 0, c] = X[s, c]
                pout[b0 + s, 0, c] = X[s, n + c]
        cached = False
        failed = False
        sw[16][0] = False  # no Jacobian yet for this block's rows
        sw[20][0] = 0  # nor midpoint slopes
        for k in range(T):
            for s in range(S):
                hs[s] = h[0, k] if shared else h[b0 + s, k]
            code, val = step(integ, mdl, X, Xn, hs, S, ws, fw, sw, Hb, cached)
            cached = integ == LEAPFROG  # the last kick's −V'(q1) is the next first kick's
            if hamiltonian and not deferred_all:
                for s in range(S):
                    Hout[b0 + s, k] = Hb[s]
            finite = True
            for s in range(S):
                for c in range(m):
                    if not np.isfinite(Xn[s, c]):
                        finite = False
            at = k + 1
            if code == OK and not finite:
                # an implicit scheme meets the non-finite state in the next step's Newton solve
                later = newton_used and k + 1 < T
                code = NONFINITE_NEWTON if later else NONFINITE_STATE
                at = k + 2 if later else k + 1
            if code != OK:
                err[blk, 0] = code
                err[blk, 1] = at
                errv[blk] = val
                failed = True
                break
            for s in range(S):
                for c in range(n):
                    qout[b0 + s, k + 1, c] = Xn[s, c]
                    pout[b0 + s, k + 1, c] = Xn[s, n + c]
            X, Xn = Xn, X
        if failed or not hamiltonian:
            continue
        if deferred_all:
            _energy_pass(net, nrm, arch, act, rh, n, offset, qout, pout, Hout, b0, S, T, ws2, fw2, Xpost, Hpost)
        elif deferred:
            fd.normalise(X, S, 0, n, nrm, fw[0])
            tk.value(net, 0, act, rh, fw[0], S, ws, Hb)
            for s in range(S):
                Hout[b0 + s, T] = Hb[s]
            _kinetic_pass(net, nrm, act, rh, n, offset, pout, Hout, b0, S, T, ws2, fw2)
        else:
            fd.energy(net, nrm, arch, act, rh, n, offset, X, S, ws, fw, Hb)
            for s in range(S):
                Hout[b0 + s, T] = Hb[s]
