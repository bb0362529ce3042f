"""Integrators: declared orders (uniform and variable steps, separable and not), long-time energy
behaviour, per-sample steps, exact gradients through Newton solves, and their errors.

Reference solutions: the spring's analytic `solve`, DOP853 (rtol = atol = 1e-12) for the
non-separable H = ½(q² + 1)(p² + 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from hinn_core.dynamics import HamiltonianDynamics, SystemDynamics
from hinn_core.errors import ConfigError, IntegrationError
from hinn_core.integrators import INTEGRATORS, get_integrator, integrate, newton_solve
from hinn_core.networks import HamiltonianNet
from hinn_core.systems import make_system

F64 = torch.float64
SYMPLECTIC = sorted(name for name, cls in INTEGRATORS.items() if cls.symplectic)
NON_SYMPLECTIC = sorted(name for name, cls in INTEGRATORS.items() if not cls.symplectic)
#: integrators that solve implicit stages by Newton for a non-separable H
NEWTON_INTEGRATORS = ["implicit_midpoint", "leapfrog", "symplectic_euler"]

#: SystemDynamics.hessian uses torch.func.hessian, whose forward-mode AD loads TorchScript
#: decompositions on first use and warns on torch ≥ 2.10; pytest turns warnings into errors.
pytestmark = pytest.mark.filterwarnings("ignore:.torch.jit.script. is deprecated:DeprecationWarning")


class ClosedFormHessian(SystemDynamics):
    """`SystemDynamics` with the closed-form ∇²H of the spring / non-separable system.

    `SystemDynamics.hessian` (vmap of torch.func.hessian) costs ~5 ms a call, too slow for the
    10⁴-step runs here; `test_closed_form_hessian_equals_system_dynamics_hessian` checks the
    two agree and `test_closed_form_hessian_rollouts_equal_system_dynamics_rollouts` that the
    rollouts are the same.
    """

    def hessian(self, q: Tensor, p: Tensor) -> Tensor:
        n, b = q.shape[1], q.shape[0]
        eye = torch.eye(n, dtype=q.dtype).expand(b, n, n)
        if self.system.name == "spring":
            diag = torch.cat([torch.full((n,), self.system.k), torch.full((n,), 1.0 / self.system.m)]).to(q.dtype)
            return torch.diag_embed(diag.expand(b, -1))
        assert self.system.name == "nonseparable"
        a = ((q**2).sum(-1) + 1)[:, None, None]
        c = ((p**2).sum(-1) + 1)[:, None, None]
        top = torch.cat([c * eye, 2 * q[:, :, None] * p[:, None, :]], dim=2)
        bottom = torch.cat([2 * p[:, :, None] * q[:, None, :], a * eye], dim=2)
        return torch.cat([top, bottom], dim=1)


def _dynamics(system: str) -> ClosedFormHessian:
    return ClosedFormHessian(make_system(system))


#: three initial states (B = 3, dof = 1), radius ≤ 1
Q0 = np.array([[0.8], [-0.3], [0.1]])
P0 = np.array([[0.1], [0.6], [-0.9]])


def _final_error(name: str, system: str, h: Tensor, horizon: float) -> float:
    """Max |x(T) − x_ref(T)| over the batch, for steps ``h: (T,)`` summing to ``horizon``."""
    sys_ = make_system(system)
    q_ref, p_ref = sys_.solve(Q0, P0, np.array([0.0, horizon]))
    with torch.no_grad():
        q, p = integrate(name, _dynamics(system), torch.tensor(Q0), torch.tensor(P0), h)
    return max(np.abs(q[:, -1].numpy() - q_ref[:, -1]).max(), np.abs(p[:, -1].numpy() - p_ref[:, -1]).max())


def _slope(hs: list[float], errors: list[float]) -> float:
    assert min(errors) > 1e-13, "error at round-off level: the step range is too fine"
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


# -- convergence orders --------------------------------------------------------------------------


def test_registry_declares_the_five_integrators_with_their_orders() -> None:
    orders = {name: cls.order for name, cls in INTEGRATORS.items()}
    assert orders == {"euler": 1, "symplectic_euler": 1, "leapfrog": 2, "implicit_midpoint": 2, "rk4": 4}
    assert SYMPLECTIC == ["implicit_midpoint", "leapfrog", "symplectic_euler"]


@pytest.mark.parametrize("name", sorted(INTEGRATORS))
def test_integrator_converges_at_its_declared_order(name: str) -> None:
    horizon, hs = 2.0, [0.2, 0.1, 0.05, 0.025]
    errors = [_final_error(name, "spring", torch.full((round(horizon / h),), h, dtype=F64), horizon) for h in hs]
    assert abs(_slope(hs, errors) - INTEGRATORS[name].order) <= 0.2


@pytest.mark.parametrize("name", sorted(INTEGRATORS))
def test_integrator_converges_at_its_declared_order_with_variable_steps(name: str) -> None:
    horizon = 2.0
    rng = np.random.default_rng(7)
    pattern = 1.0 + 0.5 * rng.uniform(-1.0, 1.0, size=10)
    coarse = torch.tensor(horizon * pattern / pattern.sum(), dtype=F64)  # 10 steps, 0.1 ≲ h ≲ 0.3
    assert coarse.max() / coarse.min() > 1.5  # genuinely non-uniform
    splits = [1, 2, 4, 8]
    errors = [_final_error(name, "spring", torch.repeat_interleave(coarse / s, s), horizon) for s in splits]
    hs = [horizon / (10 * s) for s in splits]
    assert abs(_slope(hs, errors) - INTEGRATORS[name].order) <= 0.2


@pytest.mark.parametrize("name", sorted(INTEGRATORS))
def test_integrator_converges_at_its_declared_order_on_a_non_separable_h(name: str) -> None:
    assert _dynamics("nonseparable").separable is False  # symplectic Euler, leapfrog take Newton paths
    horizon, hs = 1.0, [0.1, 0.05, 0.025, 0.0125]
    errors = [
        _final_error(name, "nonseparable", torch.full((round(horizon / h),), h, dtype=F64), horizon) for h in hs
    ]
    assert abs(_slope(hs, errors) - INTEGRATORS[name].order) <= 0.2


def test_closed_form_hessian_equals_system_dynamics_hessian() -> None:
    x = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    for system in ("spring", "nonseparable"):
        ref = SystemDynamics(make_system(system)).hessian(x[:, :1], x[:, 1:])
        assert (_dynamics(system).hessian(x[:, :1], x[:, 1:]) - ref).abs().max().item() < 1e-14


@pytest.mark.parametrize("name", NEWTON_INTEGRATORS)
def test_closed_form_hessian_rollouts_equal_system_dynamics_rollouts(name: str) -> None:
    h = torch.full((4,), 0.1, dtype=F64)
    q0, p0 = torch.tensor(Q0), torch.tensor(P0)
    with torch.no_grad():
        q_ref, p_ref = integrate(name, SystemDynamics(make_system("nonseparable")), q0, p0, h)
        q, p = integrate(name, _dynamics("nonseparable"), q0, p0, h)
    assert max((q - q_ref).abs().max().item(), (p - p_ref).abs().max().item()) < 1e-13


# -- long-time energy behaviour ------------------------------------------------------------------


def _energy_windows(name: str, system: str, steps: int, h: float, window: int) -> tuple[float, float]:
    """Max relative |E − E0| over the first and the last ``window`` steps."""
    sys_ = make_system(system)
    q0, p0 = torch.tensor(Q0), torch.tensor(P0)
    with torch.no_grad():
        q, p = integrate(name, _dynamics(system), q0, p0, torch.full((steps,), h, dtype=F64))
    energy = sys_.hamiltonian(q, p)  # (B, steps + 1)
    rel = ((energy - energy[:, :1]) / energy[:, :1]).abs()
    return rel[:, 1 : window + 1].max().item(), rel[:, -window:].max().item()


@pytest.mark.parametrize("name", SYMPLECTIC)
def test_symplectic_integrators_keep_energy_error_bounded_over_1e4_steps(name: str) -> None:
    first, last = _energy_windows(name, "spring", 10_000, 0.05, 1000)
    # implicit midpoint conserves the spring's quadratic H exactly: its error is round-off (~1e-15),
    # hence the absolute allowance
    assert last <= 1.5 * first + 1e-12
    assert last < 0.05


@pytest.mark.parametrize("name", NON_SYMPLECTIC)
def test_non_symplectic_integrators_drift_in_energy_over_1e4_steps(name: str) -> None:
    first, last = _energy_windows(name, "spring", 10_000, 0.05, 1000)
    assert first > 1e-12
    assert last >= 5 * first


@pytest.mark.parametrize("name", ["implicit_midpoint", "leapfrog"])
def test_symplectic_integrators_keep_non_separable_energy_bounded_over_2000_steps(name: str) -> None:
    first, last = _energy_windows(name, "nonseparable", 2000, 0.05, 200)
    assert first > 1e-8  # H is not quadratic: the error is truncation, not round-off
    assert last <= 1.5 * first
    assert last < 0.05


# -- per-sample steps ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INTEGRATORS))
def test_per_sample_steps_equal_integrating_each_sample_alone(name: str) -> None:
    dyn = _dynamics("nonseparable")
    h = 0.05 + 0.1 * torch.rand(3, 6, dtype=F64, generator=torch.Generator().manual_seed(1))
    q0, p0 = torch.tensor(Q0), torch.tensor(P0)
    with torch.no_grad():
        q, p = integrate(name, dyn, q0, p0, h)
        assert q.shape == p.shape == (3, 7, 1)
        for i in range(3):
            qi, pi = integrate(name, dyn, q0[i : i + 1], p0[i : i + 1], h[i])
            assert (q[i : i + 1] - qi).abs().max().item() <= 1e-14
            assert (p[i : i + 1] - pi).abs().max().item() <= 1e-14
        # the per-sample steps matter: sample 1 on sample 0's steps ends elsewhere
        q_other, _ = integrate(name, dyn, q0[1:2], p0[1:2], h[0])
    assert (q_other[0, -1] - q[1, -1]).abs().max() > 1e-3


def test_shared_steps_are_broadcast_to_every_sample() -> None:
    dyn = _dynamics("spring")
    h = torch.full((5,), 0.1, dtype=F64)
    q0, p0 = torch.tensor(Q0), torch.tensor(P0)
    with torch.no_grad():
        q_shared, p_shared = integrate("rk4", dyn, q0, p0, h)
        q_each, p_each = integrate("rk4", dyn, q0, p0, h.expand(3, -1))
    assert torch.equal(q_shared, q_each) and torch.equal(p_shared, p_each)


# -- gradients through Newton solves -------------------------------------------------------------


def _small_net() -> HamiltonianNet:
    torch.manual_seed(0)
    net = HamiltonianNet(1, width=6, depth=1).double()
    net.set_normalisation(torch.tensor([0.1, -0.2], dtype=F64), torch.tensor([0.8, 1.2], dtype=F64),
                          torch.tensor(1.3, dtype=F64))
    return net


def _rollout_loss(name: str, net: HamiltonianNet, q0: Tensor, p0: Tensor) -> Tensor:
    q, p = integrate(name, HamiltonianDynamics(net), q0, p0, torch.full((3,), 0.2, dtype=F64))
    weights = torch.linspace(0.5, 1.5, q.numel(), dtype=F64).reshape(q.shape)
    return (weights * q**2).sum() + (weights.flip(1) * torch.sin(p)).sum()


def _central_difference(fn, x: Tensor, eps: float = 1e-6) -> Tensor:
    out = torch.zeros_like(x)
    with torch.no_grad():
        for i in range(x.numel()):
            orig = x.view(-1)[i].item()
            x.view(-1)[i] = orig + eps
            plus = fn().item()
            x.view(-1)[i] = orig - eps
            minus = fn().item()
            x.view(-1)[i] = orig
            out.view(-1)[i] = (plus - minus) / (2 * eps)
    return out


def _relative(a: Tensor, b: Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name", NEWTON_INTEGRATORS)
def test_gradient_through_newton_steps_equals_finite_differences(name: str) -> None:
    net = _small_net()
    assert HamiltonianDynamics(net).separable is False  # the Newton path
    q0 = torch.tensor([[0.7], [-0.4]], dtype=F64)
    p0 = torch.tensor([[0.2], [0.9]], dtype=F64)
    weight = net.trunk.net[1][0].layer.K  # the ResNet block's 6×6 weight

    (grad_w,) = torch.autograd.grad(_rollout_loss(name, net, q0, p0), weight)
    fd_w = _central_difference(lambda: _rollout_loss(name, net, q0, p0), weight.data)
    assert fd_w.abs().max() > 1e-3
    assert _relative(grad_w, fd_w) < 1e-6

    q0g = q0.clone().requires_grad_(True)
    (grad_q0,) = torch.autograd.grad(_rollout_loss(name, net, q0g, p0), q0g)
    fd_q0 = _central_difference(lambda: _rollout_loss(name, net, q0, p0), q0)
    assert _relative(grad_q0, fd_q0) < 1e-6


# -- errors --------------------------------------------------------------------------------------


class _InfAfter:
    """Harmonic-oscillator dynamics whose rates become +inf after ``finite_calls`` evaluations."""

    dof = 1

    def __init__(self, finite_calls: int, separable: bool) -> None:
        self.calls, self.finite_calls, self.separable = 0, finite_calls, separable

    def _count(self, x: Tensor) -> Tensor:
        self.calls += 1
        return x if self.calls <= self.finite_calls else torch.full_like(x, float("inf"))

    def rates(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return self._count(p), -q

    def dq_dt(self, q: Tensor, p: Tensor) -> Tensor:
        return self._count(p)

    def dp_dt(self, q: Tensor, p: Tensor) -> Tensor:
        return self._count(-q)

    def jacobian(self, q: Tensor, p: Tensor) -> Tensor:
        return torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=q.dtype).expand(q.shape[0], 2, 2)


#: field evaluations per step of the explicit schemes (separable field)
CALLS_PER_STEP = {"euler": 1, "rk4": 4, "symplectic_euler": 2, "leapfrog": 3}


@pytest.mark.parametrize("name", sorted(CALLS_PER_STEP))
def test_integrate_names_the_step_where_an_explicit_rollout_became_non_finite(name: str) -> None:
    dyn = _InfAfter(3 * CALLS_PER_STEP[name], separable=True)  # steps 1–3 finite, step 4 not
    q0, p0 = torch.tensor([[1.0]], dtype=F64), torch.tensor([[0.0]], dtype=F64)
    with pytest.raises(IntegrationError, match=r"non-finite at step 4\b"):
        integrate(name, dyn, q0, p0, torch.full((8,), 0.1, dtype=F64))


@pytest.mark.parametrize("name", NEWTON_INTEGRATORS)
def test_integrate_names_the_step_where_an_implicit_rollout_became_non_finite(name: str) -> None:
    dyn = _InfAfter(0, separable=False)
    q0, p0 = torch.tensor([[1.0]], dtype=F64), torch.tensor([[0.0]], dtype=F64)
    with pytest.raises(IntegrationError, match=r"non-finite") as info:
        integrate(name, dyn, q0, p0, torch.full((8,), 0.1, dtype=F64))
    assert "step 1" in str(info.value)


def test_integrate_raises_on_a_field_that_blows_up_in_finite_time() -> None:
    """dq/dt = q² from q = 1 blows up at t = 1; forward Euler overflows a few steps later."""

    class Blowup:
        dof, separable = 1, False

        def rates(self, q: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
            return q**2, torch.zeros_like(p)

    # Euler: q ← q + h q²; find the first overflowing step independently, in numpy
    q, expected = np.float64(1.0), None
    with np.errstate(over="ignore"):
        for k in range(1, 200):
            q = q + 0.5 * q * q
            if not np.isfinite(q):
                expected = k
                break
    assert expected is not None
    with pytest.raises(IntegrationError, match=rf"non-finite at step {expected}\b"):
        integrate("euler", Blowup(), torch.ones(1, 1, dtype=F64), torch.zeros(1, 1, dtype=F64),
                  torch.full((expected + 5,), 0.5, dtype=F64))


@pytest.mark.parametrize(("z0", "reason"), [(0.3, "did not converge"), (1.0, "singular")])
@pytest.mark.parametrize("grad_enabled", [True, False])
def test_newton_solve_raises_when_the_residual_has_no_root(z0: float, reason: str, grad_enabled: bool) -> None:
    """z² + 1 = 0 has no real root: Newton wanders (z ← (z² − 1)/2z); from z0 = 1 it lands on z = 0,
    where the Jacobian 2z is singular — also an `IntegrationError`, not torch's LinAlgError."""
    with torch.set_grad_enabled(grad_enabled), pytest.raises(IntegrationError, match=reason):
        newton_solve(lambda z: z**2 + 1, lambda z: torch.diag_embed(2 * z), torch.tensor([[z0]], dtype=F64))


def test_newton_solve_converges_to_the_root_with_implicit_function_gradients() -> None:
    """z³ + a·z − 1 = 0: z* converges to round-off and dz*/da = −z*/(3z*² + a)."""
    a = torch.tensor([[2.0]], dtype=F64, requires_grad=True)
    z = newton_solve(lambda z: z**3 + a * z - 1, lambda z: torch.diag_embed(3 * z**2 + a), torch.zeros(1, 1, dtype=F64))
    assert abs((z**3 + a * z - 1).item()) < 1e-14
    (dz_da,) = torch.autograd.grad(z.sum(), a)
    zs = z.item()
    # the differentiable step reuses the last Newton Jacobian: exact up to O(Newton tolerance)
    assert abs(dz_da.item() - (-zs / (3 * zs**2 + 2.0))) < 1e-12


def test_get_integrator_rejects_an_unknown_name_with_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        get_integrator("nope")
    assert info.value.field == "integrator"
    assert "nope" in str(info.value)
    for name in INTEGRATORS:
        assert get_integrator(name).name == name
