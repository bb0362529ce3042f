"""Workers killed at each point of a job (SQLite and PostgreSQL): the job is finished exactly once, by another.

Fault points, each a real SIGKILL: right after the claim, before any heartbeat (the worker kills
itself there with ``HINN_FAULT_POINT=after_claim``); mid-epoch (killed once progress is recorded);
after training ended but before the model is registered (``HINN_FAULT_POINT=before_complete``);
and at random moments of a worker's life (seeded delays from its start). The killed worker holds
a 1.5 s lease; a second worker (in this process) claims the job once it expires and finishes it.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest
from fault_helpers import Proc, assert_nothing_lost, job_row, progress_epoch
from sqlalchemy import func, select

from app import jobs
from app.db.models import Model
from app.worker import Worker
from tests.service_helpers import add_dataset, make_db, service_settings, submit, wait_for

KILLED_LEASE = "1.5"


def _worker_process(url: str, log: Path, fault: str | None) -> Proc:
    env = {"HINN_FAULT_POINT": fault} if fault else {}
    return Proc(["worker", "--database-url", url, "--threads", "1", "--poll-seconds", "0.1", "--lease-seconds",
                 KILLED_LEASE, "--max-jobs", "1"], log, env)


def _model_count(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Model)) or 0


@pytest.mark.parametrize(("point", "epochs"), [("after_claim", 3), ("mid_epoch", 200), ("before_complete", 3)])
def test_a_worker_killed_at_any_point_loses_nothing(database_url: str, tmp_path: Path, procs: list[Proc],
                                                    point: str, epochs: int) -> None:
    db = make_db(database_url)
    settings = service_settings(database_url, lease_seconds=5.0)
    dataset_id = add_dataset(db, settings)
    job_id = submit(db, dataset_id, name="crashy", epochs=epochs)

    victim = _worker_process(database_url, tmp_path / "victim.log", None if point == "mid_epoch" else point)
    procs.append(victim)
    if point == "mid_epoch":
        wait_for(lambda: progress_epoch(db, job_id) >= 1, timeout=120, what="the first epochs")
        victim.kill()
        assert progress_epoch(db, job_id) < epochs, "training finished before the kill; raise epochs"
    else:
        assert victim.wait(timeout=120) == -signal.SIGKILL, victim.output()  # died at the fault point
    crashed = job_row(db, job_id)
    assert crashed.status == "running" and crashed.attempts == 1 and crashed.lease_owner, crashed.status
    assert _model_count(db) == 0, "the killed worker registered a model"

    stop = threading.Event()
    rescuer = Worker(db, settings, stop=stop, threads=1)
    t = threading.Thread(target=rescuer.run, kwargs={"max_jobs": 1})
    t.start()
    t.join(timeout=180)
    stop.set()
    t.join(timeout=30)
    assert not t.is_alive()

    job = assert_nothing_lost(db, [job_id])[job_id]
    assert job.status == "succeeded" and job.attempts == 2, (job.status, job.attempts, job.error)
    assert job.progress["epoch"] == epochs
    assert _model_count(db) == 1
    db.dispose()


def _rescue(db, settings, job_id: str) -> None:
    """Run a worker in this process until the job is terminal."""
    stop = threading.Event()
    rescuer = Worker(db, settings, stop=stop, threads=1)
    t = threading.Thread(target=rescuer.run)
    t.start()
    try:
        wait_for(lambda: job_row(db, job_id).status in ("succeeded", "failed", "cancelled"), timeout=180,
                 interval=0.3, what="the rescued job to end")
    finally:
        stop.set()
        t.join(timeout=30)
    assert not t.is_alive()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_worker_killed_at_a_random_moment_loses_nothing(database_url: str, tmp_path: Path, procs: list[Proc],
                                                          seed: int) -> None:
    """SIGKILL after a seeded random delay from the worker's start: before or after its claim, in
    training or around registration; whatever the moment, the job ends succeeded exactly once."""
    db = make_db(database_url)
    settings = service_settings(database_url, lease_seconds=5.0)
    job_id = submit(db, add_dataset(db, settings), name=f"random-kill-{seed}", epochs=40)
    delay = random.Random(seed).uniform(0.5, 8.0)
    victim = _worker_process(database_url, tmp_path / "victim.log", None)
    procs.append(victim)
    time.sleep(delay)
    state = job_row(db, job_id).status
    victim.kill()
    victim.wait(timeout=30)
    _rescue(db, settings, job_id)
    job = assert_nothing_lost(db, [job_id])[job_id]
    assert job.status == "succeeded", (delay, state, job.status, job.error)
    assert job.attempts in (1, 2), (delay, state, job.attempts)
    assert _model_count(db) == 1, (delay, state)
    db.dispose()


def test_a_crash_on_the_last_attempt_fails_the_job_and_says_why(database_url: str, tmp_path: Path,
                                                                 procs: list[Proc]) -> None:
    db = make_db(database_url)
    settings = service_settings(database_url)
    job_id = submit(db, add_dataset(db, settings), epochs=3, max_attempts=1)
    victim = _worker_process(database_url, tmp_path / "victim.log", "after_claim")
    procs.append(victim)
    assert victim.wait(timeout=120) == -signal.SIGKILL, victim.output()

    def reaped() -> bool:  # any worker's next claim reaps expired leases
        assert jobs.claim_next(db, "reaper", 5.0) is None
        return job_row(db, job_id).status == "failed"

    wait_for(reaped, timeout=30, interval=0.3, what="the expired job to be failed")
    job = assert_nothing_lost(db, [job_id])[job_id]
    assert job.attempts == 1 and "stopped responding" in job.error and "last allowed attempt" in job.error
    db.dispose()
