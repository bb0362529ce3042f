"""Hénon–Heiles: H = ½(px² + py²) + ½(x² + y²) + x²y − y³/3, bounded and chaotic below E = 1/6."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from hinn_core.errors import ConfigError
from hinn_core.systems.base import Parameter, System, xp

#: Energy of the three saddles; orbits above it can escape to infinity.
ESCAPE_ENERGY = 1.0 / 6.0


def _potential(x: Any, y: Any) -> Any:
    return (x**2 + y**2) / 2 + x**2 * y - y**3 / 3


class HenonHeiles(System):
    """Star in an axisymmetric galactic potential (Hénon & Heiles 1964); q = (x, y), p = (px, py).

    Initial conditions: E ~ U[e_min, e_max]; (x, y) uniform in the bounded region V < E (inside
    the triangle whose vertices are the saddles), p in a uniform direction with |p| = sqrt(2(E − V)).
    Reference: DOP853 at rtol = atol = 1e-12.
    """

    name: ClassVar[str] = "henon-heiles"
    dof: ClassVar[int] = 2
    hamiltonian_text: ClassVar[str] = "H = (px^2 + py^2)/2 + (x^2 + y^2)/2 + x^2 y - y^3/3"
    description: ClassVar[str] = "Henon-Heiles galactic potential; regular and chaotic orbits below E = 1/6"
    PARAMETERS: ClassVar[dict[str, Parameter]] = {
        "e_min": Parameter(0.02, "smallest energy of sampled initial conditions", minimum=1e-6),
        "e_max": Parameter(1.0 / 12.0, "largest energy of sampled initial conditions (< 1/6)", minimum=1e-6),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.e_max < ESCAPE_ENERGY:
            raise ConfigError(
                f"must be below the escape energy 1/6 (orbits above it are unbounded), got {self.e_max!r}",
                field="parameters.e_max",
            )
        if self.e_min > self.e_max:
            raise ConfigError(
                f"must be <= e_max = {self.e_max!r}, got {self.e_min!r}", field="parameters.e_min"
            )

    def hamiltonian(self, q: Any, p: Any) -> Any:
        return (p**2).sum(-1) / 2 + _potential(q[..., 0], q[..., 1])

    def grad(self, q: Any, p: Any) -> tuple[Any, Any]:
        x, y = q[..., 0], q[..., 1]
        return xp(q).stack([x + 2 * x * y, y + x**2 - y**2]), p

    def sample_initial_conditions(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        energy = rng.uniform(self.e_min, self.e_max, size=n)
        # Inside the triangle r <= 1, so V >= r²/2 − r³/3 >= r²/6: V < E implies |x|, |y| < sqrt(6E).
        # Rejection in that smaller box has the same distribution as in [−1, 1]², at a rate ~π/12.
        half = np.minimum(1.0, np.sqrt(6.0 * energy))
        xy = np.empty((n, 2))
        todo = np.arange(n)
        while todo.size:
            cand = rng.uniform(-1.0, 1.0, size=(todo.size, 2)) * half[todo, None]
            x, y = cand[:, 0], cand[:, 1]
            inside = (y > -0.5) & (y < 1.0 - np.sqrt(3.0) * np.abs(x))
            ok = inside & (_potential(x, y) < energy[todo])
            xy[todo[ok]] = cand[ok]
            todo = todo[~ok]
        speed = np.sqrt(2.0 * np.maximum(energy - _potential(xy[:, 0], xy[:, 1]), 0.0))
        angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
        p = speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        return xy, p
