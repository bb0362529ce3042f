"""The benchmark tasks: HNN's four protocols (Greydanus et al. 2019, as its reference code runs
them; see shared/benchmarks/hnn-protocol.md) and the original study's next steps.

Each task fixes the data exactly as the protocol does (H, initial-condition sampler, time grid,
noise on the observations, trajectory counts, split) and the protocol's energy evaluation
(fresh initial conditions, horizon, number of points, the energy function it scores).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hinn_core import TrajectoryDataset, generate_dataset, make_system
from hinn_core.systems import System

#: published Table 1 (energy MSE) of Greydanus et al. 2019
PUBLISHED = {
    "spring": {"baseline": 1.7077e-01, "hnn": 3.8416e-04},
    "pendulum": {"baseline": 4.1519e-02, "hnn": 2.4852e-02},
    "two-body": {"baseline": 6.3276e-02, "hnn": 3.8751e-05},
    "three-body": {"baseline": 1.0906e02, "hnn": 4.1926e-02},
}


def _signed_uniform(n: int, dof: int, rng: np.random.Generator, lo: float, hi: float) -> tuple[np.ndarray, ...]:
    """Each component ±U[lo, hi] (the protocol's energy-evaluation sampler for spring and pendulum)."""
    y = rng.uniform(lo, hi, size=(n, 2 * dof)) * rng.choice([-1.0, 1.0], size=(n, 2 * dof))
    return y[:, :dof], y[:, dof:]


@dataclass
class Task:
    name: str
    system: System
    n_trajectories: int
    n_train: int
    t_end: float
    n_points: int
    noise_std: float
    eval_t_end: float
    eval_points: int
    #: the protocol's own energy for its metric (spring/pendulum: q² + p²; n-body: the true H)
    protocol_energy: Callable[[np.ndarray, np.ndarray], np.ndarray]
    eval_sampler: Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = None
    dt_jitter: float = 0.0
    hnn_baseline: str | None = None  # the published row this task is compared with
    notes: str = ""
    train_overrides: dict[str, Any] = field(default_factory=dict)
    #: ModelSpec settings a user of this kind of data must choose (not tuning: e.g. a non-separable H)
    spec_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def dt(self) -> float:
        return self.t_end / (self.n_points - 1)

    def data(self, seed: int, noise_std: float | None = None) -> tuple[TrajectoryDataset, TrajectoryDataset]:
        """(train, test) split by trajectory; noisy observations, as the protocol feeds its models."""
        ds = generate_dataset(self.system, self.n_trajectories, self.t_end, self.dt, dt_jitter=self.dt_jitter,
                              noise_std=self.noise_std if noise_std is None else noise_std, seed=seed)
        train_set = ds.subset(range(self.n_train))
        test_set = ds.subset(range(self.n_train, self.n_trajectories))
        return train_set, test_set

    def eval_initial_conditions(self, seed: int, n: int = 15) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(10_000 + seed)
        if self.eval_sampler is not None:
            return self.eval_sampler(n, rng)
        return self.system.sample_initial_conditions(n, rng)


def _sum_squares(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (q**2).sum(-1) + (p**2).sum(-1)


def hnn_tasks() -> dict[str, Task]:
    spring = make_system("spring", {"m": 0.5, "k": 2.0})  # H = q² + p²
    pendulum = make_system("pendulum", {"m": 0.5, "l": 1.0, "g": 6.0, "r_min": 1.3, "r_max": 2.3})  # 3(1-cos q)+p²
    two = make_system("two-body")
    three = make_system("three-body")
    return {
        "spring": Task("spring", spring, 50, 25, 3.0, 30, 0.1, 20.0, 100, _sum_squares,
                       lambda n, rng: _signed_uniform(n, 1, rng, 0.2, 1.0), hnn_baseline="spring"),
        "pendulum": Task("pendulum", pendulum, 50, 25, 3.0, 45, 0.1, 20.0, 100, _sum_squares,
                         lambda n, rng: _signed_uniform(n, 1, rng, 0.2, 1.0), hnn_baseline="pendulum",
                         notes="protocol metric scores q²+p², not the pendulum's energy; true-H column is fair"),
        "two-body": Task("two-body", two, 1000, 800, 20.0, 50, 0.0, 25.0, 500, two.hamiltonian,
                         hnn_baseline="two-body"),
        "three-body": Task("three-body", three, 5000, 4000, 5.0, 20, 0.0, 3.0, 500, three.hamiltonian,
                           hnn_baseline="three-body"),
    }


def extra_tasks() -> dict[str, Task]:
    base = hnn_tasks()
    out: dict[str, Task] = {}
    for name in ("spring", "two-body"):
        t = base[name]
        out[f"{name}-variable-dt"] = Task(**{**t.__dict__, "name": f"{name}-variable-dt", "dt_jitter": 0.5,
                                             "notes": "irregular sample times: each step dt·(1 ± 0.5·U)"})
    for name in ("spring", "pendulum"):
        for sigma in (0.0, 0.01, 0.05):  # 0.1 is the protocol task itself
            t = base[name]
            out[f"{name}-noise-{sigma:g}"] = Task(**{**t.__dict__, "name": f"{name}-noise-{sigma:g}",
                                                     "noise_std": sigma})
    ns = make_system("nonseparable")
    out["nonseparable"] = Task("nonseparable", ns, 50, 25, 3.0, 30, 0.0, 20.0, 100, ns.hamiltonian,
                               notes="H = (q²+1)(p²+1)/2; no published HNN number; hinn uses the general "
                                     "H(q, p) (architecture 'hinn', implicit midpoint): a separable H cannot fit it",
                               spec_overrides={"architecture": "hinn"})
    return out
