"""The HNN baseline's targets: second-order finite differences on uniform and non-uniform time grids."""

from __future__ import annotations

import numpy as np
import pytest

from hinn_core.finite_differences import finite_difference_rates


def _jittered_times(n: int, seed: int = 0) -> np.ndarray:
    """Strictly increasing, far from uniform: steps anywhere in [0.02, 0.3]."""
    steps = 0.02 + 0.28 * np.random.default_rng(seed).random(n - 1)
    return np.concatenate([[0.4], 0.4 + np.cumsum(steps)])


@pytest.mark.parametrize("n", [3, 4, 25])
def test_exact_on_quadratics_on_a_non_uniform_grid(n: int) -> None:
    t = _jittered_times(n)
    assert np.ptp(np.diff(t)) > 0.05  # really non-uniform
    a, b, c = np.array([1.0, -2.0, 0.5]), np.array([0.3, 1.5, -4.0]), np.array([2.0, -0.7, 3.0])
    x = a + b * t[:, None] + c * t[:, None] ** 2  # (n, 3)
    exact = b + 2 * c * t[:, None]
    out = finite_difference_rates(t, x)
    assert out.shape == x.shape
    # interior points and both one-sided end points, to round-off
    np.testing.assert_allclose(out, exact, rtol=0, atol=1e-11)


def test_not_exact_on_cubics() -> None:
    """The formulas are second order, not better: a cubic's third derivative shows up."""
    t = _jittered_times(25)
    out = finite_difference_rates(t, t[:, None] ** 3)
    assert np.abs(out[:, 0] - 3 * t**2).max() > 1e-3


def test_two_samples_give_the_difference_quotient() -> None:
    out = finite_difference_rates(np.array([1.0, 1.5]), np.array([[2.0, 0.0], [3.0, -1.0]]))
    np.testing.assert_allclose(out, [[2.0, -2.0], [2.0, -2.0]])


def _orders(where: str) -> list[float]:
    """Observed convergence orders for sin(t) on a smoothly graded grid as its steps are halved."""
    errors = []
    for m in (20, 40, 80, 160):
        u = np.linspace(0.0, 1.0, m + 1)
        t = 0.2 + 2.0 * u + 1.5 * u**2  # steps grow from 0.1 to 0.25 (× 20 / m)
        err = np.abs(finite_difference_rates(t, np.sin(t)[:, None])[:, 0] - np.cos(t))
        errors.append({"first": err[0], "last": err[-1], "interior": err[1:-1].max()}[where])
    return [float(np.log2(e0 / e1)) for e0, e1 in zip(errors, errors[1:], strict=False)]


@pytest.mark.parametrize("where", ["first", "last", "interior"])
def test_second_order_at_the_ends_and_in_the_interior(where: str) -> None:
    orders = _orders(where)
    assert all(1.9 < k < 2.1 for k in orders), orders
