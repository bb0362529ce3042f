"""The one interface integrators see: a vector field (dq/dt, dp/dt) and its Jacobian.

`HamiltonianDynamics` turns anything with ``grad(q, p)`` (and ``hessian`` for implicit steps)
into (∂H/∂p, −∂H/∂q); `VectorFieldDynamics` wraps the unconstrained baseline; `SystemDynamics`
wraps a known `System` (exact gradient, autograd Hessian) for tests and references.

``separable`` promises that dq/dt depends on p only and dp/dt on q only; explicit partitioned
schemes (symplectic Euler, leapfrog) are then explicit, otherwise they solve their implicit
stages by Newton.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor


class Dynamics(Protocol):
    separable: bool

    def rates(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """(dq/dt, dp/dt), each ``(N, dof)``."""

    def dq_dt(self, q: Tensor, p: Tensor) -> Tensor: ...

    def dp_dt(self, q: Tensor, p: Tensor) -> Tensor: ...

    def jacobian(self, q: Tensor, p: Tensor) -> Tensor:
        """∂(dq/dt, dp/dt)/∂(q, p), ``(N, 2·dof, 2·dof)``, rows = rate components."""


def _hamiltonian_jacobian(hess: Tensor, dof: int) -> Tensor:
    """J·∇²H for J = [[0, I], [−I, 0]]: rows (∂²H/∂p∂·, −∂²H/∂q∂·)."""
    return torch.cat([hess[:, dof:, :], -hess[:, :dof, :]], dim=1)


class HamiltonianDynamics:
    """(dq/dt, dp/dt) = (∂H/∂p, −∂H/∂q) for a net or function with ``grad`` and ``hessian``."""

    def __init__(self, field: Any) -> None:
        self.field = field
        self.separable = bool(getattr(field, "separable", False))
        self.dof = field.dof

    def rates(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        dHdq, dHdp = self.field.grad(q, p)
        return dHdp, -dHdq

    def dq_dt(self, q: Tensor, p: Tensor) -> Tensor:
        if self.separable and hasattr(self.field, "grad_p"):
            return self.field.grad_p(p)
        return self.field.grad(q, p)[1]

    def dp_dt(self, q: Tensor, p: Tensor) -> Tensor:
        if self.separable and hasattr(self.field, "grad_q"):
            return -self.field.grad_q(q)
        return -self.field.grad(q, p)[0]

    def jacobian(self, q: Tensor, p: Tensor) -> Tensor:
        return _hamiltonian_jacobian(self.field.hessian(q, p), self.dof)

    def rates_and_jacobian(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rates and Jacobian from one sweep when the field can (H nets), else two calls."""
        fused = getattr(self.field, "grad_and_hessian", None)
        if fused is None:
            dq, dp = self.rates(q, p)
            return dq, dp, self.jacobian(q, p)
        dHdq, dHdp, hess = fused(q, p)
        return dHdp, -dHdq, _hamiltonian_jacobian(hess, self.dof)


class VectorFieldDynamics:
    """The unconstrained baseline field; never separable."""

    separable = False

    def __init__(self, field: Any) -> None:
        self.field = field
        self.dof = field.dof

    def rates(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return self.field.rates(q, p)

    def dq_dt(self, q: Tensor, p: Tensor) -> Tensor:
        return self.field.rates(q, p)[0]

    def dp_dt(self, q: Tensor, p: Tensor) -> Tensor:
        return self.field.rates(q, p)[1]

    def jacobian(self, q: Tensor, p: Tensor) -> Tensor:
        return self.field.jacobian(q, p)


class SystemDynamics(HamiltonianDynamics):
    """A known `System` in torch: exact gradient, Hessian by autograd (tests, references)."""

    def __init__(self, system: Any) -> None:
        self.system = system
        self.separable = bool(system.separable)
        self.dof = system.dof
        self.field = self

    def grad(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return self.system.grad(q, p)

    def grad_q(self, q: Tensor) -> Tensor:  # separable systems: ∂H/∂q ignores p
        return self.system.grad(q, torch.zeros_like(q))[0]

    def grad_p(self, p: Tensor) -> Tensor:
        return self.system.grad(torch.zeros_like(p), p)[1]

    def hessian(self, q: Tensor, p: Tensor) -> Tensor:
        x = torch.cat([q, p], dim=-1)
        n = self.dof

        def h_single(xi: Tensor) -> Tensor:
            return self.system.hamiltonian(xi[None, :n], xi[None, n:])[0]

        return torch.vmap(torch.func.hessian(h_single))(x)
