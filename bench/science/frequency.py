"""Errors-in-variables bias on noisy spring data: the learned oscillation frequency by amplitude.

    python -m bench.science.frequency [--seed 0]

The HNN protocol feeds noisy states to the network with exact derivatives as targets; its learned
spring frequency is 2.023 at radius 0.2 and 1.859 at radius 1.0 (truth: 2 everywhere;
shared/benchmarks/hnn-protocol.md). This trains HNN (the protocol), hinn with the observed noisy
window starts, and hinn with learned starts (the default recipe's noise handling) on the protocol's
spring data (σ = 0.1) and measures each model's frequency from upward zero crossings of q over
t ∈ [0, 20], started at (q, p) = (r, 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import numpy as np
import torch

from bench.science.run import fine_times, hinn_config, train_hnn
from bench.science.tasks import hnn_tasks
from hinn_core import ModelSpec, TrainConfig, predict, train
from hinn_core.models import DynamicsModel
from hinn_core.training import make_windows

RADII = (0.2, 0.6, 1.0, 1.4)
TRUE_OMEGA = 2.0  # H = q² + p²


def frequency(model: DynamicsModel, r: float, step: float, integrator: str | None) -> float:
    """ω from the mean period between upward zero crossings of q (linear interpolation)."""
    grid, _ = fine_times(np.linspace(0.0, 20.0, 201), step)
    q = predict(model, [[r]], [[0.0]], grid, integrator=integrator).q[0, :, 0]
    up = np.nonzero((q[:-1] < 0) & (q[1:] >= 0))[0]
    if len(up) < 2:
        return math.nan
    t = grid[up] - q[up] * (grid[up + 1] - grid[up]) / (q[up + 1] - q[up])
    return float(2 * math.pi / np.diff(t).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    task = hnn_tasks()["spring"]
    torch.manual_seed(args.seed)
    train_set, _ = task.data(args.seed)
    dof, dt = task.system.dof, task.dt
    models: dict[str, tuple[DynamicsModel, float, str | None]] = {}
    models["HNN (protocol)"] = (train_hnn(task, args.seed, train_set, False), dt / 4, "rk4")
    cfg = hinn_config(task, len(make_windows(train_set, TrainConfig().rollout_steps)), False)
    for start in ("observed", "learned"):
        models[f"hinn, {start} starts"] = (
            train(train_set, ModelSpec(dof=dof), dataclasses.replace(cfg, initial_state=start)).model, dt, None)
    print(f"learned spring frequency ω (truth {TRUE_OMEGA}), σ = {task.noise_std}, seed {args.seed}; "
          "training radii 0.1–1.0\n")
    print("| model | " + " | ".join(f"r = {r}" for r in RADII) + " | max relative error |")
    print("|---" * (len(RADII) + 2) + "|")
    for name, (model, step, integrator) in models.items():
        omegas = [frequency(model, r, step, integrator) for r in RADII]
        worst = max(abs(w / TRUE_OMEGA - 1) for w in omegas)
        print(f"| {name} | " + " | ".join(f"{w:.3f}" for w in omegas) + f" | {100 * worst:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
