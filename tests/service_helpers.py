"""Helpers for database, job and worker tests (not fixtures: plain functions)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from app import datasets, jobs
from app.db import migrate
from app.db.session import Database
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
