"""A non-separable test Hamiltonian: H = ½ (q² + 1)(p² + 1).

Explicit symplectic (leapfrog-type) integrators assume H = T(p) + V(q); this system breaks that
assumption, so it separates integrators that need separability from those that do not.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from hinn_core.systems.base import Parameter, System, uniform_radius_sampler


class NonSeparable(System):
    """H = ½ (|q|² + 1)(|p|² + 1) with dof 1; bounded orbits around the origin.

    Initial conditions: (q, p) on a random direction at radius ~ U[r_min, r_max].
    Reference: DOP853 at rtol = atol = 1e-12.
    """

    name: ClassVar[str] = "nonseparable"
    dof: ClassVar[int] = 1
    hamiltonian_text: ClassVar[str] = "H = (q^2 + 1)(p^2 + 1)/2"
    description: ClassVar[str] = "Non-separable H: q and p are coupled, explicit leapfrog does not apply"
    separable: ClassVar[bool] = False
    PARAMETERS: ClassVar[dict[str, Parameter]] = {
        "r_min": Parameter(0.1, "smallest phase-space radius of sampled initial conditions", minimum=0.0),
        "r_max": Parameter(1.0, "largest phase-space radius of sampled initial conditions", minimum=0.0),
    }

    def hamiltonian(self, q: Any, p: Any) -> Any:
        return ((q**2).sum(-1) + 1) * ((p**2).sum(-1) + 1) / 2

    def grad(self, q: Any, p: Any) -> tuple[Any, Any]:
        a = ((q**2).sum(-1) + 1)[..., None]
        b = ((p**2).sum(-1) + 1)[..., None]
        return q * b, p * a

    def sample_initial_conditions(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return uniform_radius_sampler(n, self.dof, rng, self.r_min, self.r_max)
