"""Evaluation of a trained model on held-out trajectories (and against the truth when known).

Metrics (all plain floats, JSON-ready):

- ``rollout_mse`` (and ``_q``/``_p``): each held-out trajectory rolled out from its first
  observed state on its own time stamps, MSE against the observations over the data horizon;
- ``long_horizon`` (known system only): the same initial states rolled out ``horizon_factor``×
  longer on the mean step; state MSE against the reference solution and the relative error of
  the *true* energy along the model's trajectory (max over time; mean and max over ICs);
- ``learned_energy_drift``: max |H_θ(x_t) − H_θ(x_0)| along the model's own long rollout,
  relative to the spread of H_θ over the test states (0 for an exactly conserved H_θ);
- ``conserved_drift`` (n-body): max deviation of total momentum and angular momentum.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from hinn_core.data import TrajectoryDataset, check_real
from hinn_core.errors import ConfigError
from hinn_core.models import DynamicsModel
from hinn_core.rollout import check_system, predict
from hinn_core.systems import System


def _group_by_times(ds: TrajectoryDataset) -> dict[bytes, list[int]]:
    groups: dict[bytes, list[int]] = defaultdict(list)
    for i, tr in enumerate(ds.trajectories):
        groups[tr.t.tobytes()].append(i)
    return groups


@torch.no_grad()
def rollout_errors(model: DynamicsModel, ds: TrajectoryDataset) -> dict[str, float]:
    """MSE of full-horizon rollouts from each trajectory's first state (batched per time grid)."""
    sq_q, sq_p, count = 0.0, 0.0, 0
    for idx in _group_by_times(ds).values():
        trs = [ds.trajectories[i] for i in idx]
        q0 = np.stack([tr.q[0] for tr in trs])
        p0 = np.stack([tr.p[0] for tr in trs])
        pred = predict(model, q0, p0, trs[0].t)
        q_obs = np.stack([tr.q for tr in trs])
        p_obs = np.stack([tr.p for tr in trs])
        sq_q += float(((pred.q - q_obs) ** 2).sum())
        sq_p += float(((pred.p - p_obs) ** 2).sum())
        count += q_obs.size
    return {
        "rollout_mse": (sq_q + sq_p) / (2 * count),
        "rollout_mse_q": sq_q / count,
        "rollout_mse_p": sq_p / count,
    }


def evaluate(
    model: DynamicsModel,
    test: TrajectoryDataset,
    system: System | None = None,
    *,
    horizon_factor: float = 10.0,
    max_long_trajectories: int = 32,
) -> dict[str, Any]:
    """All metrics of the module docstring for ``test`` (``system`` defaults to the data's own)."""
    system = system if system is not None else test.system
    if isinstance(max_long_trajectories, bool) or not (isinstance(max_long_trajectories, int)
                                                       and max_long_trajectories >= 1):
        raise ConfigError(f"must be an integer >= 1, got {max_long_trajectories!r}", field="max_long_trajectories")
    horizon_factor = check_real(horizon_factor, "horizon_factor", ConfigError)
    if not (math.isfinite(horizon_factor) and horizon_factor > 0):
        raise ConfigError(f"must be a finite number > 0, got {horizon_factor!r}", field="horizon_factor")
    check_system(system, model)  # before the rollouts below
    metrics: dict[str, Any] = {"n_test_trajectories": len(test), **rollout_errors(model, test)}

    trs = test.trajectories[:max_long_trajectories]
    q0 = np.stack([tr.q[0] for tr in trs])
    p0 = np.stack([tr.p[0] for tr in trs])
    span = float(np.mean([tr.t[-1] - tr.t[0] for tr in trs]))
    dt = float(np.mean(np.concatenate([tr.steps for tr in trs])))
    n_steps = max(1, int(round(horizon_factor * span / dt)))
    times = dt * np.arange(n_steps + 1, dtype=np.float64)
    pred = predict(model, q0, p0, times, system=system)

    if pred.H is not None:
        spread = float(np.std(pred.H[:, 0])) if len(trs) > 1 else 0.0
        spread = spread if spread > 0 else max(float(np.abs(pred.H).max()), 1e-12)
        drift = np.abs(pred.H - pred.H[:, :1]).max()
        metrics["learned_energy_drift"] = float(drift / spread)

    if system is not None:
        q_ref, p_ref = system.solve(q0, p0, times)
        state_mse = float((((pred.q - q_ref) ** 2).mean() + ((pred.p - p_ref) ** 2).mean()) / 2)
        e_model = np.asarray(system.hamiltonian(pred.q, pred.p))
        e0 = np.asarray(system.hamiltonian(q0, p0))[:, None]
        rel = np.abs(e_model - e0).max(axis=1) / np.maximum(np.abs(e0[:, 0]), 1e-12)
        metrics["long_horizon"] = {
            "t_end": float(times[-1]),
            "dt": dt,
            "n_trajectories": len(trs),
            "state_mse": state_mse,
            "energy_rel_error_mean": float(rel.mean()),
            "energy_rel_error_max": float(rel.max()),
        }
        conserved = system.conserved(pred.q, pred.p)
        drifts = {
            key: float(np.abs(np.asarray(v) - np.asarray(v)[:, :1]).max())
            for key, v in conserved.items()
            if key != "energy"
        }
        if drifts:
            metrics["conserved_drift"] = drifts
    return metrics
