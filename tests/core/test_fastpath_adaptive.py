"""The compiled RK45 (`fastpath.rollout_rk45`) against the torch reference `hinn_core.adaptive.rk45`.

float64: the same evaluations per trajectory and the same states and H to ≤ 1e-10, for every
architecture and activation. float32: the step-size controller reads error estimates that cancel
in low precision, so the two may pick slightly different steps; they then agree to the
tolerance's scale, not to round-off. Failures give the reference's messages; `predict` routes
``integrator="rk45"`` to either engine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hinn_core import ConfigError, IntegrationError, fastpath, predict
from hinn_core.adaptive import Tolerances, field_of, rk45
from hinn_core.networks import ACTIVATIONS
from hinn_core.rollout import PREDICT_INTEGRATORS
from tests.core.test_fastpath import ARCHS, DOF, F32, F64, _model


def _reference(model, q0: np.ndarray, p0: np.ndarray, times: np.ndarray, tol: Tolerances):
    kw = {"dtype": model.dtype}
    X, nfev = rk45(field_of(model.dynamics(), DOF), torch.cat([torch.as_tensor(q0, **kw), torch.as_tensor(p0, **kw)],
                                                               -1), times, tol)
    with torch.no_grad():
        H = model.hamiltonian(X[..., :DOF].reshape(-1, DOF), X[..., DOF:].reshape(-1, DOF))
    q, p = X[..., :DOF].numpy(), X[..., DOF:].numpy()
    return q, p, None if H is None else H.numpy().reshape(q.shape[:2]), nfev


def _inputs(batch: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    times = np.concatenate([[0.0], np.sort(rng.uniform(0.0, 6.0, 40)), [6.0]])
    return 0.5 * rng.standard_normal((batch, DOF)), 0.5 * rng.standard_normal((batch, DOF)), times


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("arch", ARCHS)
def test_compiled_rk45_is_the_reference_in_float64(arch: str, activation: str) -> None:
    model = _model(arch, activation)
    q0, p0, times = _inputs(3)
    tol = Tolerances(rtol=1e-9, atol=1e-9)
    q, p, H, nfev = fastpath.rollout_rk45(model, q0, p0, times, tol)
    rq, rp, rH, rnfev = _reference(model, q0, p0, times, tol)
    np.testing.assert_array_equal(nfev, rnfev)
    assert nfev.min() > 30  # a real adaptive run (several steps), not one giant step
    assert np.abs(q - rq).max() <= 1e-10 and np.abs(p - rp).max() <= 1e-10
    if arch == "mlp":
        assert H is None and rH is None
    else:
        assert np.abs(H - rH).max() <= 1e-10
    np.testing.assert_array_equal(q[:, 0], q0)  # the initial states exactly


@pytest.mark.parametrize("arch", ARCHS)
def test_compiled_rk45_in_float32_agrees_to_the_tolerance(arch: str) -> None:
    model = _model(arch, dtype=F32)
    q0, p0, times = _inputs(3)
    tol = Tolerances(rtol=1e-4, atol=1e-6)
    q, p, H, nfev = fastpath.rollout_rk45(model, q0, p0, times, tol)
    rq, rp, rH, rnfev = _reference(model, q0, p0, times, tol)
    assert q.dtype == np.float32
    scale = 1.0 + max(np.abs(rq).max(), np.abs(rp).max())
    assert np.abs(q - rq).max() <= 100 * tol.rtol * scale and np.abs(p - rp).max() <= 100 * tol.rtol * scale
    assert np.abs(nfev - rnfev).max() <= 12  # at most a couple of steps apart


def test_threads_give_identical_numbers_and_lock_stepped_rows_match_lone_runs() -> None:
    """Blocks of up to 64 trajectories share each sweep while each keeps its own steps: 130 rows
    (blocks of 64, 64 and 2) give the same evaluations and, to round-off, the same states as each
    trajectory alone; serial and threaded runs of the same blocks agree bitwise."""
    model = _model("hinn-separable")
    q0, p0, times = _inputs(130)
    q0[7] *= 50.0  # far out, where this field is nearly linear: far fewer steps than its block's others
    p0[7] *= 50.0
    tol = Tolerances(rtol=1e-10, atol=1e-10)
    one = fastpath.rollout_rk45(model, q0, p0, times, tol, parallel=False)
    many = fastpath.rollout_rk45(model, q0, p0, times, tol, parallel=True)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)
    nfev = one[3]
    assert nfev[7] < 0.5 * np.median(nfev) and len(np.unique(nfev)) > 3  # rows leave their sweeps at many times
    for i in (0, 7, 63, 64, 129):
        alone = fastpath.rollout_rk45(model, q0[i:i + 1], p0[i:i + 1], times, tol)
        assert alone[3][0] == nfev[i]
        for a, b in zip(alone[:3], one[:3], strict=True):
            np.testing.assert_allclose(a[0], b[i], rtol=0, atol=1e-12)


def test_an_empty_batch_gives_empty_arrays() -> None:
    """No initial conditions: no blocks to run (`predict` refuses them first, naming the field)."""
    model = _model("hinn")
    empty = np.zeros((0, DOF))
    q, p, H, nfev = fastpath.rollout_rk45(model, empty, empty, np.linspace(0.0, 1.0, 5))
    assert q.shape == p.shape == (0, 5, DOF) and H is not None and H.shape == (0, 5) and nfev.shape == (0,)
    q, p, H = fastpath.rollout(model, empty, empty, np.full(4, 0.1), "rk4")
    assert q.shape == (0, 5, DOF) and H is not None and H.shape == (0, 5)


def test_the_kernel_reports_the_references_failure_codes() -> None:
    from hinn_core import adaptive
    from hinn_core.fastpath import _adaptive

    assert (_adaptive.NONFINITE, _adaptive.TOO_SMALL_STEP, _adaptive.TOO_MANY_STEPS) == (
        adaptive.NONFINITE, adaptive.TOO_SMALL_STEP, adaptive.TOO_MANY_STEPS)
    assert _adaptive.OK not in (adaptive.NONFINITE, adaptive.TOO_SMALL_STEP, adaptive.TOO_MANY_STEPS)


def test_failures_give_the_reference_messages() -> None:
    model = _model("hinn")
    q0, p0, times = _inputs(2)
    tol = Tolerances(rtol=1e-10, atol=1e-10, max_steps=15)
    messages = []
    for run in (lambda: fastpath.rollout_rk45(model, q0, p0, times, tol),
                lambda: _reference(model, q0, p0, times, tol)):
        with pytest.raises(IntegrationError, match="needed more than 15 steps") as info:
            run()
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    with torch.no_grad():  # a non-finite field: no step size can be chosen
        model.field.trunk._weights()[0].b.fill_(float("nan"))
    messages = []
    for run in (lambda: fastpath.rollout_rk45(model, q0, p0, times), lambda: _reference(model, q0, p0, times,
                                                                                         Tolerances())):
        with pytest.raises(IntegrationError, match=r"the field is not finite at t = 0 \(trajectory 0\)") as info:
            run()
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_predict_runs_rk45_on_both_engines() -> None:
    model = _model("hinn")
    q0, p0, times = _inputs(2)
    fast = predict(model, q0, p0, times, integrator="rk45", engine="numba")
    ref = predict(model, q0, p0, times, integrator="rk45", engine="torch")
    assert np.abs(fast.q - ref.q).max() <= 1e-10 and np.abs(fast.H - ref.H).max() <= 1e-10
    np.testing.assert_array_equal(fast.evaluations, ref.evaluations)
    loose = predict(model, q0, p0, times, integrator="rk45", tolerances=Tolerances(rtol=1e-4, atol=1e-4))
    assert (loose.evaluations < fast.evaluations).all()
    assert predict(model, q0, p0, times, integrator="rk4").evaluations is None
    with pytest.raises(ConfigError, match="rk45") as info:
        predict(model, q0, p0, times, integrator="rk4", tolerances=Tolerances())
    assert info.value.field == "rtol"
    with pytest.raises(ConfigError, match=r"unknown integrator 'dopri'.*'rk45'") as info:
        predict(model, q0, p0, times, integrator="dopri")
    assert info.value.field == "integrator" and PREDICT_INTEGRATORS[-1] == "rk45"


def test_float32_models_get_resolvable_defaults_and_refuse_finer_tolerances() -> None:
    from hinn_core.errors import DataError

    model = _model("hinn", dtype=F32)
    q0, p0, times = _inputs(1)
    pred = predict(model, q0, p0, times, integrator="rk45")  # defaults 1e-4 / 1e-6: within float32's reach
    ref = predict(model, q0, p0, times, integrator="rk45", tolerances=Tolerances(rtol=1e-4, atol=1e-6))
    np.testing.assert_array_equal(pred.q, ref.q)
    with pytest.raises(DataError) as info:
        predict(model, q0, p0, times, integrator="rk45", tolerances=Tolerances(rtol=1e-9))  # < 100 ulp of float32
    assert info.value.field == "rtol"
    tight = predict(_model("hinn", dtype=F64), q0, p0, times, integrator="rk45")
    assert (tight.evaluations > pred.evaluations).all()  # float64's default is the tighter 1e-9
