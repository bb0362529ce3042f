"""Edges of the public Python API found by user-level reviews: a system of another dof, evaluate's
bounds, ModelSpec's integer fields, numbers given as strings, integrate's arguments. Each is a
hinn_core error naming the argument, not a raw TypeError or torch message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hinn_core import (
    DynamicsModel,
    ModelSpec,
    evaluate,
    generate_dataset,
    integrate,
    make_system,
    make_time_grid,
    predict,
)
from hinn_core.data import check_real
from hinn_core.dynamics import SystemDynamics
from hinn_core.errors import ConfigError, DataError


def _model(dof: int) -> DynamicsModel:
    return DynamicsModel(ModelSpec(dof=dof, width=4, depth=1)).double()


def test_a_system_of_another_dof_is_refused_by_predict_and_evaluate() -> None:
    """A dof-2 model with the spring's H_true was silently wrong; a dof-1 one with Hénon–Heiles an IndexError."""
    t = np.linspace(0.0, 1.0, 11)
    with pytest.raises(ConfigError, match="system: the spring system has dof 1, the model 2"):
        predict(_model(2), [0.1, 0.1], [0.2, 0.2], t, system=make_system("spring"))
    with pytest.raises(ConfigError, match="system: the henon-heiles system has dof 2, the model 1"):
        predict(_model(1), [0.1], [0.2], t, system=make_system("henon-heiles"))
    data = generate_dataset("spring", 2, 0.5, 0.1, seed=0)
    with pytest.raises(ConfigError, match="system"):
        evaluate(_model(1), data, system=make_system("henon-heiles"))


@pytest.mark.parametrize(("kwargs", "field"), [({"max_long_trajectories": 0}, "max_long_trajectories"),
                                               ({"max_long_trajectories": True}, "max_long_trajectories"),
                                               ({"horizon_factor": "10"}, "horizon_factor"),
                                               ({"horizon_factor": float("nan")}, "horizon_factor"),
                                               ({"horizon_factor": -1.0}, "horizon_factor")])
def test_evaluate_refuses_bad_bounds_by_name(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        evaluate(_model(1), generate_dataset("spring", 2, 0.5, 0.1, seed=0), **kwargs)


def test_model_spec_integers() -> None:
    with pytest.raises(ConfigError, match="model.dof"):
        ModelSpec(dof=True)
    assert ModelSpec(dof=np.int64(2)).dof == 2 and type(ModelSpec(dof=np.int64(2)).dof) is int


@pytest.mark.parametrize("value", ["3", None, True, np.bool_(True), [1.0], 10**400])
def test_check_real_refuses_what_is_not_a_float(value: object) -> None:
    with pytest.raises(DataError, match="^x: "):
        check_real(value, "x")


def test_check_real_takes_python_and_numpy_numbers() -> None:
    values = [3, 2.5, np.float32(0.5), np.int64(7), np.array(1.5), torch.tensor(2.0), float("nan")]
    got = [check_real(v, "x") for v in values]
    assert all(type(g) is float for g in got)
    assert got[:6] == [3.0, 2.5, 0.5, 7.0, 1.5, 2.0] and np.isnan(got[6])
    for bad in (np.array([1.0]), np.array(True), torch.tensor([1.0, 2.0]), np.array("3")):
        with pytest.raises(DataError, match="^x: must be a number"):
            check_real(bad, "x")


@pytest.mark.parametrize(("kwargs", "field"), [({"t_end": "3"}, "t_end"), ({"dt": "0.1"}, "dt"),
                                               ({"dt_jitter": "0.1"}, "dt_jitter"),
                                               ({"noise_std": "0.1"}, "noise_std")])
def test_generate_dataset_names_a_number_given_as_a_string(kwargs: dict, field: str) -> None:
    with pytest.raises(DataError, match=f"^{field}: must be a number"):
        generate_dataset("spring", 2, **{"t_end": 1.0, "dt": 0.1, **kwargs})


@pytest.mark.parametrize(("args", "field"), [(("1", 0.1), "t_end"), ((1.0, None), "dt"),
                                             ((1.0, 0.1, "0"), "t_start"), ((1.0, 0.1, float("nan")), "t_start")])
def test_make_time_grid_names_a_bad_argument(args: tuple, field: str) -> None:
    with pytest.raises(DataError, match=f"^{field}: "):
        make_time_grid(*args)


def test_make_time_grid_takes_numpy_numbers() -> None:
    assert np.array_equal(make_time_grid(np.float32(1.0), np.int64(1), t_start=np.float64(0.0)), [0.0, 1.0])


_Q = torch.zeros(3, 1, dtype=torch.float64)


@pytest.mark.parametrize(("q0", "p0", "h", "field", "problem"), [
    (np.zeros((3, 1)), _Q, [0.1], "q0", "got ndarray"),
    (_Q[0], _Q[0], [0.1], "q0", "got a 1-D torch.float64 tensor"),
    (_Q.long(), _Q, [0.1], "q0", "got a 2-D torch.int64 tensor"),
    (_Q, torch.zeros(3, 2, dtype=torch.float64), [0.1], "p0", r"must match q0 \(\(3, 1\)"),
    (_Q, _Q.float(), [0.1], "p0", "must match q0"),
    (_Q, _Q, torch.zeros(2, 4), "h", r"with B = 3, got \(2, 4\)"),
    (_Q, _Q, torch.zeros(3, 4, 1), "h", "got \\(3, 4, 1\\)"),
    (_Q, _Q, "0.1", "h", "must be a tensor of step sizes"),
])
def test_integrate_names_a_bad_argument(q0: object, p0: object, h: object, field: str, problem: str) -> None:
    """Torch's own messages (a shape mismatch deep in a network) named none of the arguments."""
    with pytest.raises(DataError, match=f"^{field}: .*{problem}"):
        integrate("leapfrog", SystemDynamics(make_system("spring")), q0, p0, h)


def test_integrate_takes_steps_as_a_list_or_per_sample() -> None:
    dyn = SystemDynamics(make_system("spring"))
    q0 = torch.tensor([[1.0], [0.5], [0.0]], dtype=torch.float64)
    p0 = torch.zeros_like(q0)
    q_list, p_list = integrate("leapfrog", dyn, q0, p0, [0.1, 0.1])
    q_each, p_each = integrate("leapfrog", dyn, q0, p0, torch.full((3, 2), 0.1, dtype=torch.float64))
    assert q_list.shape == (3, 3, 1) and torch.equal(q_list, q_each) and torch.equal(p_list, p_each)
