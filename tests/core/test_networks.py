"""H_θ and the baseline field: hessQuik, the fast hand-written paths and autograd all agree.

Every net is built in float64 with a non-trivial normalisation (random shift, scale in [0.5, 1.5],
out_scale ≠ 1), so the chain rule through x̂ = (x − shift)/scale and the output scale is exercised.
"""

from __future__ import annotations

import hessQuik.activations as hq_act
import hessQuik.layers as hq_lay
import hessQuik.networks as hq_net
import pytest
import torch
from hessQuik.utils import input_derivative_check
from torch import Tensor

from hinn_core.networks import (
    ACTIVATIONS,
    HamiltonianNet,
    ScalarTrunk,
    SeparableHamiltonianNet,
    VectorFieldNet,
)

DOF, WIDTH, DEPTH, N = 2, 8, 3, 16
H_NETS = {"general": HamiltonianNet, "separable": SeparableHamiltonianNet}
MODES = {"forward_mode": True, "backward_mode": False}

#: torch.func.hessian's forward-mode AD loads TorchScript decompositions on first use, which warns
#: on torch ≥ 2.10; harmless, but pytest turns warnings into errors.
pytestmark = pytest.mark.filterwarnings("ignore:.torch.jit.script. is deprecated:DeprecationWarning")


def _normalised(cls: type, activation: str, seed: int = 0) -> HamiltonianNet | SeparableHamiltonianNet | VectorFieldNet:
    torch.manual_seed(seed)
    net = cls(DOF, WIDTH, DEPTH, activation).double()
    shift = torch.randn(2 * DOF, dtype=torch.float64)
    scale = 0.5 + torch.rand(2 * DOF, dtype=torch.float64)
    if cls is VectorFieldNet:
        out_scale = 0.3 + 2.0 * torch.rand(2 * DOF, dtype=torch.float64)
    else:
        out_scale = torch.tensor(1.7, dtype=torch.float64)
    net.set_normalisation(shift, scale, out_scale)
    return net


def _states(seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 1.5 * torch.randn(N, 2 * DOF, generator=g, dtype=torch.float64)
    return x[:, :DOF], x[:, DOF:]


def _autograd_grad(net, q: Tensor, p: Tensor) -> Tensor:
    x = torch.cat([q, p], dim=1).requires_grad_(True)
    (g,) = torch.autograd.grad(net.hamiltonian(x[:, :DOF], x[:, DOF:]).sum(), x)
    return g


def _autograd_hessian(net, q: Tensor, p: Tensor) -> Tensor:
    def h_single(xi: Tensor) -> Tensor:
        return net.hamiltonian(xi[None, :DOF], xi[None, DOF:])[0]

    return torch.vmap(torch.func.hessian(h_single))(torch.cat([q, p], dim=1))


def _max_err(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


# -- 1. hessQuik against autograd ----------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kind", sorted(H_NETS))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_hessquik_gradient_of_h_matches_autograd(activation: str, kind: str, mode: str) -> None:
    net = _normalised(H_NETS[kind], activation)
    q, p = _states()
    ref = _autograd_grad(net, q, p)
    assert ref.abs().max() > 1e-2  # not a trivially zero comparison
    assert _max_err(net.grad_hessquik(q, p, forward_mode=MODES[mode]), ref) < 1e-10


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kind", sorted(H_NETS))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_hessquik_hessian_of_h_matches_autograd(activation: str, kind: str, mode: str) -> None:
    net = _normalised(H_NETS[kind], activation)
    q, p = _states()
    ref = _autograd_hessian(net, q, p)
    assert ref.abs().max() > 1e-2
    assert _max_err(net.hessian_hessquik(q, p, forward_mode=MODES[mode]), ref) < 1e-10


# -- 2. fast hand-written paths ------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(H_NETS))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_fast_gradient_matches_autograd_and_hessquik(activation: str, kind: str) -> None:
    net = _normalised(H_NETS[kind], activation)
    q, p = _states()
    fast = torch.cat(net.grad(q, p), dim=1)
    assert _max_err(fast, _autograd_grad(net, q, p)) < 1e-12
    for forward_mode in (True, False):
        assert _max_err(fast, net.grad_hessquik(q, p, forward_mode=forward_mode)) < 1e-12


@pytest.mark.parametrize("kind", sorted(H_NETS))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_fast_hessian_matches_autograd_and_hessquik(activation: str, kind: str) -> None:
    net = _normalised(H_NETS[kind], activation)
    q, p = _states()
    fast = net.hessian(q, p)
    assert _max_err(fast, _autograd_hessian(net, q, p)) < 1e-12
    for forward_mode in (True, False):
        assert _max_err(fast, net.hessian_hessquik(q, p, forward_mode=forward_mode)) < 1e-12
    assert _max_err(fast, fast.transpose(1, 2)) < 1e-12


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_separable_hessian_has_no_q_p_coupling(activation: str) -> None:
    net = _normalised(SeparableHamiltonianNet, activation)
    q, p = _states()
    hess = net.hessian(q, p)
    assert hess[:, :DOF, DOF:].abs().max().item() == 0.0
    assert hess[:, DOF:, :DOF].abs().max().item() == 0.0


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_vector_field_jacobian_matches_jacrev_and_hessquik(activation: str) -> None:
    net = _normalised(VectorFieldNet, activation)
    q, p = _states()

    def f_single(xi: Tensor) -> Tensor:
        return torch.cat(net.rates(xi[None, :DOF], xi[None, DOF:]), dim=1)[0]

    ref = torch.vmap(torch.func.jacrev(f_single))(torch.cat([q, p], dim=1))
    assert ref.abs().max() > 1e-2
    fast = net.jacobian(q, p)
    assert fast.shape == (N, 2 * DOF, 2 * DOF)
    assert _max_err(fast, ref) < 1e-12
    assert _max_err(net.jacobian_hessquik(q, p), ref) < 1e-10


# -- 3. hessQuik's own Taylor test on the trunk --------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_trunk_passes_hessquik_taylor_derivative_check(activation: str, mode: str) -> None:
    net = _normalised(HamiltonianNet, activation)
    q, p = _states()
    x = net._hat(q, p)
    torch.manual_seed(2)  # input_derivative_check draws a random direction
    grad_ok, hess_ok = input_derivative_check(net.trunk.net, x, do_Hessian=True, forward_mode=MODES[mode])
    assert (bool(grad_ok), bool(hess_ok)) == (True, True)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("trunk", ["separable-T", "separable-V", "mlp"])
def test_separable_and_vector_field_trunks_pass_hessquik_taylor_derivative_check(
        trunk: str, activation: str, mode: str) -> None:
    """T_θ(p̂) and V_φ(q̂) of the separable H, and the mlp baseline's vector-valued trunk (m = 2·dof)."""
    q, p = _states()
    if trunk == "mlp":
        field = _normalised(VectorFieldNet, activation)
        f, x = field.trunk.net, field._hat(q, p)
    else:
        sep = _normalised(SeparableHamiltonianNet, activation)
        f, x = (sep.kinetic.net, sep._p_hat(p)) if trunk == "separable-T" else (sep.potential.net, sep._q_hat(q))
    torch.manual_seed(2)  # input_derivative_check draws a random direction
    grad_ok, hess_ok = input_derivative_check(f, x, do_Hessian=True, forward_mode=MODES[mode])
    assert (bool(grad_ok), bool(hess_ok)) == (True, True)


# -- 4. one activation object per layer ----------------------------------------------------------


def _trunk_activations(trunk: ScalarTrunk) -> list[object]:
    first, resnet, last = trunk.net[0], trunk.net[1], trunk.net[2]
    return [first.act, *(block.layer.act for block in resnet), last.act]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_hessquik_layer_has_its_own_activation_object(activation: str) -> None:
    trunks = [
        HamiltonianNet(DOF, WIDTH, DEPTH, activation).trunk,
        *(lambda n: (n.kinetic, n.potential))(SeparableHamiltonianNet(DOF, WIDTH, DEPTH, activation)),
        VectorFieldNet(DOF, WIDTH, DEPTH, activation).trunk,
    ]
    ids: list[int] = []
    for trunk in trunks:
        acts = _trunk_activations(trunk)
        assert len(acts) == DEPTH + 2
        # every singleLayer in the trunk is accounted for
        assert len(acts) == sum(isinstance(m, hq_lay.singleLayer) for m in trunk.net.modules())
        assert isinstance(acts[0], ACTIVATIONS[activation].hessquik)
        ids += [id(a) for a in acts]
    assert len(set(ids)) == len(ids)


def _two_tanh_layers(shared: bool) -> hq_net.NN:
    torch.manual_seed(3)
    first = hq_act.tanhActivation()
    second = first if shared else hq_act.tanhActivation()
    return hq_net.NN(
        hq_lay.singleLayer(3, 5, act=first),
        hq_lay.singleLayer(5, 5, act=second),
        hq_lay.singleLayer(5, 1, act=hq_act.identityActivation()),
    ).double()


def test_shared_hessquik_activation_gives_wrong_backward_mode_gradient() -> None:
    """The hessQuik pitfall the trunk avoids: an activation keeps its last σ(z) for backward mode."""
    x = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    errors = {}
    for shared in (True, False):
        net = _two_tanh_layers(shared)
        xg = x.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(net(xg)[0].sum(), xg)
        _, df, _ = net(x, do_gradient=True, forward_mode=False)
        errors[shared] = _max_err(df[:, :, 0], ref)
        _, df_fwd, _ = net(x, do_gradient=True, forward_mode=True)
        assert _max_err(df_fwd[:, :, 0], ref) < 1e-10  # forward mode is unaffected either way
    assert errors[True] > 1e-3
    assert errors[False] < 1e-10


# -- 5./6. weight gradients through the fast paths -----------------------------------------------


def _param_grads(net, loss: Tensor) -> list[Tensor]:
    # the output bias does not enter derivatives: materialise its (zero) gradient
    return list(torch.autograd.grad(loss, list(net.parameters()), allow_unused=True, materialize_grads=True))


def _relative_param_error(fast: list[Tensor], ref: list[Tensor]) -> float:
    scale = max(r.abs().max().item() for r in ref)
    assert scale > 1e-3
    return max(_max_err(f, r) for f, r in zip(fast, ref, strict=True)) / scale


@pytest.mark.parametrize("kind", sorted(H_NETS))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_weight_gradients_of_fast_gradient_equal_double_backprop(activation: str, kind: str) -> None:
    net = _normalised(H_NETS[kind], activation)
    q, p = _states()
    v = torch.randn(N, 2 * DOF, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    loss_fast = (torch.cat(net.grad(q, p), dim=1) * v).sum()
    x = torch.cat([q, p], dim=1).requires_grad_(True)
    (g,) = torch.autograd.grad(net.hamiltonian(x[:, :DOF], x[:, DOF:]).sum(), x, create_graph=True)
    loss_ref = (g * v).sum()
    assert _relative_param_error(_param_grads(net, loss_fast), _param_grads(net, loss_ref)) < 1e-11


@pytest.mark.parametrize("kind", sorted(H_NETS))
def test_weight_gradients_of_fast_hessian_equal_autograd_of_func_hessian(kind: str) -> None:
    net = _normalised(H_NETS[kind], "tanh")
    q, p = _states()
    q, p = q[:4], p[:4]
    v = torch.randn(4, 2 * DOF, 2 * DOF, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    loss_fast = (net.hessian(q, p) * v).sum()
    loss_ref = (_autograd_hessian(net, q, p) * v).sum()
    assert _relative_param_error(_param_grads(net, loss_fast), _param_grads(net, loss_ref)) < 1e-10
