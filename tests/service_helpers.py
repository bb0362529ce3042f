"""Helpers for database, job and worker tests (not fixtures: plain functions)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from app import datasets, jobs
from app.db import migrate
from app.db.session import Database, normalise_url
from app.settings import Settings
from hinn_core import TrainConfig, generate_dataset


def make_db(url: str) -> Database:
    db = Database(url)
    migrate.upgrade(db.engine)
    return db


def service_settings(url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"database_url": url, "workers": 0, "poll_seconds": 0.1, "lease_seconds": 5.0,
                            "device": "cpu"}
    base.update(overrides)
    return Settings(**base)


def add_dataset(db: Database, settings: Settings, n: int = 6) -> str:
    with db.session(write=True) as s:
        row = datasets.store(s, "tiny-spring", generate_dataset("spring", n, 1.0, 0.1, seed=0), settings)
        return row.id


def tiny_request(epochs: int = 2, **training: Any) -> dict[str, Any]:
    """A resolved training request (as the API stores it) for a model that trains in a second."""
    config = TrainConfig(epochs=epochs, lbfgs_iterations=0, patience=0, **training).to_dict()
    return {"model": {"architecture": "hinn-separable", "width": 4, "depth": 1, "activation": "tanh",
                      "resnet_step": 0.5},
            "integrator": "leapfrog", "training": config, "test_fraction": 0.2}


def submit(db: Database, dataset_id: str, name: str = "tiny", max_attempts: int = 3, **kw: Any) -> str:
    with db.session(write=True) as s:
        job, _ = jobs.submit(s, name=name, request=tiny_request(**kw), dataset_id=dataset_id,
                             max_attempts=max_attempts)
        return job.id


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1, what: str = "condition"
             ) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def postgres_base_url() -> str | None:
    return os.environ.get("HINN_TEST_POSTGRES_URL") or None


def require_postgres() -> str:
    """The PostgreSQL URL; a failure under CI=true, a visible skip elsewhere, when there is none."""
    url = postgres_base_url()
    if url is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but HINN_TEST_POSTGRES_URL is not set: PostgreSQL tests must run in CI")
        pytest.skip("no PostgreSQL: set HINN_TEST_POSTGRES_URL (make test does when one answers)")
    return url


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A fresh schema in the test database; the URL pins ``search_path`` to it; dropped afterwards."""
    base = normalise_url(require_postgres())
    schema = "hinn_t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
