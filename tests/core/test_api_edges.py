"""Edges of the public Python API found by a user-level review: a system of another dof, evaluate's
bounds, ModelSpec's integer fields. Each is a hinn_core error naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

from hinn_core import DynamicsModel, ModelSpec, evaluate, generate_dataset, make_system, predict
from hinn_core.errors import ConfigError


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
                                               ({"horizon_factor": float("nan")}, "horizon_factor"),
                                               ({"horizon_factor": -1.0}, "horizon_factor")])
def test_evaluate_refuses_bad_bounds_by_name(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        evaluate(_model(1), generate_dataset("spring", 2, 0.5, 0.1, seed=0), **kwargs)


def test_model_spec_integers() -> None:
    with pytest.raises(ConfigError, match="model.dof"):
        ModelSpec(dof=True)
    assert ModelSpec(dof=np.int64(2)).dof == 2 and type(ModelSpec(dof=np.int64(2)).dof) is int
