"""Prediction and evaluation: time grids, validation, learned vs true H, metric definitions."""

from __future__ import annotations

import numpy as np
import pytest

from hinn_core import DataError, evaluate, make_system, make_time_grid, predict, rollout_errors
from hinn_core.rollout import check_times


def test_time_grid_ends_exactly_at_t_end() -> None:
    t = make_time_grid(1.05, 0.1)
    assert len(t) == 12 and t[0] == 0.0 and t[-1] == 1.05
    np.testing.assert_allclose(np.diff(t)[:-1], 0.1)
    assert make_time_grid(1.0, 0.1).shape == (11,)


@pytest.mark.parametrize(("t_end", "dt", "field"), [(0.0, 0.1, "t_end"), (1.0, 0.0, "dt"),
                                                    (float("nan"), 0.1, "t_end"), (1e9, 1e-3, "dt")])
def test_bad_time_grids_name_the_field(t_end, dt, field) -> None:
    with pytest.raises(DataError) as info:
        make_time_grid(t_end, dt, max_steps=100_000)
    assert info.value.field == field


@pytest.mark.parametrize("times", [[0.0], [0.0, 0.2, 0.1], [0.0, float("inf")], [[0.0, 1.0]]])
def test_bad_explicit_times_are_rejected(times) -> None:
    with pytest.raises(DataError) as info:
        check_times(times)
    assert info.value.field == "times"


def test_predict_batches_initial_conditions_and_reports_both_energies(trained_spring) -> None:
    system = make_system("spring")
    times = np.array([0.0, 0.1, 0.25, 0.3, 0.7])  # variable steps
    pred = predict(trained_spring.model, [[0.5], [0.8]], [[0.0], [0.2]], times, system=system)
    assert pred.q.shape == (2, 5, 1) and pred.H.shape == (2, 5) and pred.H_true.shape == (2, 5)
    np.testing.assert_array_equal(pred.q[:, 0, 0], [0.5, 0.8])
    np.testing.assert_allclose(pred.H_true[:, 0], [0.125, 0.34])
    # the learned H is close to the true energy (calibrated constant, physical sign)
    assert np.abs(pred.H - pred.H_true).max() < 0.02
    single = predict(trained_spring.model, [0.8], [0.2], times)
    np.testing.assert_allclose(single.q[0], pred.q[1], rtol=0, atol=1e-14)


@pytest.mark.parametrize(("q", "p", "field"), [([1.0, 2.0], [0.0, 0.0], "initial_conditions.q"),
                                              ([1.0], [float("nan")], "initial_conditions.p"),
                                              (np.zeros((0, 1)), np.zeros((0, 1)), "initial_conditions.q")])
def test_predict_rejects_bad_initial_conditions(trained_spring, q, p, field) -> None:
    with pytest.raises(DataError) as info:
        predict(trained_spring.model, q, p, [0.0, 1.0])
    assert info.value.field == field


def test_rollout_mse_is_the_mean_squared_error_of_full_rollouts(trained_spring, spring_data) -> None:
    _, test = spring_data.split((0.8, 0.2), seed=0)
    metrics = rollout_errors(trained_spring.model, test)
    sq = []
    for tr in test.trajectories:
        pred = predict(trained_spring.model, tr.q[0], tr.p[0], tr.t)
        sq.append(np.concatenate([(pred.q[0] - tr.q).ravel() ** 2, (pred.p[0] - tr.p).ravel() ** 2]))
    assert metrics["rollout_mse"] == pytest.approx(np.concatenate(sq).mean(), rel=1e-12)


def test_evaluate_reports_long_horizon_energy_and_drift(trained_spring, spring_data) -> None:
    _, test = spring_data.split((0.8, 0.2), seed=0)
    metrics = evaluate(trained_spring.model, test, horizon_factor=10)
    lh = metrics["long_horizon"]
    assert lh["t_end"] == pytest.approx(30.0) and lh["n_trajectories"] == len(test)
    # the fixture is trained for seconds only: loose bounds (the accuracy targets are in test_training)
    assert 0 <= lh["energy_rel_error_mean"] <= lh["energy_rel_error_max"] < 0.2
    assert 0 <= metrics["learned_energy_drift"] < 0.2
    assert metrics["rollout_mse"] < 1e-2
    assert "conserved_drift" not in metrics  # spring has no momenta to conserve
