"""`fastpath.grad_and_hessian`: the compiled ∇H and ∇²H (implicit midpoint's Newton sweep) equal
the torch nets' hand-written sweep and hessQuik's Hessian, in physical units, for every
activation and both H architectures; blocks and threads do not change a number."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hinn_core import fastpath
from hinn_core.models import DynamicsModel, ModelSpec
from hinn_core.networks import ACTIVATIONS

F64, F32 = torch.float64, torch.float32


def _model(arch: str, activation: str, dtype: torch.dtype = F64, dof: int = 2, width: int = 8) -> DynamicsModel:
    """A random net with a non-trivial normalisation (the chain rule's scales exercised)."""
    torch.manual_seed(0)
    model = DynamicsModel(ModelSpec(architecture=arch, dof=dof, width=width, depth=2, activation=activation))
    n2 = 2 * dof
    model.field.set_normalisation(0.3 * torch.randn(n2), 0.5 + torch.rand(n2), torch.tensor(1.7))
    return model.to(dtype)


def _states(batch: int, dof: int = 2, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, dof)), rng.standard_normal((batch, dof))


@torch.no_grad()
def _torch(model: DynamicsModel, q: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, ...]:
    t = [torch.as_tensor(x, dtype=model.dtype) for x in (q, p)]
    return tuple(x.numpy() for x in model.field.grad_and_hessian(*t))


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("arch", ["hinn", "hinn-separable"])
def test_compiled_hessian_equals_the_torch_sweep(arch: str, activation: str, dtype: torch.dtype) -> None:
    model = _model(arch, activation, dtype)
    q, p = _states(70)  # blocks of 64 and 6
    got, ref = fastpath.grad_and_hessian(model, q, p), _torch(model, q, p)
    for a, b in zip(got, ref, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        scale = max(1.0, float(np.abs(b).max()))
        assert float(np.abs(a - b).max()) <= (1e-12 if dtype == F64 else 1e-5) * scale
    hess = got[2]
    np.testing.assert_array_equal(hess, hess.transpose(0, 2, 1))  # the lower triangle, mirrored
    if arch == "hinn-separable":  # ∇²H = diag(V'', T''): no q–p coupling, exactly
        assert not hess[:, :2, 2:].any() and not hess[:, 2:, :2].any()


def test_compiled_hessian_equals_hessquik_and_autograd() -> None:
    """Against the architecture's own reference (hessQuik) and torch.func, not only the torch sweep."""
    model = _model("hinn", "antitanh", dof=4, width=16)
    q, p = _states(9, dof=4)
    gq, gp, hess = fastpath.grad_and_hessian(model, q, p)
    tq, tp = torch.as_tensor(q), torch.as_tensor(p)
    with torch.no_grad():
        hq = model.field.hessian_hessquik(tq, tp).numpy()
    assert float(np.abs(hess - hq).max()) <= 1e-12 * max(1.0, float(np.abs(hq).max()))
    x = torch.cat([tq, tp], 1).requires_grad_(True)
    H = model.field.hamiltonian(x[:, :4], x[:, 4:]).sum()
    (g,) = torch.autograd.grad(H, x)
    np.testing.assert_allclose(np.concatenate([gq, gp], 1), g.numpy(), rtol=0, atol=1e-12)


def test_blocks_and_threads_give_identical_numbers() -> None:
    """Blocks are independent, and the kernel releases the GIL, so the threads run at once."""
    from hinn_core.fastpath import _derivatives

    assert _derivatives.grad_hessian.targetoptions["nogil"]
    model = _model("hinn", "softplus")
    q, p = _states(600)
    serial = fastpath.grad_and_hessian(model, q, p, parallel=False)
    threaded = fastpath.grad_and_hessian(model, q, p, parallel=True)
    alone = fastpath.grad_and_hessian(model, q[130:131], p[130:131])
    for a, b, c in zip(serial, threaded, alone, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a[130:131], c, rtol=0, atol=1e-14)


def test_refuses_what_it_cannot_compute_and_returns_empty_for_no_states() -> None:
    with pytest.raises(ValueError, match="H net"):
        fastpath.grad_and_hessian(_model("mlp", "tanh"), *_states(3))
    model = _model("hinn", "tanh")
    with pytest.raises(ValueError, match=r"shape \(B, 2\)"):
        fastpath.grad_and_hessian(model, np.zeros((3, 2)), np.zeros((3, 1)))
    gq, gp, hess = fastpath.grad_and_hessian(model, np.zeros((0, 2)), np.zeros((0, 2)))
    assert gq.shape == gp.shape == (0, 2) and hess.shape == (0, 4, 4)
