"""`train`'s arguments checked against each other (a science-user review found them unchecked), and
learned start states over trajectories of several lengths."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch

from hinn_core import (
    ModelSpec,
    TrainConfig,
    TrajectoryDataset,
    fastpath,
    generate_dataset,
    make_system,
    predict,
    train,
)
from hinn_core.errors import ConfigError, DataError
from hinn_core.models import DynamicsModel
from hinn_core.training import _learned_start_loss, _rollout_loss, _whole_trajectories

QUICK = TrainConfig(epochs=2, lbfgs_iterations=0)


@pytest.fixture(scope="module")
def spring() -> TrajectoryDataset:
    return generate_dataset("spring", 6, 1.0, 0.1, seed=0)


def _mixed_lengths() -> TrajectoryDataset:
    """Spring trajectories of 11, 4 and 11 and 7 points (cut from 1 s at dt 0.1)."""
    full = generate_dataset("spring", 4, 1.0, 0.1, seed=1, noise_std=0.01)
    cut = [tr if n is None else type(tr).from_arrays(tr.t[:n], tr.q[:n], tr.p[:n])
           for tr, n in zip(full.trajectories, (None, 4, None, 7), strict=True)]
    return TrajectoryDataset(cut, full.source)


def test_a_validation_set_of_another_dof_is_refused(spring) -> None:
    """The compiled path once broadcast a dof-1 model over 7-column states into a meaningless val loss."""
    with pytest.raises(ConfigError, match="^val_dataset: has dof 4, the training data 1"):
        train(spring, ModelSpec(dof=1, width=4), QUICK, val_dataset=generate_dataset("two-body", 2, 1.0, 0.1))


def test_the_compiled_kernels_refuse_states_of_another_shape(spring) -> None:
    model = DynamicsModel(ModelSpec(dof=2, width=4)).double()
    h = np.full(3, 0.1)
    shapes = (((1, 1), (1, 1)), ((2, 2), (1, 2)), ((2,), (2,)))
    for q0, p0 in ((np.zeros(a), np.zeros(b)) for a, b in shapes):
        with pytest.raises(ValueError, match=r"q and p must both have shape \(B, 2\) for this model"):
            fastpath.rollout(model, q0, p0, h)
        with pytest.raises(ValueError, match=r"\(B, 2\)"):
            fastpath.rollout_rk45(model, q0, p0, np.linspace(0, 1, 3))
        with pytest.raises(ValueError, match=r"\(B, 2\)"):
            fastpath.rollout_sse(model, q0, p0, h, np.zeros((1, 3, 4)))


def test_derivative_targets_are_checked(spring) -> None:
    hnn = ModelSpec(architecture="hnn", dof=1, width=4)
    with pytest.raises(ConfigError, match="^derivative_targets: apply to the derivative-matching 'hnn' baseline"):
        train(spring, ModelSpec(dof=1, width=4), QUICK, derivative_targets=(np.zeros((5, 2)), np.zeros((5, 2))))
    bad = [((np.zeros((5, 2)), np.zeros((4, 2))), r"shape \(N, 2\) with the same N >= 1, got \(5, 2\) and \(4, 2\)"),
           ((np.zeros((5, 3)), np.zeros((5, 3))), r"got \(5, 3\)"),
           ((np.zeros((0, 2)), np.zeros((0, 2))), "same N >= 1"),
           ((1.0, 2.0), r"got \(\) and \(\)"),  # 0-d: once a TypeError from len()
           ((np.zeros((5, 2)), np.full((5, 2), np.nan)), "contain NaN"),
           (("ab", "cd"), "must be a pair of arrays"),
           (np.zeros((3, 5, 2)), "must be a pair of arrays")]
    for targets, problem in bad:
        with pytest.raises(ConfigError, match=f"^derivative_targets: .*{problem}"):
            train(spring, hnn, QUICK, derivative_targets=targets)
    states = spring.states()
    for targets in ((states, np.zeros_like(states)), (torch.as_tensor(states), torch.zeros(states.shape))):
        assert train(spring, hnn, QUICK, derivative_targets=targets).model.spec.architecture == "hnn"


def test_learned_starts_need_lbfgs_and_a_rollout_loss(spring) -> None:
    with pytest.raises(ConfigError, match="^training.initial_state: .*lbfgs_iterations > 0"):
        TrainConfig(initial_state="learned", lbfgs_iterations=0)
    with pytest.raises(ConfigError, match="^training.initial_state: .*hnn baseline matches derivatives"):
        train(spring, ModelSpec(architecture="hnn", dof=1, width=4),
              TrainConfig(epochs=1, lbfgs_iterations=2, initial_state="learned"))


def test_training_warns_about_a_separable_model_of_a_coupled_h_and_short_windows(spring, caplog) -> None:
    coupled = generate_dataset("nonseparable", 3, 0.5, 0.1, seed=0)
    with caplog.at_level(logging.WARNING, logger="hinn_core.training"):
        train(coupled, ModelSpec(dof=1, width=4), QUICK)
    assert "the nonseparable system's H couples q and p" in caplog.text
    assert "every training window is 5 step(s) long, not rollout_steps = 10" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hinn_core.training"):
        train(coupled, ModelSpec(architecture="hinn", dof=1, width=4), TrainConfig(epochs=2, lbfgs_iterations=0,
                                                                                     rollout_steps=5))
    assert caplog.text == ""


@pytest.mark.parametrize(("spec", "field"), [({"resnet_step": "abc"}, "model.resnet_step"),
                                             ({"resnet_step": None}, "model.resnet_step"),
                                             ({"resnet_step": True}, "model.resnet_step")])
def test_model_spec_resnet_step_must_be_a_number(spec: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: must be a number"):
        ModelSpec(**spec)
    assert type(ModelSpec(resnet_step=np.float32(0.5)).resnet_step) is float


def test_lbfgs_rollout_steps_refuses_a_bool() -> None:
    with pytest.raises(ConfigError, match="training.lbfgs_rollout_steps"):
        TrainConfig(lbfgs_rollout_steps=True)


def test_whole_trajectories_group_by_length() -> None:
    ds = _mixed_lengths()
    groups = _whole_trajectories(ds)
    assert sorted((idx.tolist(), w.target.shape[1]) for idx, w in groups) == [([0, 2], 10), ([1], 3), ([3], 6)]
    for idx, w in groups:
        for row, i in enumerate(idx.tolist()):
            tr = ds.trajectories[i]
            np.testing.assert_array_equal(w.x0[row].numpy(), tr.state[0])
            np.testing.assert_array_equal(w.target[row].numpy(), tr.state[1:])
            np.testing.assert_array_equal(w.h[row].numpy(), tr.steps)


@pytest.mark.parametrize("engine", ["torch", "numba"])
def test_learned_start_loss_counts_every_trajectory_whole(engine: str) -> None:
    """Once, one short trajectory cut every trajectory's fit to its length."""
    ds = _mixed_lengths()
    model = DynamicsModel(ModelSpec(dof=1, width=4)).double()
    start = torch.as_tensor(np.stack([tr.state[0] for tr in ds.trajectories])) + 0.01

    def by_definition(rows: list[int]) -> float:
        """Each trajectory alone, rolled out whole from its learned start; every point counts once."""
        sse, points = 0.0, 0
        for i in rows:
            tr = ds.trajectories[i]
            with torch.no_grad():
                q, p = model.rollout(start[i : i + 1, :1], start[i : i + 1, 1:], torch.as_tensor(tr.steps))
            x = torch.cat([q, p], -1)[0].numpy()
            sse += float(((x[1:] - tr.state[1:]) ** 2).sum() + ((start[i].numpy() - tr.state[0]) ** 2).sum())
            points += 2 * tr.n_points
        return sse / points

    got = _learned_start_loss(model, _whole_trajectories(ds), start, engine).detach()
    assert float(got) == pytest.approx(by_definition([0, 1, 2, 3]), rel=1e-12)
    equal = ds.subset([0, 2])  # one length: the loss as before this change, `_rollout_loss` on one Windows
    (group,) = _whole_trajectories(equal)
    one = float(_learned_start_loss(model, [group], start[[0, 2]], engine).detach())
    assert one == pytest.approx(by_definition([0, 2]), rel=1e-12)
    assert one == float(_rollout_loss(model, group[1], start[[0, 2]], engine).detach())


def test_training_with_learned_starts_on_mixed_lengths(caplog) -> None:
    ds = _mixed_lengths()
    with caplog.at_level(logging.WARNING, logger="hinn_core.training"):
        result = train(ds, ModelSpec(dof=1, width=4), TrainConfig(epochs=2, lbfgs_iterations=3, val_fraction=0,
                                                                  initial_state="learned"))
    assert result.history[-1]["phase"] == "lbfgs" and np.isfinite(result.final_train_loss)
    assert "every training window is 3 step(s) long" in caplog.text


def test_split_names_a_fraction_given_as_a_string(spring) -> None:
    with pytest.raises(DataError, match="^fractions: must be a number, got 'a'"):
        spring.split(("a", "b"))


def test_predict_names_the_shape_of_a_3d_initial_condition() -> None:
    model = DynamicsModel(ModelSpec(dof=1, width=4)).double()
    with pytest.raises(DataError, match=r"^initial_conditions.q: must be one initial condition \(1,\) or a batch "
                                        r"\(B, 1\), got shape \(1, 1, 1\)"):
        predict(model, [[[0.1]]], [[[0.1]]], [0.0, 1.0])


def test_rk45_on_the_torch_path_takes_read_only_times_without_a_warning() -> None:
    model = DynamicsModel(ModelSpec(dof=1, width=4)).double()
    times = np.linspace(0.0, 1.0, 5)
    times.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = predict(model, [0.1], [0.2], times, integrator="rk45", engine="torch", system=make_system("spring"))
    assert pred.q.shape == (1, 5, 1)
