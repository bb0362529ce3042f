"""The queue protocol on the database: exclusive claims, leases, fencing, versions, cancel."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from app import jobs
from app.db.models import Job, JobStatus, Model
from app.errors import Conflict, Unprocessable
from tests.service_helpers import add_dataset, make_db, service_settings, submit, tiny_request


@pytest.fixture
def db(database_url):
    database = make_db(database_url)
    yield database
    database.dispose()


@pytest.fixture
def dataset_id(db, database_url):
    return add_dataset(db, service_settings(database_url))


def _complete(db, claim, sha="0" * 64):
    return jobs.complete(db, claim, artifact=b"weights", sha256=sha, config={}, metrics={}, progress=None,
                         history=[])


def _job(db, job_id) -> Job:
    with db.session() as s:
        return s.get(Job, job_id)


def test_a_job_is_claimed_by_one_worker_at_a_time(db, dataset_id) -> None:
    job_id = submit(db, dataset_id)
    first = jobs.claim_next(db, "w1", lease_seconds=30)
    assert first is not None and first.job_id == job_id and first.attempt == 1
    assert jobs.claim_next(db, "w2", lease_seconds=30) is None
    row = _job(db, job_id)
    assert row.status == "running" and row.lease_owner == "w1" and row.lease_token == first.token
    assert row.lease_expires_at > row.heartbeat_at


def test_claims_take_the_oldest_job_first(db, dataset_id) -> None:
    # 12 quick submissions: on SQLite (millisecond clock) several share one created_at, and the
    # order must still be FIFO (random ids broke such ties in an earlier CI run)
    ids = [submit(db, dataset_id, name=f"m{i}") for i in range(12)]
    claimed = [jobs.claim_next(db, "w", 30).job_id for _ in range(12)]
    assert claimed == ids


def test_expired_lease_is_reclaimed_and_the_old_holder_is_fenced(db, dataset_id) -> None:
    job_id = submit(db, dataset_id)
    old = jobs.claim_next(db, "w1", lease_seconds=0.3)
    time.sleep(0.6)
    new = jobs.claim_next(db, "w2", lease_seconds=30)
    assert new is not None and new.job_id == job_id and new.attempt == 2 and new.token != old.token
    # the old holder can neither extend, finish, fail nor register
    assert jobs.heartbeat(db, old, 30).held is False
    assert _complete(db, old) is None
    assert jobs.fail(db, old, "boom", retry=False) is None
    assert jobs.mark_cancelled(db, old) is False
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Model)) == 0
    model = _complete(db, new)
    assert model is not None and model.version == 1
    row = _job(db, job_id)
    assert row.status == "succeeded" and row.model_id == model.id and row.lease_token is None


def test_heartbeat_extends_the_lease_and_stores_progress(db, dataset_id) -> None:
    submit(db, dataset_id)
    claim = jobs.claim_next(db, "w1", lease_seconds=0.5)
    before = _job(db, claim.job_id).lease_expires_at
    beat = jobs.heartbeat(db, claim, 30, progress={"epoch": 3, "epochs": 10}, history=[{"epoch": 3}])
    assert beat.held and not beat.cancel_requested
    row = _job(db, claim.job_id)
    assert row.lease_expires_at > before and row.progress == {"epoch": 3, "epochs": 10}
    time.sleep(0.7)  # past the *old* expiry: still held
    assert jobs.claim_next(db, "w2", 30) is None


def test_completion_registers_consecutive_versions_per_name(db, dataset_id) -> None:
    for expected in (1, 2):
        submit(db, dataset_id, name="spring")
        assert _complete(db, jobs.claim_next(db, "w", 30)).version == expected
    submit(db, dataset_id, name="other")
    assert _complete(db, jobs.claim_next(db, "w", 30)).version == 1


def test_concurrent_completions_get_unique_versions(db, dataset_id) -> None:
    n = 12
    for _ in range(n):
        submit(db, dataset_id, name="race")
    claims = [jobs.claim_next(db, f"w{i}", 60) for i in range(n)]
    barrier = threading.Barrier(n)
    results = []

    def finish(c):
        barrier.wait()
        results.append(_complete(db, c))

    threads = [threading.Thread(target=finish, args=(c,)) for c in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(m.version for m in results) == list(range(1, n + 1))


def test_failures_are_retried_until_attempts_run_out(db, dataset_id) -> None:
    job_id = submit(db, dataset_id, max_attempts=2)
    assert jobs.fail(db, jobs.claim_next(db, "w", 30), "crash 1", retry=True) == "queued"
    assert jobs.fail(db, jobs.claim_next(db, "w", 30), "crash 2", retry=True) == "failed"
    row = _job(db, job_id)
    assert row.status == "failed" and row.attempts == 2 and row.error == "crash 2" and row.finished_at
    assert jobs.claim_next(db, "w", 30) is None


def test_permanent_errors_are_not_retried(db, dataset_id) -> None:
    job_id = submit(db, dataset_id, max_attempts=3)
    assert jobs.fail(db, jobs.claim_next(db, "w", 30), "TrainingDiverged: ...", retry=False) == "failed"
    assert _job(db, job_id).attempts == 1


def test_a_lost_lease_on_the_last_attempt_fails_the_job_with_a_reason(db, dataset_id) -> None:
    job_id = submit(db, dataset_id, max_attempts=1)
    jobs.claim_next(db, "w1", lease_seconds=0.2)
    time.sleep(0.4)
    assert jobs.claim_next(db, "w2", 30) is None
    row = _job(db, job_id)
    assert row.status == "failed" and "stopped responding" in row.error


def test_cancel_a_queued_job_and_a_running_one(db, dataset_id) -> None:
    queued = submit(db, dataset_id)
    running = submit(db, dataset_id)
    with db.session(write=True) as s:
        jobs.request_cancel(s, queued)
    claim = jobs.claim_next(db, "w", 30)
    assert claim.job_id == running  # the cancelled job is never claimed
    with db.session(write=True) as s:
        job = jobs.request_cancel(s, running)
        assert job.status == "running" and job.cancel_requested
    assert jobs.heartbeat(db, claim, 30).cancel_requested
    assert jobs.mark_cancelled(db, claim)
    assert _job(db, queued).status == _job(db, running).status == JobStatus.cancelled.value
    with db.session(write=True) as s, pytest.raises(Conflict, match="already cancelled"):
        jobs.request_cancel(s, queued)


def test_the_same_idempotency_key_gives_the_same_job(db, dataset_id) -> None:
    with db.session(write=True) as s:
        a, created_a = jobs.submit(s, name="m", request=tiny_request(), dataset_id=dataset_id, max_attempts=3,
                                   idempotency_key="k-1")
    with db.session(write=True) as s:
        b, created_b = jobs.submit(s, name="m", request=tiny_request(), dataset_id=dataset_id, max_attempts=3,
                                   idempotency_key="k-1")
    assert created_a and not created_b and a.id == b.id
    with db.session(write=True) as s, pytest.raises(Unprocessable) as info:
        jobs.submit(s, name="m", request=tiny_request(epochs=5), dataset_id=dataset_id, max_attempts=3,
                    idempotency_key="k-1")
    assert info.value.field == "Idempotency-Key"
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 1
