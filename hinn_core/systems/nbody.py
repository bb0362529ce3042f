"""Planar gravitational n-body systems: two-body and three-body (HNN's benchmarks).

State layout: ``q = (x1, y1, x2, y2, ...)`` and ``p = (px1, py1, px2, py2, ...)`` with p_i = m_i v_i;
H = Σ |p_i|²/(2 m_i) − Σ_{i<j} G m_i m_j / |q_i − q_j|. Besides the energy, total momentum and
angular momentum are conserved and reported by `conserved`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from hinn_core.errors import ConfigError
from hinn_core.systems.base import Parameter, System, xp


def _rotate(v: np.ndarray, theta: float) -> np.ndarray:
    """Rotate 2-vectors ``(..., 2)`` counter-clockwise by ``theta``."""
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)


def _mass_params(n: int) -> dict[str, Parameter]:
    return {f"m{i + 1}": Parameter(1.0, f"mass of body {i + 1}", minimum=1e-6) for i in range(n)}


class NBody(System):
    """Shared physics of the planar n-body problem; subclasses set ``n_bodies`` and the sampler."""

    n_bodies: ClassVar[int]

    @property
    def masses(self) -> tuple[float, ...]:
        return tuple(self.params[f"m{i + 1}"] for i in range(self.n_bodies))

    def hamiltonian(self, q: Any, p: Any) -> Any:
        m, G = self.masses, self.G
        h = 0.0
        for i in range(self.n_bodies):
            h = h + (p[..., 2 * i] ** 2 + p[..., 2 * i + 1] ** 2) / (2 * m[i])
            for j in range(i + 1, self.n_bodies):
                dx, dy = q[..., 2 * i] - q[..., 2 * j], q[..., 2 * i + 1] - q[..., 2 * j + 1]
                h = h - G * m[i] * m[j] / xp(q).sqrt(dx**2 + dy**2)
        return h

    def grad(self, q: Any, p: Any) -> tuple[Any, Any]:
        m, G, n = self.masses, self.G, self.n_bodies
        dq: list[Any] = [0.0] * (2 * n)
        for i in range(n):
            for j in range(i + 1, n):
                dx, dy = q[..., 2 * i] - q[..., 2 * j], q[..., 2 * i + 1] - q[..., 2 * j + 1]
                f = G * m[i] * m[j] / xp(q).sqrt(dx**2 + dy**2) ** 3  # ∂V/∂q_i = f (q_i − q_j)
                dq[2 * i], dq[2 * i + 1] = dq[2 * i] + f * dx, dq[2 * i + 1] + f * dy
                dq[2 * j], dq[2 * j + 1] = dq[2 * j] - f * dx, dq[2 * j + 1] - f * dy
        dp = [p[..., k] / m[k // 2] for k in range(2 * n)]
        ns = xp(q)
        return ns.stack(dq), ns.stack(dp)

    def conserved(self, q: Any, p: Any) -> dict[str, Any]:
        """Energy, total momentum (x, y) and angular momentum Σ x_i p_yi − y_i p_xi, each ``(...)``."""
        px, py = p[..., 0::2], p[..., 1::2]
        return {
            "energy": self.hamiltonian(q, p),
            "momentum_x": px.sum(-1),
            "momentum_y": py.sum(-1),
            "angular_momentum": (q[..., 0::2] * py - q[..., 1::2] * px).sum(-1),
        }

    def _states(self, pos: list[np.ndarray], vel: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Positions/velocities per body, each ``(n, 2)`` → ``(q, p)`` each ``(n, 2·n_bodies)``."""
        q = np.concatenate(pos, axis=1)
        p = np.concatenate([m * v for m, v in zip(self.masses, vel, strict=True)], axis=1)
        return q, p


class TwoBody(NBody):
    """Two bodies on nearly circular orbits about their centre of mass (HNN's "2-body" task).

    Initial conditions as in Greydanus et al.'s reference code (G = m1 = m2 = 1): position of body 1
    ~ U[r_min, r_max]², body 2 mirrored through the origin, the circular orbit's velocities scaled by
    (1 + orbit_noise·N(0, 1)). For other G and masses the same separation 2·pos is kept, placed about
    the centre of mass (q1 = 2·m2/M·pos, q2 = −2·m1/M·pos), with the circular relative speed
    sqrt(G·M/|q1 − q2|) shared as m2/M and m1/M (zero total momentum); with the defaults every factor
    is exactly 1, the reference's numbers. Reference: DOP853 at rtol = atol = 1e-12.
    """

    name: ClassVar[str] = "two-body"
    dof: ClassVar[int] = 4
    n_bodies: ClassVar[int] = 2
    hamiltonian_text: ClassVar[str] = "H = |p1|^2/(2 m1) + |p2|^2/(2 m2) - G m1 m2 / |q1 - q2|"
    description: ClassVar[str] = "Planar gravitational two-body problem (nearly circular orbits)"
    PARAMETERS: ClassVar[dict[str, Parameter]] = {
        "G": Parameter(1.0, "gravitational constant", minimum=0.0),
        **_mass_params(2),
        "r_min": Parameter(0.5, "smallest coordinate of body 1's initial position", minimum=0.0),
        "r_max": Parameter(1.5, "largest coordinate of body 1's initial position", minimum=0.0),
        "orbit_noise": Parameter(0.05, "relative std of the perturbation of the circular speed", minimum=0.0),
    }

    def sample_initial_conditions(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pos = rng.uniform(self.r_min, self.r_max, size=(n, 2))
        r = np.linalg.norm(pos, axis=1, keepdims=True)
        vel = pos[:, ::-1] / (2 * r**1.5)  # body 1's circular velocity for G = m1 = m2 = 1
        vel[:, 0] *= -1
        vel *= 1 + self.orbit_noise * rng.standard_normal(size=(n, 1))
        m1, m2 = self.masses
        total = m1 + m2
        speed = float(np.sqrt(self.G * total / 2))  # the relative speed's factor over G·M = 2
        return self._states([pos * (2 * m2 / total), -pos * (2 * m1 / total)],
                            [vel * (speed * 2 * m2 / total), -vel * (speed * 2 * m1 / total)])


#: Chenciner & Montgomery's figure-eight choreography for m = G = 1 (Simó's digits).
FIGURE_EIGHT_X1 = (0.97000436, -0.24308753)
FIGURE_EIGHT_V3 = (-0.93240737, -0.86473146)
FIGURE_EIGHT_PERIOD = 6.32591398


class ThreeBody(NBody):
    """Three bodies: perturbed circular triangle orbits (HNN's "3-body") or the figure-eight.

    ``orbit="random"``: HNN's reference sampler — body 1 at a random direction and radius
    r ~ U[r_min, r_max], bodies 2 and 3 rotated by 2π/3 and 4π/3, circular-orbit velocities each
    scaled componentwise by 1 + nu·U[−1, 1). The circular orbit is Lagrange's rotating triangle for
    any G and masses (about the centre of mass, angular speed sqrt(G·M/d³)); G = m = 1 gives the
    reference's numbers. ``orbit="figure-eight"``: points at uniformly random
    phases of the figure-eight choreography (equal masses; velocities and period rescaled by
    sqrt(G m) so it stays a solution for any G and common mass m).
    Reference: DOP853 at rtol = atol = 1e-12.
    """

    name: ClassVar[str] = "three-body"
    dof: ClassVar[int] = 6
    n_bodies: ClassVar[int] = 3
    hamiltonian_text: ClassVar[str] = "H = sum_i |p_i|^2/(2 m_i) - sum_{i<j} G m_i m_j / |q_i - q_j|"
    description: ClassVar[str] = "Planar gravitational three-body problem (chaotic, or the figure-eight)"
    PARAMETERS: ClassVar[dict[str, Parameter]] = {
        "G": Parameter(1.0, "gravitational constant", minimum=0.0),
        **_mass_params(3),
        "r_min": Parameter(0.9, "smallest initial distance of the bodies from the origin", minimum=0.0),
        "r_max": Parameter(1.2, "largest initial distance of the bodies from the origin", minimum=0.0),
        "nu": Parameter(0.2, "relative size of the random velocity perturbation", minimum=0.0),
        "orbit": Parameter("random", "initial-condition family", choices=("random", "figure-eight")),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.orbit == "figure-eight" and len(set(self.masses)) != 1:
            raise ConfigError(
                "the figure-eight orbit needs equal masses m1 = m2 = m3", field="parameters.orbit"
            )
        if self.orbit == "figure-eight" and not self.G > 0:
            raise ConfigError("the figure-eight orbit needs G > 0", field="parameters.G")

    @property
    def figure_eight_period(self) -> float:
        """Period of the figure-eight for this G and (common) mass."""
        return FIGURE_EIGHT_PERIOD / float(np.sqrt(self.G * self.masses[0]))

    def figure_eight_state(self) -> tuple[np.ndarray, np.ndarray]:
        """The canonical figure-eight initial state ``(q, p)``, each ``(6,)``."""
        x1, v3 = np.array(FIGURE_EIGHT_X1), np.array(FIGURE_EIGHT_V3) * np.sqrt(self.G * self.masses[0])
        q, p = self._states([x1[None], -x1[None], np.zeros((1, 2))], [-v3[None] / 2, -v3[None] / 2, v3[None]])
        return q[0], p[0]

    def sample_initial_conditions(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.orbit == "figure-eight":
            return self._sample_figure_eight(n, rng)
        p1 = 2 * rng.random((n, 2)) - 1
        r = rng.uniform(self.r_min, self.r_max, size=(n, 1))
        p1 *= r / np.linalg.norm(p1, axis=1, keepdims=True)
        pos = [p1, _rotate(p1, 2 * np.pi / 3), _rotate(p1, 4 * np.pi / 3)]
        masses = self.masses
        total = sum(masses)
        # the triangle's angular speed is sqrt(G·M/d³), d = √3·r: the reference's factor for G = m = 1
        # times sqrt(G·M/3), which is exactly 1 there (so are its numbers)
        k = np.sqrt(np.sin(np.pi / 3) / (2 * np.cos(np.pi / 6) ** 2)) * np.sqrt(self.G * total / 3)
        if len(set(masses)) == 1:
            v1 = _rotate(p1, np.pi / 2) / r**1.5 * k
            vel = [v1, _rotate(v1, 2 * np.pi / 3), _rotate(v1, 4 * np.pi / 3)]
        else:  # Lagrange's triangle turns about the centre of mass
            centre = sum(m * x for m, x in zip(masses, pos, strict=True)) / total
            pos = [x - centre for x in pos]
            vel = [_rotate(x, np.pi / 2) / r**1.5 * k for x in pos]
        vel = [v * (1 + self.nu * (2 * rng.random((n, 2)) - 1)) for v in vel]
        return self._states(pos, vel)

    def _sample_figure_eight(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        phase = rng.uniform(0.0, self.figure_eight_period, size=n)
        times = np.unique(np.concatenate([[0.0], phase]))  # sorted, distinct: what t_eval needs
        q, p = self._solve_numerically(*self.figure_eight_state(), times)
        idx = np.searchsorted(times, phase)
        return q[idx], p[idx]
