"""Adaptive Dormand–Prince 5(4) prediction compiled: `hinn_core.adaptive.rk45` step for step.

Every trajectory has its own step-size control, as in scipy's ``solve_ivp`` and the torch
reference, but a block of trajectories advances in lock step: each attempt evaluates the field's
seven stages for all the block's unfinished trajectories in one sweep of rows, as the fixed-step
kernels do, and a trajectory that ends (or fails) leaves the sweeps, so no row is evaluated for
nothing. Blocks run on several threads (the kernel releases the GIL). H at the output states comes
after, from `_rollout._energy_pass`. Errors are returned, not raised: ``err[b] = code`` and
``errt[b]`` the time the trajectory had reached.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hinn_core.fastpath import _field as fd
from hinn_core.fastpath import _rollout as rl
from hinn_core.fastpath._math import JIT, cst

OK, TOO_SMALL_STEP, TOO_MANY_STEPS, NONFINITE = 0, 1, 2, 3


@njit(inline="always", **JIT)
def _rms_scaled(v, scale, m):
    acc = cst(v, 0.0)
    for c in range(m):
        x = v[c] / scale[c]
        acc += x * x
    return np.sqrt(acc) / np.sqrt(cst(v, m))


@njit(inline="always", **JIT)
def _min_step(t):
    """scipy's smallest step at ``t``: ten times the spacing of floats there."""
    return cst(t, 10.0) * abs(np.nextafter(t, cst(t, np.inf)) - t)


@njit(inline="always", **JIT)
def _sweep(mdl, X, na, ws, fw, R, idx, K, k):
    """``K[idx[i], k] = f(X[i])`` for the ``na`` rows of ``X`` in use. A lone row goes through a call
    with a literal 1, which LLVM specialises: without it batch 1 ran 5–14 % slower (measured)."""
    net, nrm, arch, act, rh, n = mdl
    if na == 1:
        fd.rates(net, nrm, arch, act, rh, n, X, 1, ws, fw, R)
    else:
        fd.rates(net, nrm, arch, act, rh, n, X, na, ws, fw, R)
    for i in range(na):
        r = idx[i]
        for c in range(2 * n):
            K[r, k, c] = R[i, c]


@njit(inline="always", **JIT)
def _start(mdl, x0, b0, S, rtol, atol, span, Y, K, X, R, ws, fw, idx, v, scale, habs, d1s):
    """scipy's ``select_initial_step`` for the block's ``S`` rows: f(y) into ``K[:, 0]`` and the first
    step size into ``habs`` (two sweeps)."""
    m = Y.shape[1]
    for r in range(S):
        idx[r] = r
        for c in range(m):
            Y[r, c] = x0[b0 + r, c]
            X[r, c] = Y[r, c]
    _sweep(mdl, X, S, ws, fw, R, idx, K, 0)
    for r in range(S):
        for c in range(m):
            scale[r, c] = atol + abs(Y[r, c]) * rtol
        d0 = _rms_scaled(Y[r], scale[r], m)
        d1 = _rms_scaled(K[r, 0], scale[r], m)
        d1s[r] = d1
        h0 = cst(span, 1e-6) if (d0 < cst(span, 1e-5) or d1 < cst(span, 1e-5)) else cst(span, 0.01) * d0 / d1
        habs[r] = min(h0, span)
        for c in range(m):
            X[r, c] = Y[r, c] + habs[r] * K[r, 0, c]
    _sweep(mdl, X, S, ws, fw, R, idx, K, 1)
    for r in range(S):
        h0 = habs[r]
        for c in range(m):
            v[r, c] = K[r, 1, c] - K[r, 0, c]
        d1 = d1s[r]
        d2 = _rms_scaled(v[r], scale[r], m) / h0
        if d1 <= cst(span, 1e-15) and d2 <= cst(span, 1e-15):
            h1 = max(cst(span, 1e-6), h0 * cst(span, 1e-3))
        else:
            h1 = (cst(span, 0.01) / max(d1, d2)) ** cst(span, 0.2)
        habs[r] = min(min(cst(span, 100.0) * h0, h1), span)


@njit(inline="always", **JIT)
def _dense(Pt, K, Y, r, b, t, t_new, h, times, nxt, qout, pout, Q):
    """Write the accepted step's (``t`` → ``t_new = t + h``) output times ``times[nxt] ≤ t_new`` by
    4th-order dense output; returns the next output index."""
    m = Y.shape[1]
    n = m // 2
    T1 = times.shape[0]
    for c in range(m):
        for i in range(4):
            acc = cst(h, 0.0)
            for j in range(7):
                acc += K[r, j, c] * Pt[j, i]
            Q[c, i] = acc
    while nxt < T1 and times[nxt] <= t_new:
        x = (times[nxt] - t) / h
        x2 = x * x
        x3 = x2 * x
        x4 = x3 * x
        for c in range(m):
            val = Y[r, c] + h * (((Q[c, 0] * x + Q[c, 1] * x2) + Q[c, 2] * x3) + Q[c, 3] * x4)
            if c < n:
                qout[b, nxt, c] = val
            else:
                pout[b, nxt, c - n] = val
        nxt += 1
    return nxt


@njit(nogil=True, **JIT)
def rk45(net, nrm, cfg, par, tab, x0, times, qout, pout, Hout, blk0, blk1, err, errt, nfev):
    """Blocks ``blk0 … blk1−1`` of ``cfg[5]`` trajectories from ``x0: (B, 2n)`` onto ``times: (T+1,)``;
    ``tab = (A (6, 6), B (6,), E (7,), P (7, 4))`` is the tableau of `hinn_core.adaptive`;
    ``par = (rh, offset, rtol, atol)``; ``cfg = (arch, act, n, energy, max_steps, block)``."""
    arch, act, n, want_h, max_steps, block = cfg[0], cfg[1], cfg[2], cfg[3], cfg[4], cfg[5]
    rh, offset, rtol, atol = par[0], par[1], par[2], par[3]
    At, Bt, Et, Pt = tab
    mdl = (net, nrm, arch, act, rh, n)
    m = 2 * n
    B = x0.shape[0]
    T1 = times.shape[0]
    t0, t_end = times[0], times[T1 - 1]
    span = t_end - t0
    safety, min_factor, max_factor = cst(t0, 0.9), cst(t0, 0.2), cst(t0, 10.0)
    expo = cst(t0, -0.2)
    one = cst(t0, 1.0)
    dt = x0.dtype
    ws, fw = rl._sweep_workspaces(net, n, block, x0)
    X = np.empty((block, m), dt)
    R = np.empty((block, m), dt)
    K = np.empty((block, 7, m), dt)  # stages; K[r, 0] = f at Y[r]
    Y = np.empty((block, m), dt)
    Ynew = np.empty((block, m), dt)
    scale = np.empty((block, m), dt)
    v = np.empty((block, m), dt)
    Q = np.empty((m, 4), dt)
    habs = np.empty(block, dt)
    d1s = np.empty(block, dt)
    hstep = np.empty(block, dt)
    t = np.empty(block, dt)
    tnew = np.empty(block, dt)
    nxt = np.empty(block, np.int64)
    attempts = np.empty(block, np.int64)
    rejected = np.empty(block, np.bool_)
    idx = np.empty(block, np.int64)
    for blk in range(blk0, blk1):
        b0 = blk * block
        S = min(block, B - b0)
        for r in range(S):
            for c in range(n):
                qout[b0 + r, 0, c] = x0[b0 + r, c]
                pout[b0 + r, 0, c] = x0[b0 + r, n + c]
        _start(mdl, x0, b0, S, rtol, atol, span, Y, K, X, R, ws, fw, idx, v, scale, habs, d1s)
        na = 0
        for r in range(S):
            t[r] = t0
            nxt[r] = 1
            attempts[r] = 0
            rejected[r] = False
            nfev[b0 + r] = 2
            err[b0 + r] = OK
            errt[b0 + r] = t0
            if T1 > 1:
                idx[na] = r
                na += 1
        while na > 0:
            live = 0
            for i in range(na):  # choose each step; NaN rates at y leave no step size to choose
                r = idx[i]
                if not np.isfinite(habs[r]):
                    err[b0 + r] = NONFINITE
                    errt[b0 + r] = t[r]
                    continue
                min_step = _min_step(t[r])
                if habs[r] < min_step:
                    habs[r] = min_step
                t_new = t[r] + habs[r]
                if t_new > t_end:
                    t_new = t_end
                tnew[r] = t_new
                hstep[r] = t_new - t[r]
                idx[live] = r
                live += 1
            na = live
            if na == 0:
                break
            for s in range(1, 6):
                for i in range(na):
                    r = idx[i]
                    for c in range(m):
                        acc = cst(t0, 0.0)
                        for j in range(s):
                            acc += K[r, j, c] * At[s, j]
                        X[i, c] = Y[r, c] + acc * hstep[r]
                _sweep(mdl, X, na, ws, fw, R, idx, K, s)
            for i in range(na):
                r = idx[i]
                for c in range(m):
                    acc = cst(t0, 0.0)
                    for j in range(6):
                        acc += K[r, j, c] * Bt[j]
                    Ynew[r, c] = Y[r, c] + hstep[r] * acc
                    X[i, c] = Ynew[r, c]
            _sweep(mdl, X, na, ws, fw, R, idx, K, 6)
            live = 0
            for i in range(na):
                r = idx[i]
                b = b0 + r
                h = hstep[r]
                nfev[b] += 6
                attempts[r] += 1
                for c in range(m):
                    acc = cst(t0, 0.0)
                    for j in range(7):
                        acc += K[r, j, c] * Et[j]
                    v[r, c] = acc * h
                    scale[r, c] = atol + max(abs(Y[r, c]), abs(Ynew[r, c])) * rtol
                e = _rms_scaled(v[r], scale[r], m)
                raw = safety * e ** expo
                accepted = e < one
                if accepted:
                    factor = max_factor if e == cst(t0, 0.0) else (raw if raw < max_factor else max_factor)
                    if rejected[r] and factor > one:
                        factor = one
                else:
                    factor = raw if raw > min_factor else min_factor
                habs[r] = abs(h) * factor
                code = OK
                if not accepted:
                    rejected[r] = True
                    if habs[r] < _min_step(t[r]):
                        code = TOO_SMALL_STEP
                if code == OK and attempts[r] > max_steps:
                    code = TOO_MANY_STEPS
                if code != OK:
                    err[b] = code
                    errt[b] = t[r]
                    continue
                if accepted:
                    nxt[r] = _dense(Pt, K, Y, r, b, t[r], tnew[r], h, times, nxt[r], qout, pout, Q)
                    t[r] = tnew[r]
                    errt[b] = t[r]
                    for c in range(m):
                        Y[r, c] = Ynew[r, c]
                        K[r, 0, c] = K[r, 6, c]
                    rejected[r] = False
                    if nxt[r] >= T1:
                        continue
                idx[live] = r
                live += 1
            na = live
    if want_h != 0 and arch != fd.VECTOR:
        ws2, fw2 = rl._sweep_workspaces(net, n, rl.POST_ROWS, x0)
        Xpost = np.empty((rl.POST_ROWS, m), dt)
        Hpost = np.empty(rl.POST_ROWS, dt)
        for b in range(blk0 * block, min(blk1 * block, B)):
            if err[b] == OK:
                rl._energy_pass(net, nrm, arch, act, rh, n, offset, qout, pout, Hout, b, 1, T1 - 1, ws2, fw2,
                                Xpost, Hpost)
