"""Workers end to end: real training in spawned children, cancel, crashes, kills, many processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import undefer

from app import jobs
from app.db.models import Job, Model
from app.worker import Worker
from hinn_core import model_from_bytes
from tests.service_helpers import add_dataset, make_db, service_settings, submit, tiny_request, wait_for


@pytest.fixture
def env(database_url):
    db = make_db(database_url)
    settings = service_settings(database_url)
    yield db, settings, add_dataset(db, settings)
    db.dispose()


def _job(db, job_id) -> Job:
    with db.session() as s:
        return s.get(Job, job_id, options=[undefer(Job.history)])


def _models(db, job_id=None) -> list[Model]:
    with db.session() as s:
        q = select(Model)
        if job_id is not None:
            q = q.where(Model.job_id == job_id)
        return list(s.scalars(q))


def test_a_worker_trains_and_registers_a_loadable_model(env) -> None:
    db, settings, dataset_id = env
    job_id = submit(db, dataset_id, name="spring-tiny", epochs=3)
    assert Worker(db, settings, threads=1).run(max_jobs=1, exit_when_idle=True) == 1
    job = _job(db, job_id)
    assert job.status == "succeeded" and job.attempts == 1 and job.error is None
    assert job.progress["epoch"] == 3 and len(job.history) == 3
    (model,) = _models(db, job_id)
    assert (model.name, model.version, model.id) == ("spring-tiny", 1, job.model_id)
    with db.session() as s:
        blob = s.scalar(select(Model.artifact).where(Model.id == model.id))
    loaded = model_from_bytes(blob, expected_sha256=model.sha256)
    assert loaded.metadata["lineage"]["job_id"] == job_id
    assert loaded.metadata["lineage"]["dataset"]["system"] == "spring"
    assert model.metrics["rollout_mse"] >= 0 and model.config["model"]["architecture"] == "hinn-separable"


def test_a_training_error_fails_the_job_without_retry(env) -> None:
    db, settings, dataset_id = env
    job_id = submit(db, dataset_id, epochs=2, device="cuda" if not _has_cuda() else "tpu-nope")
    Worker(db, settings, threads=1).run(max_jobs=1, exit_when_idle=True)
    job = _job(db, job_id)
    assert job.status == "failed" and job.attempts == 1
    assert "ConfigError" in job.error and _models(db) == []


def test_an_unexpected_training_error_fails_at_once_and_keeps_server_paths_out(env, caplog) -> None:
    """Not a HinnError, but deterministic for the same request: one attempt, not max_attempts; the
    job's error (what its owner reads over the API) has no traceback, the worker's log has it."""
    db, settings, dataset_id = env
    with db.session(write=True) as s:
        job, _ = jobs.submit(s, name="bad", request={**tiny_request(), "test_fraction": "a fifth"},
                             dataset_id=dataset_id, max_attempts=3)
    with caplog.at_level("WARNING", logger="hinn.worker"):
        Worker(db, settings, threads=1).run(max_jobs=1, exit_when_idle=True)
    row = _job(db, job.id)
    assert row.status == "failed" and row.attempts == 1
    assert row.error.startswith("ValueError: could not convert string to float") and "File " not in row.error
    assert any(job.id in r.getMessage() and "Traceback" in r.getMessage() for r in caplog.records)


def test_a_single_trajectory_trains_without_validation(database_url) -> None:
    """Nothing to hold out: the job succeeds, and the stored metadata says null, not NaN (which JSON
    cannot carry: before, every such job failed while writing its model)."""
    db = make_db(database_url)
    settings = service_settings(database_url)
    try:
        job_id = submit(db, add_dataset(db, settings, n=1), epochs=2)
        Worker(db, settings, threads=1).run(max_jobs=1, exit_when_idle=True)
        job = _job(db, job_id)
        assert job.status == "succeeded", job.error
        assert all(h["val_loss"] is None for h in job.history)
        (model,) = _models(db, job_id)
        with db.session() as s:
            blob = s.scalar(select(Model.artifact).where(Model.id == model.id))
        meta = model_from_bytes(blob).metadata
        assert meta["training"]["best_val_loss"] is None and meta["training"]["n_val_trajectories"] == 0
    finally:
        db.dispose()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_cancel_a_running_job_kills_its_training(env) -> None:
    db, settings, dataset_id = env
    job_id = submit(db, dataset_id, epochs=100_000)
    worker = Worker(db, settings, threads=1)
    t = threading.Thread(target=worker.run, kwargs={"max_jobs": 1})
    t.start()
    wait_for(lambda: (_job(db, job_id).progress or {}).get("epoch", 0) >= 2, what="training progress")
    with db.session(write=True) as s:
        jobs.request_cancel(s, job_id)
    t.join(timeout=30)
    assert not t.is_alive()
    job = _job(db, job_id)
    assert job.status == "cancelled" and job.finished_at is not None and _models(db) == []


def test_a_killed_training_process_costs_one_attempt(env) -> None:
    db, settings, dataset_id = env
    job_id = submit(db, dataset_id, epochs=300)
    worker = Worker(db, settings, threads=1)
    t = threading.Thread(target=worker.run, kwargs={"max_jobs": 2})
    t.start()
    wait_for(lambda: (_job(db, job_id).progress or {}).get("epoch", 0) >= 1, what="training progress")
    child = wait_for(lambda: worker._child, what="a training child")
    os.kill(child.pid, signal.SIGKILL)
    t.join(timeout=120)
    job = _job(db, job_id)
    assert job.status == "succeeded" and job.attempts == 2
    assert len(_models(db, job_id)) == 1


class _WorkerProcess:
    """``hinn worker`` in a subprocess; its log goes to a file (read back on failure)."""

    def __init__(self, url: str, log_dir, *extra: str) -> None:
        self.log = log_dir / f"worker-{id(self)}.log"
        cmd = [sys.executable, "-m", "app.cli", "worker", "--database-url", url, "--threads", "1",
               "--poll-seconds", "0.1", *extra]
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text()


def test_a_sigkilled_worker_loses_its_job_to_another_after_the_lease(database_url, tmp_path) -> None:
    db = make_db(database_url)
    settings = service_settings(database_url)
    dataset_id = add_dataset(db, settings)
    job_id = submit(db, dataset_id, epochs=400)
    first = _WorkerProcess(database_url, tmp_path, "--lease-seconds", "2", "--max-jobs", "1")
    wait_for(lambda: (_job(db, job_id).progress or {}).get("epoch", 0) >= 1, timeout=90, what="first worker")
    first.kill()
    killed_owner = _job(db, job_id).lease_owner
    second = _WorkerProcess(database_url, tmp_path, "--lease-seconds", "5", "--max-jobs", "1")
    assert second.wait(timeout=240) == 0, second.output()
    job = _job(db, job_id)
    assert job.status == "succeeded" and job.attempts == 2
    (model,) = _models(db)  # the killed attempt registered nothing
    assert model.job_id == job_id and model.version == 1
    assert killed_owner is not None
    db.dispose()


def test_three_worker_processes_run_thirty_jobs_exactly_once(postgres_url, tmp_path) -> None:
    db = make_db(postgres_url)
    settings = service_settings(postgres_url)
    dataset_id = add_dataset(db, settings)
    ids = [submit(db, dataset_id, name="fleet", epochs=1) for _ in range(30)]
    procs = [_WorkerProcess(postgres_url, tmp_path, "--exit-when-idle") for _ in range(3)]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.output()
    with db.session() as s:
        rows = list(s.scalars(select(Job).where(Job.id.in_(ids))))
        versions = sorted(s.scalars(select(Model.version).where(Model.name == "fleet")))
        per_job = dict(s.execute(select(Model.job_id, func.count()).group_by(Model.job_id)).all())
        owners = {r.lease_owner for r in rows}
    assert all(r.status == "succeeded" and r.attempts == 1 for r in rows)
    assert versions == list(range(1, 31))
    assert set(per_job) == set(ids) and set(per_job.values()) == {1}
    assert owners == {None}
    db.dispose()
