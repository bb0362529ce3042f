"""Shared fixtures: small datasets and a quickly trained spring model (session scoped)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
import torch

from app.db.session import normalise_url
from hinn_core import ModelSpec, TrainConfig, TrajectoryDataset, generate_dataset, train
from hinn_core.training import TrainResult

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
def postgres_base_url() -> str | None:
    return os.environ.get("HINN_TEST_POSTGRES_URL") or None


def _require_postgres() -> str:
    url = postgres_base_url()
    if url is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but HINN_TEST_POSTGRES_URL is not set: PostgreSQL tests must run in CI")
        pytest.skip("no PostgreSQL: set HINN_TEST_POSTGRES_URL (make test does when one answers)")
    return url


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A fresh schema in the test database; the URL pins ``search_path`` to it; dropped afterwards."""
    base = _require_postgres()
    schema = "hinn_t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(normalise_url(base))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{normalise_url(base)}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


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
