"""Spring–mass (harmonic oscillator): H = p²/(2m) + k q²/2, with its analytic solution."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from hinn_core.systems.base import Parameter, System, uniform_radius_sampler


class Spring(System):
    """Ideal mass on a spring. Default m = k = 1, so H = (p² + q²)/2 and ω = 1.

    Initial conditions: (q, p) on a random direction at radius ~ U[r_min, r_max].
    Reference: the exact solution q(t) = q0 cos ωt + p0/(mω) sin ωt.
    """

    name: ClassVar[str] = "spring"
    dof: ClassVar[int] = 1
    hamiltonian_text: ClassVar[str] = "H = p^2/(2m) + k q^2/2"
    description: ClassVar[str] = "Ideal spring-mass (harmonic oscillator); analytic solution"
    PARAMETERS: ClassVar[dict[str, Parameter]] = {
        "m": Parameter(1.0, "mass", minimum=1e-6),
        "k": Parameter(1.0, "spring constant", minimum=1e-6),
        "r_min": Parameter(0.1, "smallest phase-space radius of sampled initial conditions", minimum=0.0),
        "r_max": Parameter(1.0, "largest phase-space radius of sampled initial conditions", minimum=0.0),
    }

    def hamiltonian(self, q: Any, p: Any) -> Any:
        return (p**2).sum(-1) / (2 * self.m) + self.k * (q**2).sum(-1) / 2

    def grad(self, q: Any, p: Any) -> tuple[Any, Any]:
        return self.k * q, p / self.m

    def sample_initial_conditions(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return uniform_radius_sampler(n, self.dof, rng, self.r_min, self.r_max)

    @property
    def omega(self) -> float:
        return float(np.sqrt(self.k / self.m))

    def solve(self, q0: np.ndarray, p0: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q0 = np.asarray(q0, dtype=np.float64)[..., None, :]
        p0 = np.asarray(p0, dtype=np.float64)[..., None, :]
        tau = (np.asarray(times, dtype=np.float64) - float(times[0]))[:, None]
        w, m = self.omega, self.m
        c, s = np.cos(w * tau), np.sin(w * tau)
        return q0 * c + p0 / (m * w) * s, -m * w * q0 * s + p0 * c
