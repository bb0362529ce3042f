"""Time steppers with one interface and per-step sizes, so variable steps work everywhere.

``step(dyn, q, p, h)`` advances ``q, p: (B, dof)`` by ``h: (B, 1)`` (or a scalar);
`integrate` applies it over ``h: (T,)`` or ``(B, T)`` and returns ``(B, T+1, dof)``.

Implicit stages are solved by Newton's method with the field's Jacobian (for H_θ: J·∇²H from
hessQuik). The iterations run without autograd; when gradients are on, one more Newton step
is taken on the graph from the converged point. By the implicit function theorem that single
step carries the exact derivative of the solution with respect to the inputs and weights, so
training through implicit schemes costs one differentiable step, not one per iteration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from hinn_core.dynamics import Dynamics
from hinn_core.errors import ConfigError, DataError, IntegrationError

NEWTON_MAX_ITER = 30


def _newton_tol(z: Tensor) -> float:
    return 1e-12 if z.dtype == torch.float64 else 1e-6


def _newton_correction(j: Tensor, r: Tensor) -> Tensor:
    """``j⁻¹ r`` for ``j: (B, d, d)``, ``r: (B, d)``; a singular ``j`` is an `IntegrationError`."""
    try:
        return torch.linalg.solve(j, r.unsqueeze(-1)).squeeze(-1)
    except torch.linalg.LinAlgError as exc:
        raise IntegrationError("implicit step hit a singular Newton Jacobian; try a smaller dt") from exc


def newton_solve(
    residual: Callable[[Tensor], Tensor],
    jac: Callable[[Tensor], Tensor],
    z0: Tensor,
    fused: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
) -> Tensor:
    """Solve ``residual(z) = 0`` for ``z: (B, d)``; ``jac(z): (B, d, d)`` is ∂residual/∂z.

    ``fused(z)`` may return both at once (one network sweep instead of two). Converges to
    ``|Δz| ≤ tol·(1 + |z|)`` (tol 1e-12 in float64, 1e-6 in float32), else raises
    `IntegrationError`. With gradients on, the differentiable step reuses the last iteration's
    Jacobian: it differs from the one at the solution by O(tol), far below the training noise.
    """
    tol = _newton_tol(z0)
    z = z0.detach()
    j = None
    with torch.no_grad():
        for _ in range(NEWTON_MAX_ITER):
            r, j = fused(z) if fused is not None else (residual(z), jac(z))
            dz = _newton_correction(j, r)
            z = z - dz
            if not torch.isfinite(z).all():
                break
            if (dz.abs().amax() <= tol * (1.0 + z.abs().amax())).item():
                break
        else:
            raise IntegrationError(
                f"implicit step did not converge in {NEWTON_MAX_ITER} Newton iterations "
                f"(last correction {dz.abs().amax().item():.3g}); try a smaller dt"
            )
    if not torch.isfinite(z).all():
        raise IntegrationError("implicit step became non-finite; try a smaller dt")
    if torch.is_grad_enabled():
        z = z - _newton_correction(j, residual(z))
    return z


def _h3(h: Tensor | float) -> Tensor | float:
    """``h`` shaped to scale ``(B, d, d)`` Jacobians."""
    return h.unsqueeze(-1) if torch.is_tensor(h) and h.dim() > 0 else h


def rates_and_jacobian(dyn: Dynamics, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dq/dt, dp/dt, Jacobian) from one sweep when the dynamics offers it, else two calls."""
    fused = getattr(dyn, "rates_and_jacobian", None)
    if fused is not None:
        return fused(q, p)
    dq, dp = dyn.rates(q, p)
    return dq, dp, dyn.jacobian(q, p)


class Integrator(ABC):
    """One step of a one-step method for (dq/dt, dp/dt) = f(q, p)."""

    name: ClassVar[str]
    order: ClassVar[int]
    symplectic: ClassVar[bool]
    #: needs the field's Jacobian (Newton) even for separable fields
    implicit: ClassVar[bool] = False

    @abstractmethod
    def step(self, dyn: Dynamics, q: Tensor, p: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Advance by ``h`` (``(B, 1)`` or scalar)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Euler(Integrator):
    """Forward Euler on (q, p) together — the original HINN's explicit scheme.

    Order 1, not symplectic: energy grows steadily on oscillators. One field evaluation per step.
    """

    name = "euler"
    order = 1
    symplectic = False

    def step(self, dyn: Dynamics, q: Tensor, p: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        dq, dp = dyn.rates(q, p)
        return q + h * dq, p + h * dp


class SymplecticEuler(Integrator):
    """Symplectic Euler: p' = p + h·f_p(q, p'), q' = q + h·f_q(q, p').

    Order 1, symplectic. Explicit (one ∂H/∂q, one ∂H/∂p) for separable H; for non-separable H the
    p-stage is solved by Newton.
    """

    name = "symplectic_euler"
    order = 1
    symplectic = True

    def step(self, dyn: Dynamics, q: Tensor, p: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        if dyn.separable:
            p1 = p + h * dyn.dp_dt(q, p)
        else:
            n = q.shape[1]
            eye = torch.eye(n, dtype=q.dtype, device=q.device)
            hj = _h3(h)
            p1 = newton_solve(
                lambda P: P - p - h * dyn.dp_dt(q, P),
                lambda P: eye - hj * dyn.jacobian(q, P)[:, n:, n:],
                p + h * dyn.dp_dt(q, p),
            )
        return q + h * dyn.dq_dt(q, p1), p1


class Leapfrog(Integrator):
    """Störmer–Verlet, kick–drift–kick.

    Order 2, symplectic and time-reversible. For separable H = T(p) + V(q) it is explicit: two
    ∂H/∂q and one ∂H/∂p per step. For non-separable H it is the generalized Störmer–Verlet
    method (half-kick and drift implicit, solved by Newton), still order 2 and symplectic.
    """

    name = "leapfrog"
    order = 2
    symplectic = True

    def step(self, dyn: Dynamics, q: Tensor, p: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        half = 0.5 * h
        if dyn.separable:
            p_half = p + half * dyn.dp_dt(q, p)
            q1 = q + h * dyn.dq_dt(q, p_half)
            return q1, p_half + half * dyn.dp_dt(q1, p_half)
        n = q.shape[1]
        eye = torch.eye(n, dtype=q.dtype, device=q.device)
        hj = _h3(half)
        p_half = newton_solve(
            lambda P: P - p - half * dyn.dp_dt(q, P),
            lambda P: eye - hj * dyn.jacobian(q, P)[:, n:, n:],
            p + half * dyn.dp_dt(q, p),
        )
        v0 = dyn.dq_dt(q, p_half)
        q1 = newton_solve(
            lambda Q: Q - q - half * (v0 + dyn.dq_dt(Q, p_half)),
            lambda Q: eye - hj * dyn.jacobian(Q, p_half)[:, :n, :n],
            q + h * v0,
        )
        return q1, p_half + half * dyn.dp_dt(q1, p_half)


class ImplicitMidpoint(Integrator):
    """Implicit midpoint rule: x' = x + h·f((x + x')/2).

    Order 2, symplectic for any H (separable or not), time-reversible. Newton on the midpoint
    with the Jacobian J·∇²H (hessQuik Hessian); typically 3–5 iterations per step.
    """

    name = "implicit_midpoint"
    order = 2
    symplectic = True
    implicit = True

    def step(self, dyn: Dynamics, q: Tensor, p: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        n = q.shape[1]
        x = torch.cat([q, p], dim=1)
        eye = torch.eye(2 * n, dtype=q.dtype, device=q.device)
        half = 0.5 * h
        hj = _h3(half)

        def f(z: Tensor) -> Tensor:
            return torch.cat(dyn.rates(z[:, :n], z[:, n:]), dim=1)

        def fused(z: Tensor) -> tuple[Tensor, Tensor]:
            dq, dp, jz = rates_and_jacobian(dyn, z[:, :n], z[:, n:])
            return z - x - half * torch.cat([dq, dp], dim=1), eye - hj * jz

        mid = newton_solve(
            lambda z: z - x - half * f(z),
            lambda z: eye - hj * dyn.jacobian(z[:, :n], z[:, n:]),
            x + half * f(x),
            fused,
        )
        x1 = 2.0 * mid - x
        return x1[:, :n], x1[:, n:]


class RK4(Integrator):
    """Classical Runge–Kutta. Order 4, not symplectic: energy drifts slowly. Four evaluations."""

    name = "rk4"
    order = 4
    symplectic = False

    def step(self, dyn: Dynamics, q: Tensor, p: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        k1q, k1p = dyn.rates(q, p)
        k2q, k2p = dyn.rates(q + 0.5 * h * k1q, p + 0.5 * h * k1p)
        k3q, k3p = dyn.rates(q + 0.5 * h * k2q, p + 0.5 * h * k2p)
        k4q, k4p = dyn.rates(q + h * k3q, p + h * k3p)
        return (q + h / 6.0 * (k1q + 2 * k2q + 2 * k3q + k4q),
                p + h / 6.0 * (k1p + 2 * k2p + 2 * k3p + k4p))


INTEGRATORS: dict[str, type[Integrator]] = {
    cls.name: cls for cls in (Euler, SymplecticEuler, Leapfrog, ImplicitMidpoint, RK4)
}


def get_integrator(name: str) -> Integrator:
    try:
        return INTEGRATORS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown integrator '{name}'; choose one of {sorted(INTEGRATORS)}", field="integrator"
        ) from None


def _check_states_and_steps(q0: Tensor, p0: Tensor, h: Tensor) -> Tensor:
    """``h`` as ``(B, T)`` of the states' dtype and device; a `DataError` naming the argument whose
    type or shape is wrong (torch's own messages name neither)."""
    for name, x in (("q0", q0), ("p0", p0)):
        if not (isinstance(x, Tensor) and x.is_floating_point() and x.dim() == 2):
            what = f"a {x.dim()}-D {x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
            raise DataError(f"must be a 2-D floating-point tensor (B, dof), got {what}", field=name)
    if p0.shape != q0.shape or p0.dtype != q0.dtype or p0.device != q0.device:
        raise DataError(f"must match q0 ({tuple(q0.shape)}, {q0.dtype}, {q0.device}), got "
                        f"({tuple(p0.shape)}, {p0.dtype}, {p0.device})", field="p0")
    try:
        h = torch.as_tensor(h, dtype=q0.dtype, device=q0.device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"must be a tensor of step sizes: {e}", field="h") from None
    if h.dim() == 1:
        h = h.unsqueeze(0).expand(q0.shape[0], -1)
    if h.dim() != 2 or h.shape[0] != q0.shape[0]:
        raise DataError(f"must have shape (T,) or (B, T) with B = {q0.shape[0]}, got {tuple(h.shape)}", field="h")
    return h


def integrate(
    integrator: Integrator | str, dyn: Dynamics, q0: Tensor, p0: Tensor, h: Tensor
) -> tuple[Tensor, Tensor]:
    """Roll out from ``q0, p0: (B, dof)`` over steps ``h: (T,)`` (shared) or ``(B, T)``.

    Returns ``q, p: (B, T+1, dof)`` including the initial state. Raises `IntegrationError` naming
    the step where the state first became non-finite.
    """
    if isinstance(integrator, str):
        integrator = get_integrator(integrator)
    h = _check_states_and_steps(q0, p0, h)
    qs, ps = [q0], [p0]
    q, p = q0, p0
    for k in range(h.shape[1]):
        try:
            q, p = integrator.step(dyn, q, p, h[:, k : k + 1])
        except IntegrationError as exc:  # a failed Newton solve: name the step it happened in
            raise IntegrationError(f"step {k + 1} ({integrator.name}): {exc}") from exc
        qs.append(q)
        ps.append(p)
    q_all, p_all = torch.stack(qs, dim=1), torch.stack(ps, dim=1)
    if not (torch.isfinite(q_all).all() and torch.isfinite(p_all).all()):
        bad = ~(torch.isfinite(q_all).all(-1) & torch.isfinite(p_all).all(-1))
        k = int(bad.any(0).nonzero()[0])
        raise IntegrationError(
            f"state became non-finite at step {k} ({integrator.name}); try a smaller dt "
            "or integrator='implicit_midpoint'"
        )
    return q_all, p_all
