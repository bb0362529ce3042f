"""Adaptive Dormand–Prince 5(4) prediction compiled: `hinn_core.adaptive.rk45` step for step.

One trajectory at a time (each under its own step-size control, as scipy's ``solve_ivp`` and the
torch reference), the field evaluated by the same one-row sweeps as the fixed-step kernels;
ranges of trajectories run on several threads (the kernel releases the GIL). H at the output
states comes after, from `_rollout._energy_pass`. Errors are returned, not raised:
``err[b] = code`` and ``errt[b]`` the time the trajectory had reached.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hinn_core.fastpath import _field as fd
from hinn_core.fastpath import _rollout as rl
from hinn_core.fastpath._math import JIT, cst

OK, TOO_SMALL_STEP, TOO_MANY_STEPS, NONFINITE = 0, 1, 2, 3


@njit(inline="always", **JIT)
def _eval(mdl, X, ws, fw, R, out, k):
    """``out[k] = f(X[0])`` (``X``, ``R``: one-row blocks)."""
    net, nrm, arch, act, rh, n = mdl
    fd.rates(net, nrm, arch, act, rh, n, X, 1, ws, fw, R)
    for c in range(2 * n):
        out[k, c] = R[0, c]


@njit(inline="always", **JIT)
def _rms_scaled(v, scale, m):
    acc = cst(v, 0.0)
    for c in range(m):
        x = v[c] / scale[c]
        acc += x * x
    return np.sqrt(acc) / np.sqrt(cst(v, m))


@njit(nogil=True, **JIT)
def rk45(net, nrm, cfg, par, tab, x0, times, qout, pout, Hout, blk0, blk1, err, errt, nfev):
    """Trajectories ``blk0 … blk1−1`` from ``x0: (B, 2n)`` onto ``times: (T+1,)``; ``tab = (A (6, 6),
    B (6,), E (7,), P (7, 4))`` is the tableau of `hinn_core.adaptive`; ``par = (rh, offset, rtol,
    atol)``; ``cfg = (arch, act, n, energy, max_steps)``."""
    arch, act, n, want_h, max_steps = cfg[0], cfg[1], cfg[2], cfg[3], cfg[4]
    rh, offset, rtol, atol = par[0], par[1], par[2], par[3]
    At, Bt, Et, Pt = tab
    mdl = (net, nrm, arch, act, rh, n)
    m = 2 * n
    T1 = times.shape[0]
    t0, t_end = times[0], times[T1 - 1]
    span = t_end - t0
    inf = cst(t0, np.inf)
    safety, min_factor, max_factor = cst(t0, 0.9), cst(t0, 0.2), cst(t0, 10.0)
    expo = cst(t0, -0.2)
    one = cst(t0, 1.0)
    ws, fw, _ = rl._workspaces(net, n, 1, x0)
    X = np.empty((1, m), x0.dtype)
    R = np.empty((1, m), x0.dtype)
    K = np.empty((7, m), x0.dtype)
    F = np.empty((2, m), x0.dtype)  # f at y, f at the trial point
    y = np.empty(m, x0.dtype)
    y_new = np.empty(m, x0.dtype)
    scale = np.empty(m, x0.dtype)
    v = np.empty(m, x0.dtype)
    Q = np.empty((m, 4), x0.dtype)
    for b in range(blk0, blk1):
        for c in range(m):
            y[c] = x0[b, c]
            X[0, c] = y[c]
        for c in range(n):
            qout[b, 0, c] = y[c]
            pout[b, 0, c] = y[n + c]
        _eval(mdl, X, ws, fw, R, F, 0)
        # initial step: scipy's select_initial_step
        for c in range(m):
            scale[c] = atol + abs(y[c]) * rtol
        d0 = _rms_scaled(y, scale, m)
        d1 = _rms_scaled(F[0], scale, m)
        h0 = cst(t0, 1e-6) if (d0 < cst(t0, 1e-5) or d1 < cst(t0, 1e-5)) else cst(t0, 0.01) * d0 / d1
        h0 = min(h0, span)
        for c in range(m):
            X[0, c] = y[c] + h0 * F[0, c]
        _eval(mdl, X, ws, fw, R, F, 1)
        for c in range(m):
            v[c] = F[1, c] - F[0, c]
        d2 = _rms_scaled(v, scale, m) / h0
        if d1 <= cst(t0, 1e-15) and d2 <= cst(t0, 1e-15):
            h1 = max(cst(t0, 1e-6), h0 * cst(t0, 1e-3))
        else:
            h1 = (cst(t0, 0.01) / max(d1, d2)) ** cst(t0, 0.2)
        h_abs = min(min(cst(t0, 100.0) * h0, h1), span)
        evals = 2
        t = t0
        nxt = 1
        rejected = False
        attempts = 0
        code = OK
        while nxt < T1:
            if not np.isfinite(h_abs):  # NaN rates at y: no step size can be chosen
                code = NONFINITE
                break
            min_step = cst(t0, 10.0) * abs(np.nextafter(t, inf) - t)
            if h_abs < min_step:
                h_abs = min_step
            t_new = t + h_abs
            if t_new > t_end:
                t_new = t_end
            h = t_new - t
            for c in range(m):
                K[0, c] = F[0, c]
            for s in range(1, 6):
                for c in range(m):
                    acc = cst(t0, 0.0)
                    for j in range(s):
                        acc += K[j, c] * At[s, j]
                    X[0, c] = y[c] + acc * h
                _eval(mdl, X, ws, fw, R, K, s)
            for c in range(m):
                acc = cst(t0, 0.0)
                for j in range(6):
                    acc += K[j, c] * Bt[j]
                y_new[c] = y[c] + h * acc
                X[0, c] = y_new[c]
            _eval(mdl, X, ws, fw, R, K, 6)
            evals += 6
            attempts += 1
            for c in range(m):
                acc = cst(t0, 0.0)
                for j in range(7):
                    acc += K[j, c] * Et[j]
                v[c] = acc * h
                scale[c] = atol + max(abs(y[c]), abs(y_new[c])) * rtol
            e = _rms_scaled(v, scale, m)
            raw = safety * e ** expo
            accepted = e < one
            if accepted:
                factor = max_factor if e == cst(t0, 0.0) else (raw if raw < max_factor else max_factor)
                if rejected and factor > one:
                    factor = one
            else:
                factor = raw if raw > min_factor else min_factor
            h_abs = abs(h) * factor
            if not accepted:
                rejected = True
                if h_abs < cst(t0, 10.0) * abs(np.nextafter(t, inf) - t):
                    code = TOO_SMALL_STEP
                    break
            if attempts > max_steps:
                code = TOO_MANY_STEPS
                break
            if not accepted:
                continue
            for c in range(m):
                for i in range(4):
                    acc = cst(t0, 0.0)
                    for j in range(7):
                        acc += K[j, c] * Pt[j, i]
                    Q[c, i] = acc
            while nxt < T1 and times[nxt] <= t_new:
                x = (times[nxt] - t) / h
                x2 = x * x
                x3 = x2 * x
                x4 = x3 * x
                for c in range(m):
                    val = y[c] + h * (((Q[c, 0] * x + Q[c, 1] * x2) + Q[c, 2] * x3) + Q[c, 3] * x4)
                    if c < n:
                        qout[b, nxt, c] = val
                    else:
                        pout[b, nxt, c - n] = val
                nxt += 1
            t = t_new
            for c in range(m):
                y[c] = y_new[c]
                F[0, c] = K[6, c]
            rejected = False
        nfev[b] = evals
        err[b] = code
        errt[b] = t
    if want_h != 0 and arch != fd.VECTOR:
        ws2, fw2, _ = rl._workspaces(net, n, rl.POST_ROWS, x0)
        Xpost = np.empty((rl.POST_ROWS, m), x0.dtype)
        Hpost = np.empty(rl.POST_ROWS, x0.dtype)
        for b in range(blk0, blk1):
            if err[b] == OK:
                rl._energy_pass(net, nrm, arch, act, rh, n, offset, qout, pout, Hout, b, 1, T1 - 1, ws2, fw2,
                                Xpost, Hpost)
