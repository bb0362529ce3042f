"""The compiled rollout (`hinn_core.fastpath`) against the torch reference path.

Every architecture × activation × integrator, float64 to 1e-10 and float32 to a relative 1e-4,
with shared and per-sample variable steps, batch 1 and batch > 1, and the learned H along the
trajectory; the same `IntegrationError` messages on blow-ups; engine selection and fallback.
Small nets and short rollouts: the kernels are compiled once and cached on disk (numba).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from hinn_core import (
    ConfigError,
    IntegrationError,
    fastpath,  # numba is a hard dependency: an import failure here fails the suite
    predict,
)
from hinn_core import rollout as rollout_module
from hinn_core.integrators import INTEGRATORS, Leapfrog
from hinn_core.models import DynamicsModel, ModelSpec
from hinn_core.networks import ACTIVATIONS

DOF, WIDTH, DEPTH = 2, 8, 2
ARCHS = ("hinn", "hinn-separable", "mlp")
F64, F32 = torch.float64, torch.float32


def _model(arch: str, activation: str = "tanh", dtype: torch.dtype = F64, seed: int = 0) -> DynamicsModel:
    """A random net with a non-trivial normalisation and energy offset (chain rule exercised)."""
    torch.manual_seed(seed)
    model = DynamicsModel(ModelSpec(architecture=arch, dof=DOF, width=WIDTH, depth=DEPTH,
                                    activation=activation)).to(dtype)
    n2 = 2 * DOF
    out_scale = 0.3 + 2.0 * torch.rand(n2) if arch == "mlp" else torch.tensor(1.7)
    model.field.set_normalisation(0.3 * torch.randn(n2), 0.5 + torch.rand(n2), out_scale)
    model.field.energy_offset.fill_(0.37)
    return model


def _inputs(batch: int, steps: int, variable: bool, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q0, p0 = 0.5 * rng.standard_normal((batch, DOF)), 0.5 * rng.standard_normal((batch, DOF))
    h = 0.05 + 0.05 * rng.random((batch, steps) if variable else steps)
    return q0, p0, h


@torch.no_grad()
def _torch_rollout(model: DynamicsModel, q0, p0, h, integrator: str):
    kw = {"dtype": model.dtype}
    q, p = model.rollout(torch.as_tensor(q0, **kw), torch.as_tensor(p0, **kw), torch.as_tensor(h, **kw), integrator)
    H = model.hamiltonian(q.reshape(-1, DOF), p.reshape(-1, DOF))
    return q.numpy(), p.numpy(), None if H is None else H.numpy().reshape(q.shape[:2])


def _assert_close(got, ref, dtype: torch.dtype) -> None:
    for a, b in zip(got, ref, strict=True):
        if b is None:
            assert a is None
        elif dtype == F64:
            assert np.abs(a - b).max() <= 1e-10
        else:
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("integrator", sorted(INTEGRATORS))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("arch", ARCHS)
def test_compiled_rollout_matches_torch(arch: str, activation: str, integrator: str, dtype: torch.dtype) -> None:
    model = _model(arch, activation, dtype)
    for batch, variable in ((3, True), (1, False)):
        q0, p0, h = _inputs(batch, 10, variable)
        got = fastpath.rollout(model, q0, p0, h, integrator)
        _assert_close(got, _torch_rollout(model, q0, p0, h, integrator), dtype)


@pytest.mark.parametrize("arch", ARCHS)
def test_predict_uses_the_compiled_engine_and_equals_the_torch_engine(arch: str) -> None:
    model = _model(arch)
    times = np.cumsum(np.r_[0.0, np.full(15, 0.07)])
    q0, p0 = [[0.3, -0.2], [0.1, 0.4]], [[0.2, 0.1], [-0.3, 0.0]]
    fast = predict(model, q0, p0, times, engine="numba")
    ref = predict(model, q0, p0, times, engine="torch")
    auto = predict(model, q0, p0, times)
    for a, b, c in ((fast.q, ref.q, auto.q), (fast.p, ref.p, auto.p), (fast.H, ref.H, auto.H)):
        if b is None:
            assert a is None and c is None
            continue
        assert a.dtype == np.float64 and a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-10
        np.testing.assert_array_equal(a, c)  # auto picked the compiled engine


@pytest.mark.parametrize(("arch", "integrator"), [
    ("hinn", "implicit_midpoint"), ("hinn-separable", "implicit_midpoint"), ("mlp", "implicit_midpoint"),
    ("hinn", "leapfrog"), ("hinn", "symplectic_euler"), ("mlp", "leapfrog")])
@pytest.mark.parametrize("h_max", [0.02, 0.6])
def test_simplified_newton_finds_the_full_newton_root(arch: str, integrator: str, h_max: float) -> None:
    """Prediction keeps the Newton Jacobian across iterations and steps: over a long rollout with
    small steps (the Jacobian is reused for many steps) and large variable ones (it is re-evaluated
    when the contraction stalls) it lands on the root that full Newton and the torch path find."""
    model = _model(arch)
    rng = np.random.default_rng(3)
    q0, p0, _ = _inputs(5, 1, variable=False)
    h = h_max * (0.3 + 0.7 * rng.random((5, 120)))
    reused = fastpath.rollout(model, q0, p0, h, integrator)
    full = fastpath.rollout(model, q0, p0, h, integrator, reuse_jacobian=False)
    ref = _torch_rollout(model, q0, p0, h, integrator)
    _assert_close(reused, full, F64)
    _assert_close(reused, ref, F64)


@pytest.mark.parametrize("arch", ["hinn", "hinn-separable"])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_midpoint_from_history_meets_the_torch_root_and_energy(arch: str, dtype: torch.dtype) -> None:
    """Prediction's implicit midpoint starts Newton from the last two midpoint slopes (no sweep at x;
    H from the deferred energy pass). Rows with constant steps, a 5× jump and a 5× drop (explicit
    Euler start on the jump), and alternating steps, in one block: the torch path's states and H."""
    model = _model(arch, dtype=dtype)
    q0, p0, _ = _inputs(4, 1, variable=False)
    T = 60
    h = np.full((4, T), 0.02)
    h[1, 20:] = 0.1
    h[1, 40:] = 0.02
    h[2, ::2] = 0.005
    h[3, 30] = 0.12  # a lone spike: the row falls back to Euler there, the others extrapolate
    got = fastpath.rollout(model, q0, p0, h, "implicit_midpoint")
    _assert_close(got, _torch_rollout(model, q0, p0, h, "implicit_midpoint"), dtype)
    full = fastpath.rollout(model, q0, p0, h, "implicit_midpoint", reuse_jacobian=False)
    _assert_close(got, full, dtype)
    assert got[2] is not None and np.isfinite(got[2]).all()


def test_batch_blocks_and_threads_give_identical_numbers() -> None:
    """Blocks are independent: one sample alone, in a batch and on several threads agree bitwise."""
    model = _model("hinn", "softplus")
    q0, p0, h = _inputs(37, 6, variable=True)
    serial = fastpath.rollout(model, q0, p0, h, "implicit_midpoint", parallel=False)
    threaded = fastpath.rollout(model, q0, p0, h, "implicit_midpoint", parallel=True)
    alone = fastpath.rollout(model, q0[5:6], p0[5:6], h[5:6], "implicit_midpoint")
    for a, b, c in zip(serial, threaded, alone, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a[5:6], c, rtol=0, atol=1e-14)


def test_packed_weights_follow_parameter_updates() -> None:
    model = _model("hinn-separable")
    q0, p0, h = _inputs(2, 5, variable=False)
    before = fastpath.rollout(model, q0, p0, h, "leapfrog")[0]
    assert fastpath.pack(model) is fastpath.pack(model)  # cached while nothing changes
    with torch.no_grad():
        model.field.potential.net[0].K.mul_(1.5)  # an in-place update bumps the version counter
    after = fastpath.rollout(model, q0, p0, h, "leapfrog")
    assert np.abs(after[0] - before).max() > 1e-6
    _assert_close(after, _torch_rollout(model, q0, p0, h, "leapfrog"), F64)


def test_engine_selection_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("hinn")
    times, q0, p0 = np.linspace(0.0, 0.5, 6), [0.2, 0.1], [0.0, 0.3]

    class CustomLeapfrog(Leapfrog):  # a subclass may change `step`: only torch can run it
        pass

    assert not fastpath.supports(model, CustomLeapfrog())
    ref = predict(model, q0, p0, times, integrator="leapfrog", engine="torch")
    custom = predict(model, q0, p0, times, integrator=CustomLeapfrog())  # auto → torch
    np.testing.assert_array_equal(custom.q, ref.q)
    with pytest.raises(ConfigError, match="built-in integrators") as info:
        predict(model, q0, p0, times, integrator=CustomLeapfrog(), engine="numba")
    assert info.value.field == "engine"
    with pytest.raises(ConfigError, match="unknown engine"):
        predict(model, q0, p0, times, engine="jax")
    monkeypatch.setattr(rollout_module, "_fastpath", lambda: None)  # as if numba were missing
    np.testing.assert_array_equal(predict(model, q0, p0, times, integrator="leapfrog").q, ref.q)
    with pytest.raises(ConfigError, match="numba is not installed"):
        predict(model, q0, p0, times, engine="numba")


def _both_raise(model: DynamicsModel, q0, p0, h, integrator: str) -> tuple[str, str]:
    messages = []
    for run in (lambda: fastpath.rollout(model, q0, p0, h, integrator),
                lambda: _torch_rollout(model, q0, p0, h, integrator)):
        with pytest.raises(IntegrationError) as info:
            run()
        messages.append(str(info.value))
    return messages[0], messages[1]


@pytest.mark.parametrize("integrator", ["euler", "rk4", "leapfrog", "symplectic_euler"])
def test_explicit_blow_up_names_the_same_step(integrator: str) -> None:
    model = _model("hinn-separable")
    with torch.no_grad():
        model.field.out_scale.fill_(1e10)
    q0, p0, _ = _inputs(2, 1, variable=False)
    h = np.array([1e-12, 1e-12, 1e-12, 1e300, 1e-12])  # the state stays O(1) until the 4th step overflows
    fast, ref = _both_raise(model, q0, p0, h, integrator)
    assert fast == ref
    assert re.search(r"non-finite at step 4\b", fast)


@pytest.mark.parametrize(("arch", "integrator", "scale", "h3"), [
    ("hinn", "implicit_midpoint", 50.0, 10.0), ("hinn", "leapfrog", 50.0, 1.0),
    ("hinn", "symplectic_euler", 1e5, 100.0), ("mlp", "leapfrog", 50.0, 10.0)])
def test_newton_failure_gives_the_torch_message(arch: str, integrator: str, scale: float, h3: float) -> None:
    """A steep field and one huge step: Newton stalls in step 3 on both engines."""
    model = _model(arch)
    with torch.no_grad():
        model.field.out_scale.mul_(scale)
    q0, p0, _ = _inputs(1, 1, variable=False)
    fast, ref = _both_raise(model, q0, p0, np.array([1e-9, 1e-9, h3, 1e-9]), integrator)
    strip = re.compile(r"last correction [^)]*")  # chaotic iterations: the value differs, not the step
    assert strip.sub("", fast) == strip.sub("", ref)
    assert fast.startswith(f"step 3 ({integrator}): implicit step did not converge in 30 Newton iterations")


@pytest.mark.parametrize(("arch", "integrator"), [("hinn-separable", "implicit_midpoint"), ("hinn", "leapfrog")])
def test_newton_on_a_non_finite_state_gives_the_torch_message(arch: str, integrator: str) -> None:
    """(`predict` rejects non-finite initial conditions; an inf start is the simplest Newton failure.)"""
    q0, p0, h = _inputs(2, 4, variable=False)
    q0[1, 0] = np.inf
    fast, ref = _both_raise(_model(arch), q0, p0, h, integrator)
    assert fast == ref == f"step 1 ({integrator}): implicit step became non-finite; try a smaller dt"


def test_small_dense_solve_matches_numpy_and_flags_singular_matrices() -> None:
    from hinn_core.fastpath._rollout import solve_inplace

    rng = np.random.default_rng(0)
    for d in (1, 2, 5):
        M, r = rng.standard_normal((d, d)), rng.standard_normal(d)
        x = r.copy()
        assert solve_inplace(M.copy(), x, d)
        np.testing.assert_allclose(x, np.linalg.solve(M, r), rtol=1e-12, atol=1e-12)
    assert not solve_inplace(np.array([[1.0, 2.0], [2.0, 4.0]]), np.ones(2), 2)


# -- the training path: the hand-written adjoint of the trunk's gradient ----------------------------


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_value_and_grad_adjoint_equals_autograd_through_the_plain_ops(activation: str) -> None:
    """Weight and input gradients of (out, ∇_u out) under any cotangents, against autograd."""
    from hinn_core.networks import ScalarTrunk

    torch.manual_seed(3)
    trunk = ScalarTrunk(3, 1, width=8, depth=3, activation=activation, resnet_step=0.7).double()
    u = torch.randn(11, 3, dtype=F64, requires_grad=True)
    w_out, w_g = torch.randn(11, dtype=F64), torch.randn(11, 3, dtype=F64)
    params = [u, *trunk.parameters()]
    results = []
    for fn in (trunk.value_and_grad, trunk.value_and_grad_ops):
        out, g = fn(u)
        results.append((out, g, torch.autograd.grad((out * w_out).sum() + (g * w_g).sum(), params)))
    (out_f, g_f, grads_f), (out_r, g_r, grads_r) = results
    assert torch.equal(out_f, out_r.detach()) or (out_f - out_r).abs().max() < 1e-14
    assert (g_f - g_r).abs().max() < 1e-14
    for a, b in zip(grads_f, grads_r, strict=True):
        assert b.abs().max() > 0
        assert (a - b).abs().max() <= 1e-12 * (1 + b.abs().max())


def test_value_and_grad_adjoint_handles_one_unused_output_and_refuses_double_backward() -> None:
    from hinn_core.networks import ScalarTrunk

    torch.manual_seed(4)
    trunk = ScalarTrunk(2, 1, width=6, depth=2, activation="tanh", resnet_step=0.5).double()
    u = torch.randn(5, 2, dtype=F64, requires_grad=True)
    for pick in (0, 1):  # only the value, only the gradient
        fast = torch.autograd.grad(trunk.value_and_grad(u)[pick].sum(), [u, *trunk.parameters()], allow_unused=True)
        ref = torch.autograd.grad(trunk.value_and_grad_ops(u)[pick].sum(), [u, *trunk.parameters()],
                                  allow_unused=True)
        for a, b in zip(fast, ref, strict=True):
            if b is None:  # the gradient does not depend on the output bias
                assert a is None or a.abs().max() == 0
            else:
                assert (a - b).abs().max() < 1e-12
    _, g = trunk.value_and_grad(u)
    (gu,) = torch.autograd.grad(g.sum(), u, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(gu.sum(), u)
    with torch.no_grad():  # no graph: the plain sweep, same numbers
        out_ng, g_ng = trunk.value_and_grad(u)
    assert (g_ng - g.detach()).abs().max() == 0 and not g_ng.requires_grad


def test_warm_compiles_every_architecture_and_auto_does_not_wait_for_a_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fastpath.warm() >= 0.0 and fastpath.is_warm() and not fastpath.is_warming()
    model = _model("hinn")
    times, q0, p0 = np.linspace(0.0, 0.5, 6), [0.2, 0.1], [0.0, 0.3]
    ref = predict(model, q0, p0, times, engine="torch")
    monkeypatch.setattr(fastpath, "is_warming", lambda: True)  # as while `hinn serve` compiles at start

    def must_not_run(*args, **kwargs):
        raise AssertionError("auto waited for the compiled kernel during a warm-up")

    monkeypatch.setattr(fastpath, "rollout", must_not_run)
    np.testing.assert_array_equal(predict(model, q0, p0, times).q, ref.q)  # auto → torch meanwhile
    with pytest.raises(AssertionError, match="warm-up"):
        predict(model, q0, p0, times, engine="numba")  # an explicit request still takes the kernel


def test_a_failed_background_warm_up_leaves_predictions_on_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("hinn")
    times, q0, p0 = np.linspace(0.0, 0.5, 6), [0.2, 0.1], [0.0, 0.3]
    ref = predict(model, q0, p0, times, engine="torch")

    def broken() -> float:
        raise RuntimeError("LLVM exploded")

    monkeypatch.setattr(fastpath, "warm", broken)
    monkeypatch.setattr(fastpath, "_FAILED", [])
    fastpath.warm_in_background().join(timeout=30)
    assert fastpath._FAILED == ["RuntimeError: LLVM exploded"] and not fastpath.is_warming()
    assert not fastpath.supports(model)
    np.testing.assert_array_equal(predict(model, q0, p0, times).q, ref.q)


@pytest.mark.parametrize("batch", [1, 7, 21])  # a lone vector row, 7 rows (fewer than a tile), tiles + rows
@pytest.mark.parametrize("width", [32, 64])  # the widths `_trunk.matmul` runs as vector tiles and rows
@pytest.mark.parametrize(("arch", "integrator"), [("hinn", "rk4"), ("hinn-separable", "leapfrog"),
                                                  ("hinn", "implicit_midpoint")])
def test_vector_tile_widths_match_torch(arch: str, integrator: str, width: int, batch: int) -> None:
    torch.manual_seed(0)
    model = DynamicsModel(ModelSpec(architecture=arch, dof=DOF, width=width, depth=DEPTH, activation="tanh")).double()
    q0, p0, h = _inputs(batch, 5, variable=False)
    got = fastpath.rollout(model, q0, p0, h, integrator)
    _assert_close(got, _torch_rollout(model, q0, p0, h, integrator), F64)
