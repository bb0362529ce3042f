"""The compiled training path (`hinn_core.fastpath.rollout_vjp`, `fastpath.autograd`) against autograd.

Gradients of a random linear functional of the rolled-out states with respect to every weight and
to the start states: compiled reverse sweep vs autograd through the torch integrator (itself tested
against double-backprop and hessQuik), for every architecture × supported integrator × activation,
float64 to round-off and float32 to a relative 1e-4; engine selection in training; failures.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_fastpath import DOF, F32, F64, _inputs, _model

from hinn_core import ConfigError, IntegrationError, TrainConfig, TrainingDiverged, fastpath, generate_dataset, train
from hinn_core.fastpath import autograd as compiled
from hinn_core.integrators import INTEGRATORS
from hinn_core.models import ModelSpec
from hinn_core.networks import ACTIVATIONS

SUPPORTED = [(arch, integ) for arch in ("hinn", "hinn-separable", "mlp") for integ in sorted(INTEGRATORS)
             if arch == "hinn-separable" or integ not in ("leapfrog", "symplectic_euler")]


def _autograd_reference(model, q0, p0, h, gq, gp, integrator):
    kw = {"dtype": model.dtype}
    q0t = torch.tensor(q0, **kw, requires_grad=True)
    p0t = torch.tensor(p0, **kw, requires_grad=True)
    q, p = model.rollout(q0t, p0t, torch.as_tensor(h, **kw), integrator)
    params = fastpath.parameters(model)
    out = torch.autograd.grad((q * torch.as_tensor(gq)).sum() + (p * torch.as_tensor(gp)).sum(),
                              [q0t, p0t, *params], allow_unused=True)
    weights = [torch.zeros_like(w) if g is None else g for g, w in zip(out[2:], params, strict=True)]
    return out[0].numpy(), out[1].numpy(), [w.numpy() for w in weights]


def _cotangents(model, batch: int, steps: int, seed: int = 5):
    rng = np.random.default_rng(seed)
    dt = np.float64 if model.dtype == F64 else np.float32
    return (rng.standard_normal((batch, steps + 1, DOF)).astype(dt),
            rng.standard_normal((batch, steps + 1, DOF)).astype(dt))


def _assert_gradients_match(got, ref, dtype) -> None:
    dq0, dp0, weights = got
    rq0, rp0, rweights = ref
    assert len(weights) == len(rweights)
    scale = max(float(np.abs(w).max()) for w in rweights)
    assert scale > 0
    tol = 1e-12 if dtype == F64 else 1e-4
    for a, b in zip(weights, rweights, strict=True):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= tol * scale
    for a, b in ((dq0, rq0), (dp0, rp0)):
        assert np.abs(a - b).max() <= tol * max(1.0, float(np.abs(b).max()))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize(("arch", "integrator"), SUPPORTED)
def test_compiled_adjoint_equals_autograd_in_float64(arch: str, integrator: str, activation: str) -> None:
    model = _model(arch, activation, F64)
    assert fastpath.supports_training(model, integrator)
    # one sample; one block (BLAS products); a full block and a 6-row remainder (loops), per-sample steps
    for batch, variable in ((1, False), (21, True), (70, True)):
        q0, p0, h = _inputs(batch, 6, variable)
        gq, gp = _cotangents(model, batch, 6)
        got = fastpath.rollout_vjp(model, q0, p0, h, gq, gp, integrator)
        _assert_gradients_match(got, _autograd_reference(model, q0, p0, h, gq, gp, integrator), F64)


@pytest.mark.parametrize(("arch", "integrator"), SUPPORTED)
def test_compiled_adjoint_equals_autograd_in_float32(arch: str, integrator: str) -> None:
    model = _model(arch, "antitanh", F32)
    q0, p0, h = _inputs(9, 5, variable=True)
    gq, gp = _cotangents(model, 9, 5)
    got = fastpath.rollout_vjp(model, q0, p0, h, gq, gp, integrator)
    assert got[0].dtype == np.float32 and all(g.dtype == np.float32 for g in got[2])
    _assert_gradients_match(got, _autograd_reference(model, q0, p0, h, gq, gp, integrator), F32)


def test_threads_give_the_same_gradients_as_one() -> None:
    model = _model("hinn-separable", "antitanh")
    q0, p0, h = _inputs(300, 4, variable=True)
    gq, gp = _cotangents(model, 300, 4)
    one = fastpath.rollout_vjp(model, q0, p0, h, gq, gp, "leapfrog", parallel=False)
    many = fastpath.rollout_vjp(model, q0, p0, h, gq, gp, "leapfrog", parallel=True)
    np.testing.assert_array_equal(one[0], many[0])  # per-sample: the same blocks, bitwise
    for a, b in zip(one[2], many[2], strict=True):  # per-thread sums added at the end: round-off
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * float(np.abs(a).max()))


def test_the_autograd_op_backpropagates_like_the_torch_rollout() -> None:
    """`fastpath.autograd.rollout` inside a torch loss: the same loss and the same .grad everywhere."""
    model = _model("hinn", "tanh")
    q0, p0, h = _inputs(7, 5, variable=False)
    grads = []
    for fast in (True, False):
        model.zero_grad(set_to_none=True)
        start = torch.tensor(np.concatenate([q0, p0], 1), requires_grad=True)
        roll = compiled.rollout if fast else (lambda m, a, b, s: m.rollout(a, b, s))
        q, p = roll(model, start[:, :DOF], start[:, DOF:], torch.as_tensor(h))
        loss = (q[:, 1:] ** 2).mean() + (p[:, 1:] ** 2).mean()  # the q and p outputs both used
        loss.backward()
        grads.append([float(loss.detach()), start.grad.clone(), *[w.grad.clone() for w in fastpath.parameters(model)
                                                          if w.grad is not None]])
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-13)
    for a, b in zip(grads[0][1:], grads[1][1:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(("arch", "integrator"), [("hinn-separable", "leapfrog"), ("hinn", "rk4"),
                                                 ("hinn", "implicit_midpoint"), ("mlp", "euler")])
def test_fused_loss_equals_the_torch_loss_and_its_gradients(arch: str, integrator: str) -> None:
    """`rollout_sse`: Σ_{k≥1} |x_k − target|² and its gradients from one pass; without gradients
    (validation) the forward kernel gives the same value."""
    model = _model(arch, "antitanh")
    q0, p0, h = _inputs(19, 4, variable=True)
    target = torch.as_tensor(np.random.default_rng(9).standard_normal((19, 4, 2 * DOF)))
    values, grads = [], []
    for fused in (True, False):
        model.zero_grad(set_to_none=True)
        start = torch.tensor(np.concatenate([q0, p0], 1), requires_grad=True)
        if fused:
            sse = compiled.rollout_sse(model, start[:, :DOF], start[:, DOF:], torch.as_tensor(h), target,
                                       integrator)
        else:
            q, p = model.rollout(start[:, :DOF], start[:, DOF:], torch.as_tensor(h), integrator)
            sse = ((torch.cat([q[:, 1:], p[:, 1:]], -1) - target) ** 2).sum()
        (3.0 * sse).backward()  # the op's backward scales by its incoming gradient
        values.append(float(sse.detach()))
        grads.append([start.grad, *[w.grad for w in fastpath.parameters(model) if w.grad is not None]])
    assert values[0] == pytest.approx(values[1], rel=1e-13)
    for a, b in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        plain = compiled.rollout_sse(model, torch.as_tensor(q0), torch.as_tensor(p0), torch.as_tensor(h), target,
                                     integrator)
    assert float(plain) == pytest.approx(values[1], rel=1e-13)


def test_only_q_used_gives_zero_cotangent_for_p() -> None:
    model = _model("hinn-separable")
    q0, p0, h = _inputs(3, 4, variable=False)
    start = torch.tensor(q0, requires_grad=True)
    q, _ = compiled.rollout(model, start, torch.tensor(p0), torch.as_tensor(h))
    q.sum().backward()
    ref = _autograd_reference(model, q0, p0, h, np.ones((3, 5, DOF)), np.zeros((3, 5, DOF)), "leapfrog")
    np.testing.assert_allclose(start.grad.numpy(), ref[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("arch", "integrator"), [("hinn", "leapfrog"), ("mlp", "symplectic_euler")])
def test_newton_stages_of_partitioned_schemes_stay_on_torch(arch: str, integrator: str) -> None:
    model = _model(arch)
    assert not fastpath.supports_training(model, integrator)
    with pytest.raises(ValueError, match="compiled adjoint does not support"):
        fastpath.rollout_vjp(model, *_inputs(1, 2, False), np.zeros((1, 3, DOF)), np.zeros((1, 3, DOF)),
                             integrator)


def test_implicit_adjoint_reports_a_failed_rollout() -> None:
    model = _model("hinn")
    with torch.no_grad():
        model.field.out_scale.mul_(50.0)
    q0, p0, _ = _inputs(1, 1, variable=False)
    h = np.array([1e-9, 1e-9, 10.0, 1e-9])
    with pytest.raises(IntegrationError, match=r"step 3 \(implicit_midpoint\): implicit step did not converge"):
        fastpath.rollout_vjp(model, q0, p0, h, np.zeros((1, 5, DOF)), np.zeros((1, 5, DOF)), "implicit_midpoint")


# -- training ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spring():
    return generate_dataset("spring", n_trajectories=8, t_end=2.0, dt=0.1, seed=3)


def _history(data, spec: ModelSpec, **config):
    result = train(data, spec, TrainConfig(epochs=4, lbfgs_iterations=12, seed=1, **config))
    return [(h["phase"], h["train_loss"], h["val_loss"]) for h in result.history]


@pytest.mark.parametrize(("architecture", "integrator"), [("hinn-separable", "leapfrog"), ("hinn", "rk4"),
                                                         ("mlp", "implicit_midpoint")])
def test_both_engines_train_the_same_model(spring, architecture: str, integrator: str) -> None:
    """Adam and L-BFGS (learned start states included) follow the same path on either engine."""
    spec = ModelSpec(architecture=architecture, dof=1, width=8, integrator=integrator)
    for initial_state in ("observed", "learned"):
        fast = _history(spring, spec, engine="numba", initial_state=initial_state)
        ref = _history(spring, spec, engine="torch", initial_state=initial_state)
        assert [h[0] for h in fast] == [h[0] for h in ref]
        np.testing.assert_allclose(np.array([h[1:] for h in fast]), np.array([h[1:] for h in ref]), rtol=1e-7)


def test_auto_engine_uses_the_compiled_adjoint_where_it_applies(spring, monkeypatch) -> None:
    calls = []
    real = fastpath.rollout_sse
    monkeypatch.setattr(fastpath, "rollout_sse", lambda *a, **k: calls.append(1) or real(*a, **k))
    train(spring, ModelSpec(dof=1, width=8), TrainConfig(epochs=1, lbfgs_iterations=0))
    assert calls  # the default model (hinn-separable, leapfrog) trains on the compiled path
    calls.clear()
    train(spring, ModelSpec(architecture="hinn", dof=1, width=8, integrator="leapfrog"),
          TrainConfig(epochs=1, lbfgs_iterations=0))
    assert not calls  # Newton stages: autograd through the torch integrator


def test_numba_engine_refuses_what_it_cannot_run(spring) -> None:
    with pytest.raises(ConfigError) as info:
        train(spring, ModelSpec(architecture="hinn", dof=1, width=8, integrator="symplectic_euler"),
              TrainConfig(epochs=1, lbfgs_iterations=0, engine="numba"))
    assert info.value.field == "training.engine"
    with pytest.raises(ConfigError) as info:
        TrainConfig(engine="jax")
    assert info.value.field == "training.engine"


@pytest.mark.parametrize("engine", ["numba", "torch"])
def test_weights_gone_non_finite_stop_training_with_a_clear_error(spring, engine: str) -> None:
    def poison(rec):
        if rec["epoch"] == 1:
            with torch.no_grad():
                for w in poisoned:
                    w.fill_(float("nan"))

    spec = ModelSpec(architecture="hinn-separable", dof=1, width=8)
    poisoned: list[torch.Tensor] = []
    import hinn_core.training as training_module

    real = training_module.DynamicsModel

    def capture(spec_):
        model = real(spec_)
        poisoned.extend(fastpath.parameters(model)[:1])
        return model

    training_module.DynamicsModel = capture
    try:
        with pytest.raises(TrainingDiverged, match="epoch 2"):
            train(spring, spec, TrainConfig(epochs=3, lbfgs_iterations=0, engine=engine), progress=poison)
    finally:
        training_module.DynamicsModel = real
