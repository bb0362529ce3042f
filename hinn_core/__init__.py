"""hinn_core — learn Hamiltonian dynamics from trajectories (no server, no database).

    from hinn_core import generate_dataset, ModelSpec, TrainConfig, train, evaluate, predict
    data = generate_dataset("spring", n_trajectories=50, t_end=3.0, dt=0.1, seed=0)
    train_set, test_set = data.split((0.8, 0.2))
    result = train(train_set, ModelSpec(architecture="hinn-separable", dof=1))
    print(evaluate(result.model, test_set))
"""

from hinn_core.adaptive import Tolerances
from hinn_core.artifacts import (
    LoadedModel,
    build_metadata,
    load_model,
    model_from_bytes,
    model_to_bytes,
    save_model,
)
from hinn_core.data import Trajectory, TrajectoryDataset, generate_dataset
from hinn_core.dataio import load_dataset, save_dataset
from hinn_core.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    DataLimitError,
    HinnError,
    IntegrationError,
    TrainingCancelled,
    TrainingDiverged,
)
from hinn_core.evaluation import evaluate, rollout_errors
from hinn_core.integrators import INTEGRATORS, get_integrator, integrate
from hinn_core.models import ARCHITECTURES, DEFAULT_ACTIVATION, DEFAULT_INTEGRATOR, DynamicsModel, ModelSpec
from hinn_core.rollout import Prediction, make_time_grid, predict
from hinn_core.systems import SYSTEMS, System, make_system
from hinn_core.training import TrainConfig, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES", "DEFAULT_ACTIVATION", "DEFAULT_INTEGRATOR", "INTEGRATORS", "SYSTEMS",
    "ArtifactError", "ConfigError", "DataError", "DataLimitError", "DynamicsModel", "HinnError", "IntegrationError",
    "LoadedModel", "ModelSpec", "Prediction", "System", "TrainConfig", "TrainResult", "Trajectory",
    "Tolerances", "TrajectoryDataset", "TrainingCancelled", "TrainingDiverged",
    "build_metadata", "evaluate", "generate_dataset", "get_integrator", "integrate", "load_dataset",
    "load_model", "make_system", "make_time_grid", "model_from_bytes", "model_to_bytes", "predict",
    "rollout_errors", "save_dataset", "save_model", "train",
]
