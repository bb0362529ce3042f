"""Shared fixtures: small datasets and a quickly trained spring model (session scoped)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from hinn_core import ModelSpec, TrainConfig, TrajectoryDataset, generate_dataset, train
from hinn_core.training import TrainResult
from tests.service_helpers import postgres_schema_url

# One thread: the suite runs on 2 cores beside other processes; threads only contend there.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def spring_data() -> TrajectoryDataset:
    return generate_dataset("spring", n_trajectories=20, t_end=3.0, dt=0.1, seed=0)


@pytest.fixture(scope="session")
def trained_spring(spring_data: TrajectoryDataset) -> TrainResult:
    """A separable HINN on spring data, trained for a few seconds (not to full accuracy)."""
    train_set, _ = spring_data.split((0.8, 0.2), seed=0)
    return train(train_set, ModelSpec(architecture="hinn-separable", dof=1, width=16),
                 TrainConfig(epochs=30, lbfgs_iterations=40, seed=0))


# -- databases ---------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    """Every database test runs on SQLite (a temp file) and on PostgreSQL (a fresh schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/hinn.db"
    else:
        with postgres_schema_url() as url:
            yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """PostgreSQL only (multi-process concurrency tests)."""
    with postgres_schema_url() as url:
        yield url
