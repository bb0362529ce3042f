"""Prediction: roll a trained model out from initial conditions on a time grid.

This is the path behind ``hinn predict`` and ``POST /predict``. It runs without autograd, batched
over initial conditions, and reports the learned H (physical sign, calibrated constant) and,
when the generating system is known, the true H along the predicted states.

Two engines compute the same rollout: the compiled whole-rollout kernel (`hinn_core.fastpath`,
numba; ~100× faster at batch 1) wherever it applies — a CPU model and a built-in integrator —
and the torch path (`DynamicsModel.rollout`), the reference, everywhere else (CUDA, custom
integrators, numba not installed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hinn_core import adaptive
from hinn_core.adaptive import Tolerances
from hinn_core.data import check_real
from hinn_core.errors import ConfigError, DataError
from hinn_core.integrators import INTEGRATORS, Integrator, get_integrator
from hinn_core.models import DynamicsModel
from hinn_core.systems import System

ENGINES = ("auto", "numba", "torch")
#: what `predict` integrates with: every fixed-step scheme, and adaptive RK45 (prediction only)
PREDICT_INTEGRATORS = (*sorted(INTEGRATORS), adaptive.NAME)


def _fastpath() -> Any:
    """`hinn_core.fastpath`, imported on first use (numba's import is not free), or None."""
    try:
        from hinn_core import fastpath
    except ImportError:  # pragma: no cover - numba missing
        return None
    return fastpath if fastpath.available() else None


def make_time_grid(t_end: float, dt: float, t_start: float = 0.0, max_steps: int | None = None) -> np.ndarray:
    """``t_start, t_start+dt, …`` up to exactly ``t_end`` (the last step is shorter if needed)."""
    t_start, t_end, dt = check_real(t_start, "t_start"), check_real(t_end, "t_end"), check_real(dt, "dt")
    if not math.isfinite(t_start):
        raise DataError(f"must be a finite number, got {t_start!r}", field="t_start")
    if not (math.isfinite(t_end) and t_end > t_start):
        raise DataError(f"must be a finite number > {t_start}, got {t_end!r}", field="t_end")
    if not (math.isfinite(dt) and dt > 0):
        raise DataError(f"must be a finite number > 0, got {dt!r}", field="dt")
    n = max(1, math.ceil((t_end - t_start) / dt - 1e-9))
    if max_steps is not None and n > max_steps:
        raise DataError(
            f"t_end/dt gives {n} steps, more than the limit of {max_steps}; raise dt or lower t_end",
            field="dt",
        )
    t = t_start + dt * np.arange(n + 1, dtype=np.float64)
    t[-1] = t_end
    return t


def check_times(times: Any, max_steps: int | None = None) -> np.ndarray:
    """Validate explicit (variable-step) output times: finite, strictly increasing, ≥ 2 points."""
    try:
        t = np.asarray(times, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("must be a list of numbers", field="times") from None
    if t.ndim != 1 or len(t) < 2:
        raise DataError(f"needs at least 2 time points in a flat list, got shape {t.shape}", field="times")
    if not np.isfinite(t).all():
        raise DataError(f"contains NaN or infinity at index {int(np.argmin(np.isfinite(t)))}", field="times")
    d = np.diff(t)
    if (d <= 0).any():
        k = int(np.argmax(d <= 0))
        raise DataError(
            f"must be strictly increasing; times[{k + 1}] = {float(t[k + 1])!r} follows times[{k}] = {float(t[k])!r}",
            field="times",
        )
    if max_steps is not None and len(t) - 1 > max_steps:
        raise DataError(f"has {len(t) - 1} steps, more than the limit of {max_steps}", field="times")
    return t


@dataclass
class Prediction:
    """Predicted trajectories: ``q, p: (B, T+1, dof)``, ``H, H_true: (B, T+1)`` or None."""

    times: np.ndarray
    q: np.ndarray
    p: np.ndarray
    H: np.ndarray | None
    H_true: np.ndarray | None
    #: field evaluations per trajectory (adaptive ``rk45`` only; fixed-step schemes: None)
    evaluations: np.ndarray | None = None

    def trajectories(self) -> list[dict[str, Any]]:
        out = []
        for i in range(self.q.shape[0]):
            item: dict[str, Any] = {"q": self.q[i].tolist(), "p": self.p[i].tolist()}
            item["H"] = self.H[i].tolist() if self.H is not None else None
            if self.H_true is not None:
                item["H_true"] = self.H_true[i].tolist()
            if self.evaluations is not None:
                item["evaluations"] = int(self.evaluations[i])
            out.append(item)
        return out


def check_initial_conditions(q0: Any, p0: Any, dof: int) -> tuple[np.ndarray, np.ndarray]:
    """``(B, dof)`` arrays from one IC (``(dof,)``) or a batch; names the field on failure."""
    arrays = []
    for name, value in (("q", q0), ("p", p0)):
        try:
            a = np.array(value, dtype=np.float64)  # a copy: callers' arrays may be read-only
        except (TypeError, ValueError):
            raise DataError("must be a list of numbers", field=f"initial_conditions.{name}") from None
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2:
            raise DataError(f"must be one initial condition ({dof},) or a batch (B, {dof}), got shape {a.shape}",
                            field=f"initial_conditions.{name}")
        if a.shape[1] != dof:
            raise DataError(f"must have {dof} component(s) (the model's dof), got shape {a.shape[1:]}",
                            field=f"initial_conditions.{name}")
        if a.shape[0] == 0:
            raise DataError("needs at least one initial condition", field=f"initial_conditions.{name}")
        if not np.isfinite(a).all():
            raise DataError("contains NaN or infinity", field=f"initial_conditions.{name}")
        arrays.append(a)
    if arrays[0].shape[0] != arrays[1].shape[0]:
        raise DataError("q and p need the same number of initial conditions", field="initial_conditions")
    return arrays[0], arrays[1]


def check_system(system: System | None, model: DynamicsModel) -> None:
    """A `ConfigError` when ``system`` (for H_true, the reference solution) has another dof than
    ``model``: its energy of the model's states would be wrong, or an IndexError."""
    if system is not None and system.dof != model.dof:
        raise ConfigError(f"the {system.name} system has dof {system.dof}, the model {model.dof}", field="system")


@torch.no_grad()
def predict(
    model: DynamicsModel,
    q0: Any,
    p0: Any,
    times: np.ndarray,
    *,
    integrator: str | Integrator | None = None,
    system: System | None = None,
    engine: str = "auto",
    tolerances: Tolerances | None = None,
) -> Prediction:
    """Roll out ``model`` from ``q0, p0`` (``(dof,)`` or ``(B, dof)``) onto ``times``.

    ``integrator``: a fixed-step scheme (one step per interval of ``times``; default the model's
    own) or ``"rk45"``, adaptive Dormand–Prince with error control ``tolerances`` (`hinn_core.adaptive`:
    as many steps as the tolerances need, the requested times from its dense output; default
    `adaptive.default_tolerances` of the model's dtype).
    ``engine``: ``"auto"`` uses the compiled kernel when it supports the model and integrator,
    else torch; ``"numba"`` insists on the kernel (`ConfigError` where it cannot run);
    ``"torch"`` runs the reference path.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine '{engine}'; choose one of {list(ENGINES)}", field="engine")
    q_np, p_np = check_initial_conditions(q0, p0, model.dof)
    check_system(system, model)
    times = check_times(times)
    is_adaptive = integrator == adaptive.NAME
    if tolerances is not None and not is_adaptive:
        raise ConfigError(f"tolerances apply to integrator '{adaptive.NAME}' only", field="rtol")
    tol = (tolerances or adaptive.default_tolerances(model.dtype)).checked(model.dtype) if is_adaptive else None
    if isinstance(integrator, str) and not is_adaptive:
        if integrator not in INTEGRATORS:
            raise ConfigError(f"unknown integrator '{integrator}'; choose one of {list(PREDICT_INTEGRATORS)}",
                              field="integrator")
        integrator = get_integrator(integrator)
    fast = _fastpath() if engine != "torch" else None
    # "auto" does not wait for a background warm-up (`hinn serve` starts one): torch meanwhile
    waiting = engine == "auto" and fast is not None and fast.is_warming()
    evaluations = None
    can = fast is not None and (fast.supports_adaptive(model) if is_adaptive else fast.supports(model, integrator))
    if can and not waiting:
        if tol is not None:
            q_f, p_f, H_f, evaluations = fast.rollout_rk45(model, q_np, p_np, times, tol)
        else:
            q_f, p_f, H_f = fast.rollout(model, q_np, p_np, np.diff(times), integrator)
        q_out, p_out = q_f.astype(np.float64, copy=False), p_f.astype(np.float64, copy=False)
        H_out = H_f.astype(np.float64, copy=False) if H_f is not None else None
    elif engine == "numba":
        why = "numba is not installed" if fast is None else "it runs CPU models with the built-in integrators only"
        raise ConfigError(f"the compiled engine cannot run this prediction: {why}; use engine='auto'",
                          field="engine")
    else:
        kw = {"dtype": model.dtype, "device": model.device}
        q0_t, p0_t = torch.as_tensor(q_np, **kw), torch.as_tensor(p_np, **kw)
        if tol is not None:
            X, evaluations = adaptive.rk45(adaptive.field_of(model.dynamics(), model.dof),
                                           torch.cat([q0_t, p0_t], dim=-1), times, tol)
            q, p = X[..., :model.dof], X[..., model.dof:]
        else:
            q, p = model.rollout(q0_t, p0_t, torch.as_tensor(np.diff(times), **kw), integrator)
        B, T1, n = q.shape
        H = model.hamiltonian(q.reshape(-1, n), p.reshape(-1, n))
        q_out = q.double().cpu().numpy()
        p_out = p.double().cpu().numpy()
        H_out = H.double().cpu().numpy().reshape(B, T1) if H is not None else None
    H_true = None
    if system is not None:
        with np.errstate(over="ignore", invalid="ignore"):  # a state too large for the true H: inf, for the caller
            H_true = np.asarray(system.hamiltonian(q_out, p_out), dtype=np.float64)
    return Prediction(times, q_out, p_out, H_out, H_true, evaluations)
