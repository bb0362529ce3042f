"""Adaptive RK45 (`hinn_core.adaptive`): scipy's solver step for step, batched per trajectory.

The reference is ``scipy.integrate.solve_ivp(method="RK45", t_eval=...)`` itself: the same
tableau, the same evaluations and the same states to round-off on fields with known solutions;
then the method's own behaviour (error shrinking with the tolerance, energy drift bounded by it)
and its failures (a blow-up, a step budget, tolerances a dtype cannot resolve).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import RK45, solve_ivp

from hinn_core import adaptive
from hinn_core.adaptive import Tolerances, rk45
from hinn_core.errors import DataError, IntegrationError


def pendulum(x: torch.Tensor) -> torch.Tensor:
    """H = p²/2 − cos q."""
    return torch.cat([x[:, 1:], -torch.sin(x[:, :1])], -1)


def kepler(x: torch.Tensor) -> torch.Tensor:
    """H = |p|²/2 − 1/|q| (planar)."""
    q, p = x[:, :2], x[:, 2:]
    return torch.cat([p, -q / (q ** 2).sum(-1, keepdim=True) ** 1.5], -1)


def spring(x: torch.Tensor) -> torch.Tensor:
    """H = (q² + p²)/2: q(t) = q0 cos t + p0 sin t."""
    return torch.cat([x[:, 1:], -x[:, :1]], -1)


def scipy_run(fn, x0: np.ndarray, times: np.ndarray, rtol: float, atol: float) -> tuple[np.ndarray, int]:
    sol = solve_ivp(lambda _t, y: fn(torch.as_tensor(y)[None])[0].numpy(), (times[0], times[-1]), x0,
                    method="RK45", t_eval=times, rtol=rtol, atol=atol)
    assert sol.success
    return sol.y.T, sol.nfev


def test_the_tableau_is_scipys() -> None:
    a = np.zeros((6, 5))
    for i, row in enumerate(adaptive.A):
        a[i, :len(row)] = row
    np.testing.assert_array_equal(a, RK45.A)
    np.testing.assert_array_equal(adaptive.B, RK45.B)
    np.testing.assert_array_equal(adaptive.C, RK45.C)
    np.testing.assert_array_equal(adaptive.E, RK45.E)
    np.testing.assert_array_equal(adaptive.P, RK45.P)
    assert adaptive.ERROR_EXPONENT == -1 / (RK45.error_estimator_order + 1)


@pytest.mark.parametrize("fn, x0", [
    (pendulum, [[1.0, 0.0], [2.5, 0.3], [0.1, -0.2], [3.1, 0.0]]),
    (kepler, [[1.0, 0.0, 0.0, 1.1], [1.5, 0.0, 0.0, 0.7], [0.7, 0.2, -0.3, 1.2]]),
], ids=["pendulum", "kepler"])
@pytest.mark.parametrize("rtol, atol", [(1e-9, 1e-6), (1e-6, 1e-9), (1e-12, 1e-12)])
def test_each_trajectory_is_scipys(fn, x0, rtol: float, atol: float) -> None:
    x0 = np.array(x0)
    times = np.concatenate([[0.0], np.sort(np.random.default_rng(0).uniform(0, 12, 150)), [12.0]])
    X, nfev = rk45(fn, torch.tensor(x0), times, Tolerances(rtol=rtol, atol=atol))
    for i in range(len(x0)):
        ref, ref_nfev = scipy_run(fn, x0[i], times, rtol, atol)
        assert nfev[i] == ref_nfev  # the same steps, accepted and rejected
        np.testing.assert_allclose(X[i].numpy(), ref, rtol=0, atol=1e-12)
    assert X[:, 0].numpy().tolist() == x0.tolist()  # the initial state itself, not an interpolation


def test_error_shrinks_with_the_tolerance_and_energy_drift_is_bounded_by_it() -> None:
    x0 = torch.tensor([[1.0, 0.0], [0.3, -0.8]], dtype=torch.float64)
    times = np.linspace(0.0, 30.0, 301)
    t = torch.as_tensor(times)
    exact = torch.stack([x0[:, :1] * torch.cos(t) + x0[:, 1:] * torch.sin(t),
                         -x0[:, :1] * torch.sin(t) + x0[:, 1:] * torch.cos(t)], -1)
    errors, evals = [], []
    for tol in (1e-5, 1e-7, 1e-9, 1e-11):
        X, nfev = rk45(spring, x0, times, Tolerances(rtol=tol, atol=tol))
        errors.append(float((X - exact).abs().max()))
        evals.append(int(nfev.max()))
        energy = 0.5 * (X ** 2).sum(-1)
        assert float((energy - energy[:, :1]).abs().max()) < 300 * tol  # drifts, within the tolerance's scale
    assert all(b < a / 10 for a, b in zip(errors, errors[1:], strict=False)), errors  # 100× tighter → >10× better
    assert errors[-1] < 1e-8
    # 5th order: 100× tighter tolerance costs about 100^(1/5) = 2.5× the evaluations
    assert all(1.5 < b / a < 4.0 for a, b in zip(evals, evals[1:], strict=False)), evals


def test_rows_are_independent() -> None:
    x0 = torch.tensor([[1.0, 0.0, 0.0, 1.1], [1.5, 0.0, 0.0, 0.7]], dtype=torch.float64)
    times = np.linspace(0.0, 8.0, 41)
    X, nfev = rk45(kepler, x0, times)
    for i in range(2):
        Xi, ni = rk45(kepler, x0[i:i + 1], times)
        assert ni[0] == nfev[i]
        np.testing.assert_allclose(Xi[0].numpy(), X[i].numpy(), rtol=0, atol=1e-14)


def test_a_blow_up_is_reported_with_its_time() -> None:
    def riccati(x: torch.Tensor) -> torch.Tensor:  # y' = y², y(0) = 1: y = 1/(1 − t), infinite at t = 1
        return x ** 2

    with pytest.raises(IntegrationError, match=r"rk45: the step size fell below the floating-point spacing "
                       r"at t = (0\.99\d*|1) \(trajectory 0\)"):
        rk45(riccati, torch.ones(1, 2, dtype=torch.float64), np.array([0.0, 0.5, 2.0]))


def test_the_step_budget_is_enforced() -> None:
    with pytest.raises(IntegrationError, match=r"trajectory 1 needed more than 20 steps"):
        # the second trajectory swings fast (high energy): it runs out first
        rk45(pendulum, torch.tensor([[0.0, 0.0], [0.0, 40.0]], dtype=torch.float64), np.linspace(0, 10, 3),
             Tolerances(rtol=1e-10, atol=1e-10, max_steps=20))


@pytest.mark.parametrize("tol, dtype, field", [
    (Tolerances(rtol=1e-15), torch.float64, "rtol"), (Tolerances(rtol=1e-6), torch.float32, "rtol"),
    (Tolerances(rtol=math.nan), torch.float64, "rtol"), (Tolerances(atol=0.0), torch.float64, "atol"),
    (Tolerances(atol=math.inf), torch.float64, "atol"), (Tolerances(max_steps=0), torch.float64, "max_steps"),
])
def test_tolerances_are_checked_against_the_dtype(tol: Tolerances, dtype: torch.dtype, field: str) -> None:
    with pytest.raises(DataError) as exc:
        tol.checked(dtype)
    assert exc.value.field == field


def test_tolerances_for_fills_in_the_dtypes_defaults() -> None:
    assert adaptive.tolerances_for(torch.float64) == adaptive.DEFAULT_TOLERANCES
    assert adaptive.tolerances_for(torch.float32) == adaptive.FLOAT32_TOLERANCES
    assert adaptive.tolerances_for(torch.float32, atol=1e-3, max_steps=7) == Tolerances(rtol=1e-4, atol=1e-3,
                                                                                          max_steps=7)
    assert adaptive.tolerances_for(torch.float64, rtol=1e-6) == Tolerances(rtol=1e-6, atol=1e-9)


def test_float32_tolerances_at_its_resolution() -> None:
    tol = Tolerances(rtol=1e-4, atol=1e-6).checked(torch.float32)
    x0 = torch.tensor([[1.0, 0.0]], dtype=torch.float32)
    times = np.linspace(0.0, 10.0, 21)
    X, _ = rk45(spring, x0, times, tol)
    exact = np.stack([np.cos(times), -np.sin(times)], -1)
    assert X.dtype == torch.float32
    assert np.abs(X[0].double().numpy() - exact).max() < 1e-3
