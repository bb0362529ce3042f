"""Training controls: early stopping with restored best weights, gradient clipping, the learning-rate
schedules, the energy constant without a known system, and the L-BFGS polish stopping on divergence."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import hinn_core.training as training
from hinn_core import IntegrationError, ModelSpec, TrainConfig, TrajectoryDataset, generate_dataset, train
from hinn_core.training import PLATEAU_FACTOR, PLATEAU_PATIENCE, make_windows

SPEC = ModelSpec(dof=1, width=8)


def _val_loss(result: training.TrainResult, val_set: TrajectoryDataset) -> float:
    """The validation loss of the weights ``train`` returned, recomputed from scratch."""
    model = result.model
    w = make_windows(val_set, result.config.rollout_steps).to(model.device, model.dtype)
    with torch.no_grad():
        return float(training._rollout_loss(model, w, engine="torch"))


def _grad_norm(opt: torch.optim.Optimizer) -> float:
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


# -- early stopping ----------------------------------------------------------------------------------


def test_early_stopping_on_validation_restores_the_best_epoch(spring_data) -> None:
    train_set, val_set = spring_data.split((0.8, 0.2), seed=0)
    config = TrainConfig(epochs=60, lbfgs_iterations=0, patience=3, learning_rate=0.05, lr_schedule="constant")
    result = train(train_set, SPEC, config, val_dataset=val_set)
    vals = [h["val_loss"] for h in result.history]
    assert result.stopped_early and result.summary()["stopped_early"] is True
    assert len(vals) < config.epochs
    # it stopped exactly `patience` epochs after the best one, none of which improved on it
    best = int(np.argmin(vals)) + 1
    assert result.best_epoch == best == len(vals) - config.patience
    assert result.best_val_loss == min(vals) < min(vals[best:])
    # the returned weights are the best epoch's, not the last epoch's
    recomputed = _val_loss(result, val_set)
    assert recomputed == pytest.approx(min(vals), rel=1e-9, abs=0)
    assert recomputed < vals[-1] * (1 - 1e-6)


def test_patience_zero_turns_early_stopping_off(spring_data) -> None:
    train_set, val_set = spring_data.split((0.8, 0.2), seed=0)
    kwargs = {"epochs": 10, "lbfgs_iterations": 0, "learning_rate": 0.3, "lr_schedule": "constant"}
    stops = train(train_set, SPEC, TrainConfig(patience=2, **kwargs), val_dataset=val_set)
    assert stops.stopped_early and len(stops.history) < 10  # this recipe does trigger patience = 2
    runs = train(train_set, SPEC, TrainConfig(patience=0, **kwargs), val_dataset=val_set)
    assert not runs.stopped_early and len(runs.history) == 10


# -- gradient clipping -------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [1e-3, 1e9])
def test_adam_applies_gradients_clipped_to_grad_clip(spring_data, monkeypatch, clip: float) -> None:
    """Every gradient Adam steps with has norm ≤ grad_clip; a bound above every norm changes nothing."""
    before, applied = [], []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy_clip(parameters, max_norm, *args, **kwargs):
        assert max_norm == clip
        norm = real_clip(parameters, max_norm, *args, **kwargs)
        before.append(float(norm))
        return norm

    def record(opt, args, kwargs) -> None:
        if isinstance(opt, torch.optim.Adam):
            applied.append(_grad_norm(opt))

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy_clip)
    handle = register_optimizer_step_pre_hook(record)
    try:
        train(spring_data, SPEC, TrainConfig(epochs=3, lbfgs_iterations=0, batch_size=64, grad_clip=clip))
    finally:
        handle.remove()
    assert len(applied) == len(before) >= 3 * 4  # every Adam step, after clipping
    before_, applied_ = np.array(before), np.array(applied)
    if clip < 1:
        assert (before_ > clip).all()  # the raw gradients are larger: clipping had work to do
        assert (applied_ <= clip * (1 + 1e-9)).all()
        np.testing.assert_allclose(applied_, clip, rtol=1e-4)
    else:
        assert (before_ < clip).all() and (before_ > 0).all()
        np.testing.assert_allclose(applied_, before_, rtol=1e-12)  # untouched


# -- learning-rate schedules -------------------------------------------------------------------------


def test_cosine_schedule_follows_its_curve_from_lr_towards_the_floor(spring_data) -> None:
    lr, factor, epochs = 0.02, 0.1, 8
    result = train(spring_data, SPEC, TrainConfig(epochs=epochs, lbfgs_iterations=0, patience=0, learning_rate=lr,
                                                  min_lr_factor=factor, lr_schedule="cosine"))
    floor = lr * factor
    expected = [floor + (lr - floor) * (1 + math.cos(math.pi * (e - 1) / epochs)) / 2 for e in range(1, epochs + 1)]
    np.testing.assert_allclose([h["lr"] for h in result.history], expected, rtol=1e-12)
    assert result.history[0]["lr"] == lr and result.history[-1]["lr"] < 0.05 * lr + floor


def test_constant_schedule_keeps_the_learning_rate(spring_data) -> None:
    result = train(spring_data, SPEC, TrainConfig(epochs=4, lbfgs_iterations=0, learning_rate=0.003,
                                                  lr_schedule="constant"))
    assert [h["lr"] for h in result.history] == [0.003] * 4


def test_plateau_schedule_halves_after_patience_epochs_without_improvement_down_to_the_floor(monkeypatch) -> None:
    data = generate_dataset("spring", n_trajectories=3, t_end=0.6, dt=0.1, seed=0)
    lr, factor = 0.01, 0.3

    def freeze(opt, args, kwargs) -> None:  # Adam skips parameters without a gradient: the weights stay put
        if isinstance(opt, torch.optim.Adam):
            opt.zero_grad(set_to_none=True)

    handle = register_optimizer_step_pre_hook(freeze)
    try:
        epochs = 2 * (PLATEAU_PATIENCE + 1) + 3
        result = train(data, ModelSpec(dof=1, width=4), TrainConfig(
            epochs=epochs, lbfgs_iterations=0, patience=0, rollout_steps=2, learning_rate=lr,
            min_lr_factor=factor, lr_schedule="plateau"))
    finally:
        handle.remove()
    vals = [h["val_loss"] for h in result.history]
    assert len(set(vals)) == 1  # frozen weights: the validation loss never improves after epoch 1
    # epoch 1 sets the best; each further PLATEAU_PATIENCE + 1 epochs without improvement cut lr once
    n = PLATEAU_PATIENCE + 1
    floor = max(lr * PLATEAU_FACTOR**2, lr * factor)
    expected = [lr] * (1 + n) + [lr * PLATEAU_FACTOR] * n + [floor] * (epochs - 1 - 2 * n)
    assert PLATEAU_FACTOR**2 < factor  # the third segment sits on the floor
    np.testing.assert_allclose([h["lr"] for h in result.history], expected, rtol=1e-12)


# -- the energy constant -----------------------------------------------------------------------------


@pytest.mark.parametrize("known", [False, True])
def test_energy_offset_rule_holds_on_the_training_states(spring_data, known: bool) -> None:
    """No known system: H_θ has zero mean over the training states; known: mean(H_true − H_θ) = 0."""
    data = spring_data if known else TrajectoryDataset.from_lists(spring_data.to_lists())
    assert (data.system is not None) == known
    train_set, val_set = data.split((0.8, 0.2), seed=0)
    result = train(train_set, SPEC, TrainConfig(epochs=3, lbfgs_iterations=0), val_dataset=val_set)
    x = train_set.states()
    h = result.model.hamiltonian(torch.as_tensor(x[:, :1]), torch.as_tensor(x[:, 1:])).detach().numpy()
    target = 0.5 * (x[:, 0] ** 2 + x[:, 1] ** 2) if known else np.zeros(len(x))
    scale = np.abs(h).mean()
    assert abs(np.mean(target - h)) < 1e-12 * scale
    assert abs(result.energy_offset) > 1e-6 * scale  # the rule did move the constant
    assert float(result.model.field.energy_offset) == result.energy_offset == result.summary()["energy_offset"]


# -- L-BFGS divergence -------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["inf", "integration"])
def test_lbfgs_divergence_stops_the_polish_keeps_the_best_weights_and_says_why(
        spring_data, monkeypatch, caplog, failure: str) -> None:
    """Poison the training loss from the 4th evaluation of the 2nd L-BFGS chunk on (mid line search)."""
    real = training._rollout_loss
    state = {"armed": False, "evals": 0, "left_at": None}

    def loss(model, w, start=None, engine="torch"):
        out = real(model, w, start, engine)
        if state["armed"] and torch.is_grad_enabled():  # the L-BFGS objective, not validation
            state["evals"] += 1
            if state["evals"] > 3:
                state["left_at"] = {k: v.clone() for k, v in model.state_dict().items()}
                if failure == "integration":
                    raise IntegrationError("Newton iteration did not converge (test)")
                return out * math.inf
        return out

    def progress(rec) -> None:
        state["armed"] = state["armed"] or rec["phase"] == "lbfgs"

    monkeypatch.setattr(training, "_rollout_loss", loss)
    train_set, val_set = spring_data.split((0.8, 0.2), seed=0)
    with caplog.at_level(logging.WARNING, logger="hinn_core.training"):
        result = train(train_set, SPEC, TrainConfig(epochs=3, lbfgs_iterations=200), val_dataset=val_set,
                       progress=progress)
    reason = result.lbfgs_stopped
    assert ("non-finite loss (inf) at loss evaluation" if failure == "inf" else "implicit step failed") in reason
    assert "kept the best weights" in reason and result.summary()["lbfgs_stopped"] == reason
    assert any(reason in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # one L-BFGS chunk was recorded; the poisoned one was not
    assert [h["phase"] for h in result.history] == ["adam"] * 3 + ["lbfgs"]
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in result.history)
    # the weights returned are the best finite ones, not where L-BFGS was when it failed
    assert state["left_at"] is not None
    final = result.model.state_dict()
    assert not all(torch.equal(final[k], state["left_at"][k]) for k in final if k != "field.energy_offset")
    assert all(torch.isfinite(v).all() for v in final.values())
    assert _val_loss(result, val_set) == pytest.approx(min(h["val_loss"] for h in result.history), rel=1e-9)
    assert result.best_epoch == 4  # the polished chunk beat Adam


def test_lbfgs_records_a_normal_stop(spring_data) -> None:
    result = train(spring_data, SPEC, TrainConfig(epochs=2, lbfgs_iterations=20))
    assert result.lbfgs_stopped in ("budget: 20 iterations", "converged: L-BFGS made no step")
    assert train(spring_data, SPEC, TrainConfig(epochs=2, lbfgs_iterations=0)).lbfgs_stopped == ""
