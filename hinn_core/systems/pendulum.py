"""Ideal pendulum: H = p²/(2 m l²) + m g l (1 − cos q), a nonlinear 1-dof system."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from hinn_core.systems.base import Parameter, System, uniform_radius_sampler, xp


class Pendulum(System):
    """Point mass on a massless rod; q is the angle from the downward vertical.

    Initial conditions: (q, p) on a random direction at radius ~ U[r_min, r_max] (below the
    separatrix for the defaults, so every sampled trajectory librates).
    Reference: DOP853 at rtol = atol = 1e-12.
    """

    name: ClassVar[str] = "pendulum"
    dof: ClassVar[int] = 1
    hamiltonian_text: ClassVar[str] = "H = p^2/(2 m l^2) + m g l (1 - cos q)"
    description: ClassVar[str] = "Ideal pendulum (nonlinear, librating orbits)"
    PARAMETERS: ClassVar[dict[str, Parameter]] = {
        "m": Parameter(1.0, "mass", minimum=1e-6),
        "l": Parameter(1.0, "rod length", minimum=1e-6),
        "g": Parameter(1.0, "gravitational acceleration", minimum=0.0),
        "r_min": Parameter(0.3, "smallest phase-space radius of sampled initial conditions", minimum=0.0),
        "r_max": Parameter(1.5, "largest phase-space radius of sampled initial conditions", minimum=0.0),
    }

    def hamiltonian(self, q: Any, p: Any) -> Any:
        m, l, g = self.m, self.l, self.g
        return (p**2).sum(-1) / (2 * m * l**2) + m * g * l * (1 - xp(q).cos(q)).sum(-1)

    def grad(self, q: Any, p: Any) -> tuple[Any, Any]:
        m, l, g = self.m, self.l, self.g
        return m * g * l * xp(q).sin(q), p / (m * l**2)

    def sample_initial_conditions(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return uniform_radius_sampler(n, self.dof, rng, self.r_min, self.r_max)
