"""Adaptive Dormand–Prince 5(4) prediction (``integrator="rk45"``): the HNN reference's solver.

The reference implementation (Greydanus et al. 2019) predicts with ``scipy.integrate.solve_ivp``
(RK45, rtol 1e-9 … 1e-12, atol 1e-6) calling the network once per evaluation. This module is the
same algorithm step for step — scipy's tableau, initial step (Hairer–Nørsett–Wanner II.4), error
norm, step-size controller and 4th-order dense output onto the requested times — batched over
initial conditions with every trajectory under its own step-size control, so each trajectory is
the one ``solve_ivp(..., method="RK45", t_eval=times)`` computes (tested to round-off). It is
prediction only: training differentiates fixed-step rollouts.

`rk45` here is the torch reference (any device, any dynamics); `hinn_core.fastpath` runs the same
steps compiled. Neither is symplectic: over long horizons energy drifts at the tolerance's scale,
where leapfrog and implicit midpoint keep it bounded.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from hinn_core.dynamics import Dynamics
from hinn_core.errors import DataError, IntegrationError

NAME = "rk45"
#: Dormand–Prince 5(4) as scipy's ``RK45`` (``C``, ``A``, ``B``, error weights ``E``, dense output ``P``)
C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
A = ((),
     (1 / 5,),
     (3 / 40, 9 / 40),
     (44 / 45, -56 / 15, 32 / 9),
     (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
     (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656))
B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
E = (-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40)
P = ((1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432),
     (0.0, 0.0, 0.0, 0.0),
     (0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799),
     (0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072),
     (0.0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632),
     (0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844),
     (0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423))
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0
ERROR_EXPONENT = -1 / 5  # the error estimate is 4th order


@dataclass(frozen=True)
class Tolerances:
    """Error control of one RK45 prediction: per step, the RMS over components of the local error
    estimate divided by ``atol + rtol·max(|y|, |y_new|)`` must be < 1 (scipy's rule). ``max_steps``
    bounds the attempted steps per trajectory (a stiff or blowing-up learned field would otherwise
    shrink its steps without end)."""

    rtol: float = 1e-9
    atol: float = 1e-9
    max_steps: int = 100_000

    def checked(self, dtype: torch.dtype) -> Tolerances:
        """Self, after checking that the tolerances are finite, positive and resolvable in ``dtype``
        (rtol ≥ 100 ulp, as scipy requires; it silently raises smaller ones, hinn says so)."""
        floor = 100 * torch.finfo(dtype).eps
        if not (math.isfinite(self.rtol) and self.rtol >= floor):
            raise DataError(f"must be a finite number ≥ {floor:.3g} (100 ulp of the model's {dtype}), "
                            f"got {self.rtol!r}", field="rtol")
        if not (math.isfinite(self.atol) and self.atol > 0):
            raise DataError(f"must be a finite number > 0, got {self.atol!r}", field="atol")
        if self.max_steps < 1:
            raise DataError(f"must be ≥ 1, got {self.max_steps!r}", field="max_steps")
        return self


DEFAULT_TOLERANCES = Tolerances()
#: float32 cannot resolve 1e-9 (`Tolerances.checked` wants rtol ≥ 100 ulp = 1.2e-5)
FLOAT32_TOLERANCES = Tolerances(rtol=1e-4, atol=1e-6)


def default_tolerances(dtype: torch.dtype) -> Tolerances:
    """The tolerances `predict` uses when none are given: 1e-9 in float64, 1e-4 / 1e-6 in float32
    (trained on a GPU, a model is float32)."""
    return DEFAULT_TOLERANCES if torch.finfo(dtype).eps < 1e-10 else FLOAT32_TOLERANCES


def tolerances_for(dtype: torch.dtype, rtol: float | None = None, atol: float | None = None,
                   max_steps: int | None = None) -> Tolerances:
    """`default_tolerances` of ``dtype`` with what a caller gave (None: the default) in its place."""
    given = {k: v for k, v in (("rtol", rtol), ("atol", atol), ("max_steps", max_steps)) if v is not None}
    return dataclasses.replace(default_tolerances(dtype), **given)


def field_of(dyn: Dynamics, dof: int) -> Callable[[Tensor], Tensor]:
    """``x = (q, p): (b, 2·dof) → (dq/dt, dp/dt)`` of a `Dynamics`, the form `rk45` integrates."""

    def rates(x: Tensor) -> Tensor:
        return torch.cat(dyn.rates(x[:, :dof], x[:, dof:]), dim=-1)

    return rates


#: why a trajectory stopped (the compiled kernel returns the same codes)
NONFINITE, TOO_SMALL_STEP, TOO_MANY_STEPS = 3, 1, 2


def failure(code: int, t: float, i: int, tol: Tolerances) -> IntegrationError:
    """The error for trajectory ``i`` stopped at time ``t`` (one wording for both engines)."""
    if code == NONFINITE:
        why = ("the field is not finite at t = {t:.6g} (trajectory {i}); the state left the region the model "
               "can evaluate")
    elif code == TOO_SMALL_STEP:
        why = ("the step size fell below the floating-point spacing at t = {t:.6g} (trajectory {i}); the learned "
               "field may be singular or blowing up there")
    else:
        why = ("trajectory {i} needed more than {n} steps by t = {t:.6g}; shorten the horizon, raise rtol/atol or "
               "use a fixed-step integrator")
    return IntegrationError(f"{NAME}: " + why.format(t=t, i=i, n=tol.max_steps), trajectory=i,
                            too_many_steps=code == TOO_MANY_STEPS)


def _rms(x: Tensor) -> Tensor:
    """scipy's ``norm``: the RMS over the last axis."""
    return torch.linalg.vector_norm(x, dim=-1) / math.sqrt(x.shape[-1])


def initial_step(rates: Callable[[Tensor], Tensor], y0: Tensor, f0: Tensor, span: float, tol: Tolerances) -> Tensor:
    """scipy's ``select_initial_step`` per row of ``y0`` (one extra evaluation of ``rates``)."""
    scale = tol.atol + y0.abs() * tol.rtol
    d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.clamp(h0, max=span)
    f1 = rates(y0 + h0[:, None] * f0)
    d2 = _rms((f1 - f0) / scale) / h0
    flat = (d1 <= 1e-15) & (d2 <= 1e-15)
    h1 = torch.where(flat, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / torch.maximum(d1, d2)) ** (1 / 5))
    return torch.minimum(torch.minimum(100 * h0, h1), torch.full_like(h0, span))


def _min_step(t: Tensor) -> Tensor:
    """scipy's smallest step at ``t``: ten times the spacing of floats there."""
    return 10 * (torch.nextafter(t, torch.full_like(t, math.inf)) - t).abs()


def _factor(err: Tensor, rejected: Tensor) -> Tensor:
    """The step-size factor after a step with error norm ``err`` (scipy's controller; a NaN error
    counts as a rejection by the smallest factor, as Python's ``max`` gives in scipy)."""
    raw = SAFETY * err ** ERROR_EXPONENT
    accepted = err < 1
    grow = torch.where(err == 0, torch.full_like(err, MAX_FACTOR), torch.where(raw < MAX_FACTOR, raw, MAX_FACTOR))
    grow = torch.where(rejected & (grow > 1), torch.ones_like(grow), grow)
    shrink = torch.where(raw > MIN_FACTOR, raw, torch.full_like(raw, MIN_FACTOR))
    return torch.where(accepted, grow, shrink)


@torch.no_grad()
def rk45(rates: Callable[[Tensor], Tensor], x0: Tensor, times: np.ndarray, tol: Tolerances = DEFAULT_TOLERANCES
         ) -> tuple[Tensor, np.ndarray]:
    """States at ``times`` (``(T+1,)``, increasing, ``times[0]`` the initial time) from ``x0: (B, m)``,
    every row under its own step-size control: ``((B, T+1, m), evaluations per row (B,))``.

    ``rates(x: (b, m)) → (b, m)`` is the autonomous field, called on the rows still integrating.
    Raises `IntegrationError` when a row's step falls below the float spacing at its time or it
    attempts more than ``tol.max_steps`` steps.
    """
    dev, dt = x0.device, x0.dtype
    Bn, m = x0.shape
    T1 = len(times)
    t_grid = torch.as_tensor(np.array(times, dtype=np.float64), dtype=dt, device=dev)  # a copy: may be read-only
    t0, t_end = float(times[0]), float(times[-1])
    kw = {"dtype": dt, "device": dev}
    a = [torch.tensor(r, **kw) for r in A]
    b, e, p = torch.tensor(B, **kw), torch.tensor(E, **kw), torch.tensor(P, **kw)
    out = torch.empty((Bn, T1, m), **kw)
    out[:, 0] = x0
    nfev = np.full(Bn, 2, dtype=np.int64)
    y = x0.clone()
    f = rates(y)
    h_abs = initial_step(rates, y, f, t_end - t0, tol)
    t = torch.full((Bn,), t0, **kw)
    nxt = torch.ones(Bn, dtype=torch.long, device=dev)  # next output index (0 is x0 itself)
    rejected = torch.zeros(Bn, dtype=torch.bool, device=dev)
    attempts = np.zeros(Bn, dtype=np.int64)
    while True:
        rows = (nxt < T1).nonzero().flatten()
        if rows.numel() == 0:
            return out, nfev
        tr, yr, fr = t[rows], y[rows], f[rows]
        bad = ~torch.isfinite(h_abs[rows])  # NaN rates at y: scipy would step on with NaN for ever
        if bool(bad.any()):
            i = int(rows[bad][0])
            raise failure(NONFINITE, float(t[i]), i, tol)
        min_step = _min_step(tr)
        # a new step starts at least 10 ulp of t long (a retry is never shorter: see too_small below)
        hr = torch.where(h_abs[rows] < min_step, min_step, h_abs[rows])
        t_new = torch.where(tr + hr > t_end, torch.full_like(tr, t_end), tr + hr)
        h = t_new - tr
        ks = [fr]
        for s in range(1, 6):
            dy = torch.stack(ks, -1) @ a[s] * h[:, None]
            ks.append(rates(yr + dy))
        y_new = yr + h[:, None] * (torch.stack(ks, -1) @ b)
        f_new = rates(y_new)
        ks.append(f_new)
        K = torch.stack(ks, -1)  # (b, m, 7)
        nfev[rows.cpu().numpy()] += 6
        scale = tol.atol + torch.maximum(yr.abs(), y_new.abs()) * tol.rtol
        err = _rms((K @ e) * h[:, None] / scale)
        ok = err < 1
        h_abs[rows] = h.abs() * _factor(err, rejected[rows])
        rej = rows[~ok]
        rejected[rej] = True
        # a rejected row retries from the same t with its smaller step; too small → scipy's failure
        too_small = h_abs[rej] < _min_step(t[rej])
        r_np = rows.cpu().numpy()
        attempts[r_np] += 1
        if bool(too_small.any()):
            i = int(rej[too_small][0])
            raise failure(TOO_SMALL_STEP, float(t[i]), i, tol)
        if (attempts[r_np] > tol.max_steps).any():
            i = int(r_np[np.argmax(attempts[r_np] > tol.max_steps)])
            raise failure(TOO_MANY_STEPS, float(t[i]), i, tol)
        acc = rows[ok]
        if acc.numel() == 0:
            continue
        Q = K[ok] @ p  # (a, m, 4)
        t_old, y_old, h_acc = tr[ok], yr[ok], h[ok]
        t_acc = t_new[ok]
        while True:  # emit every output time in (t_old, t_new] from the dense output
            k = nxt[acc]
            due = (k < T1) & (t_grid[k.clamp(max=T1 - 1)] <= t_acc)
            if not bool(due.any()):
                break
            kd = k[due]
            x = (t_grid[kd] - t_old[due]) / h_acc[due]
            powers = torch.cumprod(x[:, None].expand(-1, 4), dim=1)
            out[acc[due], kd] = y_old[due] + h_acc[due][:, None] * (Q[due] @ powers[:, :, None])[..., 0]
            nxt[acc[due]] = kd + 1
        t[acc], y[acc], f[acc] = t_acc, y_new[ok], f_new[ok]
        rejected[acc] = False
