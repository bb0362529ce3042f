"""Training: the spring target of the README, determinism, baselines, callbacks and failures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hinn_core import (
    ConfigError,
    ModelSpec,
    TrainConfig,
    TrainingCancelled,
    TrainingDiverged,
    evaluate,
    generate_dataset,
    train,
)
from hinn_core.networks import HamiltonianNet
from hinn_core.training import make_windows, resolve_dtype

FAST = {"epochs": 3, "lbfgs_iterations": 0}


@pytest.mark.slow
def test_defaults_learn_spring_to_readme_accuracy() -> None:
    """The README promise: defaults alone, 50 noise-free trajectories on [0, 3], dt = 0.1."""
    data = generate_dataset("spring", n_trajectories=50, t_end=3.0, dt=0.1, seed=0)
    train_set, test_set = data.split((0.8, 0.2), seed=0)
    result = train(train_set)
    metrics = evaluate(result.model, test_set)
    assert result.spec == ModelSpec()  # the defaults, nothing chosen
    assert metrics["rollout_mse"] < 1e-5
    assert metrics["long_horizon"]["t_end"] == pytest.approx(30.0)
    assert metrics["long_horizon"]["energy_rel_error_max"] < 0.01
    # the learned H is calibrated to the true energy (physical sign, fitted constant)
    x = test_set.states()
    learned = result.model.hamiltonian(torch.as_tensor(x[:, :1]), torch.as_tensor(x[:, 1:])).detach().numpy()
    true = 0.5 * (x[:, 0] ** 2 + x[:, 1] ** 2)
    assert np.abs(learned - true).max() < 0.01


@pytest.mark.slow
def test_separable_hinn_beats_both_baselines_on_spring() -> None:
    data = generate_dataset("spring", n_trajectories=30, t_end=3.0, dt=0.1, seed=1)
    train_set, test_set = data.split((0.8, 0.2), seed=0)
    config = TrainConfig(epochs=40, lbfgs_iterations=60)
    mse = {}
    for arch in ("hinn-separable", "hnn", "mlp"):
        # tanh: at this small budget on clean in-range data it fits faster than the default log cosh
        # (measured 5e-4 vs 1.7e-2); log cosh wins where it matters, outside the training states
        result = train(train_set, ModelSpec(architecture=arch, dof=1, width=16, activation="tanh"), config)
        mse[arch] = evaluate(result.model, test_set)["long_horizon"]["state_mse"]
    assert mse["hinn-separable"] < mse["hnn"]
    assert mse["hinn-separable"] < mse["mlp"]


def test_training_is_deterministic_for_a_seed(spring_data) -> None:
    spec = ModelSpec(architecture="hinn-separable", dof=1, width=8)
    a = train(spring_data, spec, TrainConfig(epochs=2, lbfgs_iterations=20, seed=3)).model.state_dict()
    b = train(spring_data, spec, TrainConfig(epochs=2, lbfgs_iterations=20, seed=3)).model.state_dict()
    c = train(spring_data, spec, TrainConfig(epochs=2, lbfgs_iterations=20, seed=4)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_progress_reports_every_epoch_with_losses(spring_data) -> None:
    seen = []
    result = train(spring_data, ModelSpec(architecture="hinn-separable", dof=1, width=8),
                   TrainConfig(epochs=4, lbfgs_iterations=40, patience=0), progress=seen.append)
    assert [r["epoch"] for r in seen] == list(range(1, len(seen) + 1))
    assert [r["phase"] for r in seen[:4]] == ["adam"] * 4
    assert seen[-1]["phase"] == "lbfgs"
    assert all(r["epochs"] == 4 + 2 for r in seen)
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in seen)
    assert result.history == seen
    # L-BFGS polishing lowers the validation loss below the Adam phase's best
    assert min(r["val_loss"] for r in seen if r["phase"] == "lbfgs") < min(r["val_loss"] for r in seen[:4])


def test_cancellation_is_checked_between_epochs(spring_data) -> None:
    calls = []

    def stop_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(TrainingCancelled, match="before epoch 3"):
        train(spring_data, ModelSpec(architecture="hinn-separable", dof=1, width=8),
              TrainConfig(epochs=10, lbfgs_iterations=0), should_stop=stop_after_two)


def test_non_finite_state_raises_a_clear_divergence_error(spring_data, monkeypatch) -> None:
    def broken_grad(self, q, p):
        return q * float("nan"), p * float("nan")

    monkeypatch.setattr(HamiltonianNet, "grad", broken_grad)
    with pytest.raises(TrainingDiverged, match="epoch 1.*non-finite.*smaller dt"):
        # the torch engine: the compiled one never calls HamiltonianNet.grad (see test_compiled_training)
        train(spring_data, ModelSpec(architecture="hinn", dof=1, integrator="rk4", width=8),
              TrainConfig(**FAST, engine="torch"))


@pytest.mark.parametrize("architecture", ["hinn", "hinn-separable", "hnn", "mlp"])
def test_every_architecture_trains_on_variable_steps_in_float32(architecture) -> None:
    data = generate_dataset("pendulum", n_trajectories=6, t_end=1.0, dt=0.1, dt_jitter=0.5, seed=2)
    assert not data.time_stats()["uniform"]
    result = train(data, ModelSpec(architecture=architecture, dof=1, width=8),
                   TrainConfig(epochs=3, lbfgs_iterations=20, dtype="float32"))
    assert result.model.dtype == torch.float32
    assert all(math.isfinite(h["train_loss"]) for h in result.history)
    # the loss went down from the first epoch
    assert min(h["train_loss"] for h in result.history) < result.history[0]["train_loss"]


def test_three_body_trains_and_evaluates_without_error() -> None:
    data = generate_dataset("three-body", n_trajectories=4, t_end=1.0, dt=0.1, seed=0)
    result = train(data, ModelSpec(architecture="hinn-separable", dof=6, width=8), TrainConfig(**FAST))
    metrics = evaluate(result.model, data, horizon_factor=2)
    assert math.isfinite(metrics["rollout_mse"])
    assert set(metrics["conserved_drift"]) == {"momentum_x", "momentum_y", "angular_momentum"}


def test_windows_follow_the_data_time_stamps() -> None:
    data = generate_dataset("spring", n_trajectories=2, t_end=1.0, dt=0.1, dt_jitter=0.5, seed=0)
    w = make_windows(data, 3)
    tr = data.trajectories[0]
    assert w.x0.shape == (2 * (11 - 3), 2) and w.target.shape == (16, 3, 2) and w.h.shape == (16, 3)
    np.testing.assert_array_equal(w.h[1].numpy(), tr.steps[1:4])
    np.testing.assert_array_equal(w.target[1, 0].numpy(), tr.state[2])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"epochs": 0}, "training.epochs"), ({"learning_rate": -1.0}, "training.learning_rate"),
     ({"device": "tpu"}, "training.device"), ({"dtype": "float16"}, "training.dtype"),
     ({"lr_schedule": "linear"}, "training.lr_schedule"), ({"val_fraction": 1.0}, "training.val_fraction"),
     ({"learning_rate": "1e-3"}, "training.learning_rate"), ({"learning_rate": True}, "training.learning_rate"),
     ({"weight_decay": None}, "training.weight_decay"), ({"val_fraction": "0.1"}, "training.val_fraction"),
     ({"grad_clip": float("inf")}, "training.grad_clip")],
)
def test_bad_training_options_name_the_field(kwargs, field) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(**kwargs)
    assert info.value.field == field


def test_numpy_numbers_in_training_options_become_plain_floats() -> None:
    """The config is stored as JSON: a np.float32 learning rate must not reach `json.dumps`."""
    config = TrainConfig(learning_rate=np.float32(0.5), weight_decay=np.float64(0.0))
    assert type(config.learning_rate) is float and config.learning_rate == 0.5
    assert type(config.weight_decay) is float
    json.dumps(config.to_dict())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"architecture": "transformer"}, "model.architecture"), ({"integrator": "verlet2"}, "integrator"),
     ({"activation": "relu"}, "model.activation"), ({"width": 0}, "model.width")],
)
def test_bad_model_options_name_the_field(kwargs, field) -> None:
    with pytest.raises(ConfigError) as info:
        ModelSpec(**kwargs)
    assert info.value.field == field


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(spring_data) -> None:
    with pytest.raises(ConfigError, match="no GPU"):
        train(spring_data, ModelSpec(dof=1), TrainConfig(device="cuda", **FAST))


def test_auto_dtype_is_float32_on_cuda_and_float64_elsewhere(spring_data) -> None:
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float64
    assert resolve_dtype("float64", torch.device("cuda")) == torch.float64
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32
    result = train(spring_data, ModelSpec(dof=1, width=8), TrainConfig(device="cpu", **FAST))
    assert result.model.dtype == torch.float64


def test_model_dof_must_match_the_data(spring_data) -> None:
    with pytest.raises(ConfigError, match="dof"):
        train(spring_data, ModelSpec(dof=2), TrainConfig(**FAST))


@pytest.mark.slow
def test_learned_initial_states_reduce_the_noise_bias() -> None:
    """Errors-in-variables: with noisy observations, fitting each window's start state with the weights
    gives a model closer to the clean dynamics than starting windows from the noisy observations."""
    from hinn_core import make_system

    system = make_system("spring", {"m": 0.5, "k": 2.0})  # HNN's spring: H = q² + p²
    # HNN's noisy-spring protocol: 50 trajectories, 25 for training, 30 samples on [0, 3], sigma = 0.05
    noisy = generate_dataset(system, 50, 3.0, 3 / 29, noise_std=0.05, seed=0)
    clean = generate_dataset(system, 50, 3.0, 3 / 29, noise_std=0.0, seed=0)  # same ICs, no noise
    train_set, _ = noisy.split((0.5, 0.5), seed=0)
    _, test_clean = clean.split((0.5, 0.5), seed=0)
    spec = ModelSpec(architecture="hinn-separable", dof=1)
    errors = {}
    for mode in ("observed", "learned"):
        result = train(train_set, spec, TrainConfig(initial_state=mode))
        errors[mode] = evaluate(result.model, test_clean)["long_horizon"]["state_mse"]
    assert errors["learned"] < 0.7 * errors["observed"], errors


def test_lbfgs_stops_when_the_validation_loss_plateaus(spring_data) -> None:
    """5 chunks of 20 iterations without a 1 % gain end the polish long before a huge budget."""
    from hinn_core.training import LBFGS_CHUNK, LBFGS_MIN_GAIN, LBFGS_PATIENCE

    result = train(spring_data, ModelSpec(dof=1, width=4), TrainConfig(epochs=3, lbfgs_iterations=20_000))
    lbfgs = [r for r in result.history if r["phase"] == "lbfgs"]
    assert LBFGS_PATIENCE < len(lbfgs) < 20_000 // LBFGS_CHUNK
    assert result.lbfgs_stopped.startswith("plateau")
    vals = [r["val_loss"] for r in lbfgs]
    ref = min(vals[: -LBFGS_PATIENCE])
    assert min(vals[-LBFGS_PATIENCE:]) >= ref * (1 - LBFGS_MIN_GAIN)  # the last chunks gained < 1 %
