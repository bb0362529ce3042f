"""The job queue on the database: submit, claim under a lease, heartbeat, finish — all fenced.

Protocol (at-least-once execution, exactly-once registration):

- **claim**: one transaction picks the oldest claimable job — queued, or running with an expired
  lease — with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (concurrent workers skip each other's
  rows) or inside ``BEGIN IMMEDIATE`` on SQLite (one writer at a time), and gives it a fresh
  random ``lease_token`` and ``lease_expires_at = db_now + lease``.
- **heartbeat**: extends the lease *if the token still matches*; a worker whose heartbeat
  matches no row has lost the job and must stop.
- **complete**: one transaction that (1) moves the job to ``succeeded`` only if the token still
  matches and (2) inserts the model version ``max(version)+1`` for its name; the unique
  ``(name, version)`` constraint turns a concurrent race into a retry, never a duplicate.
- Times come from the database clock (`db_now`), so hosts need not agree on the time.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.base import db_now, db_now_plus
from app.db.models import Job, JobStatus, Model
from app.db.session import Database
from app.errors import Conflict, NotFound, Unprocessable
from app.ids import new_id

VERSION_RETRIES = 10


def request_digest(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def submit(s: Session, *, name: str, request: dict[str, Any], dataset_id: str, max_attempts: int,
           idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Queue a training job; with an ``idempotency_key`` already used, return that job instead.

    Returns ``(job, created)``. Reusing a key with a different request body is a 422.
    """
    digest = request_digest(request)

    def replay(existing: Job) -> tuple[Job, bool]:
        if existing.request_sha256 != digest:
            raise Unprocessable(
                "this Idempotency-Key was already used with a different request body; "
                "use a new key for a new job", field="Idempotency-Key")
        return existing, False

    if idempotency_key is not None:
        existing = s.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is not None:
            return replay(existing)
    job = Job(id=new_id(), kind="train", status=JobStatus.queued.value, name=name, request=request,
              request_sha256=digest, idempotency_key=idempotency_key, dataset_id=dataset_id, attempts=0,
              max_attempts=max_attempts, cancel_requested=False)
    try:
        with s.begin_nested():  # a savepoint: a concurrent insert of the same key fails only this part
            s.add(job)
    except IntegrityError:
        if idempotency_key is None:
            raise
        existing = s.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is None:
            raise
        return replay(existing)
    return job, True


def get(s: Session, job_id: str) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job with id '{job_id}'", field="job_id")
    return job


def request_cancel(s: Session, job_id: str) -> Job:
    """Cancel a queued job at once; ask the worker of a running job to stop (it kills training)."""
    job = s.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotFound(f"no job with id '{job_id}'", field="job_id")
    if JobStatus(job.status).terminal:
        raise Conflict(f"job '{job_id}' already {job.status}; only queued or running jobs can be cancelled",
                       field="job_id")
    job.cancel_requested = True
    if job.status == JobStatus.queued.value:
        job.status = JobStatus.cancelled.value
        job.finished_at = s.scalar(select(db_now()))
        job.error = "cancelled before it started"
    s.flush()
    return job


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one job: the token fences every later write."""

    job_id: str
    token: str
    attempt: int
    name: str
    dataset_id: str
    request: dict[str, Any]


def _reap_expired(s: Session) -> None:
    """Running jobs whose lease expired: cancel those asked to stop, fail those out of attempts."""
    expired = and_(Job.status == JobStatus.running.value, Job.lease_expires_at < db_now())
    s.execute(update(Job).where(expired, Job.cancel_requested.is_(True)).values(
        status=JobStatus.cancelled.value, finished_at=db_now(), lease_owner=None, lease_token=None,
        lease_expires_at=None, error="cancelled (its worker stopped responding)"))
    s.execute(update(Job).where(expired, Job.attempts >= Job.max_attempts).values(
        status=JobStatus.failed.value, finished_at=db_now(), lease_owner=None, lease_token=None,
        lease_expires_at=None,
        error="its worker stopped responding (killed or hung) on the last allowed attempt; "
              "the job was not retried again"))


def claim_next(db: Database, worker_id: str, lease_seconds: float) -> Claim | None:
    """Take the oldest claimable job under a new lease, or return None when there is none."""
    with db.session(write=True) as s:
        _reap_expired(s)
        q = (select(Job.id).where(or_(
                Job.status == JobStatus.queued.value,
                and_(Job.status == JobStatus.running.value, Job.lease_expires_at < db_now())))
             .where(Job.cancel_requested.is_(False))
             .order_by(Job.created_at, Job.id).limit(1))
        if db.engine.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        job_id = s.scalar(q)
        if job_id is None:
            return None
        token = uuid.uuid4().hex
        s.execute(update(Job).where(Job.id == job_id).values(
            status=JobStatus.running.value, lease_owner=worker_id, lease_token=token,
            lease_expires_at=db_now_plus(lease_seconds), heartbeat_at=db_now(), attempts=Job.attempts + 1,
            started_at=func.coalesce(Job.started_at, db_now())))
        job = s.execute(select(Job.attempts, Job.name, Job.dataset_id, Job.request).where(Job.id == job_id)).one()
        return Claim(job_id, token, job.attempts, job.name, job.dataset_id, dict(job.request))


def _fenced(claim: Claim) -> Any:
    return and_(Job.id == claim.job_id, Job.lease_token == claim.token, Job.status == JobStatus.running.value)


@dataclass(frozen=True)
class Heartbeat:
    held: bool  # False: the lease was lost (expired and re-claimed, or the job was reaped)
    cancel_requested: bool


def heartbeat(db: Database, claim: Claim, lease_seconds: float, progress: dict[str, Any] | None = None,
              history: list[dict[str, Any]] | None = None) -> Heartbeat:
    """Extend the lease (and store progress) if this worker still holds the job."""
    values: dict[str, Any] = {"lease_expires_at": db_now_plus(lease_seconds), "heartbeat_at": db_now()}
    if progress is not None:
        values["progress"] = progress
    if history is not None:
        values["history"] = history
    with db.session(write=True) as s:
        held = s.execute(update(Job).where(_fenced(claim)).values(**values)).rowcount == 1
        cancel = bool(s.scalar(select(Job.cancel_requested).where(Job.id == claim.job_id))) if held else False
    return Heartbeat(held, cancel)


def complete(db: Database, claim: Claim, *, artifact: bytes, sha256: str, config: dict[str, Any],
             metrics: dict[str, Any], progress: dict[str, Any] | None, history: list[dict[str, Any]]
             ) -> Model | None:
    """Mark the job succeeded and register the next model version, atomically; None if fenced out."""
    for _ in range(VERSION_RETRIES):
        try:
            with db.session(write=True) as s:
                done = s.execute(update(Job).where(_fenced(claim)).values(
                    status=JobStatus.succeeded.value, finished_at=db_now(), lease_owner=None, lease_token=None,
                    lease_expires_at=None, progress=progress, history=history, error=None))
                if done.rowcount != 1:
                    s.rollback()
                    return None
                if s.get_bind().dialect.name == "postgresql":
                    # serialise version assignment per name (SQLite's BEGIN IMMEDIATE already does); the
                    # unique constraint and the retry loop stay as the safety net
                    s.execute(select(func.pg_advisory_xact_lock(func.hashtext("hinn-model:" + claim.name))))
                version = (s.scalar(select(func.max(Model.version)).where(Model.name == claim.name)) or 0) + 1
                model = Model(id=new_id(), name=claim.name, version=version, status="ready",
                              artifact=artifact, sha256=sha256, size_bytes=len(artifact), config=config,
                              metrics=metrics, dataset_id=claim.dataset_id, job_id=claim.job_id)
                s.add(model)
                s.flush()
                s.execute(update(Job).where(Job.id == claim.job_id).values(model_id=model.id))
                return model
        except IntegrityError:
            continue  # a concurrent registration took this version number: recompute and retry
    raise RuntimeError(f"could not assign a model version for '{claim.name}' after {VERSION_RETRIES} tries")


def fail(db: Database, claim: Claim, error: str, *, retry: bool) -> str | None:
    """Record a failed attempt: re-queue it (``retry`` and attempts left) or fail the job for good.

    Returns the new status, or None if this worker no longer holds the job.
    """
    with db.session(write=True) as s:
        attempts = s.scalar(select(Job.attempts).where(_fenced(claim)))
        if attempts is None:
            return None
        max_attempts = s.scalar(select(Job.max_attempts).where(Job.id == claim.job_id)) or 1
        again = retry and attempts < max_attempts
        status = JobStatus.queued if again else JobStatus.failed
        values: dict[str, Any] = {"status": status.value, "lease_owner": None, "lease_token": None,
                                  "lease_expires_at": None, "error": error}
        if not again:
            values["finished_at"] = db_now()
        s.execute(update(Job).where(_fenced(claim)).values(**values))
        return status.value


def mark_cancelled(db: Database, claim: Claim, note: str = "cancelled while running") -> bool:
    with db.session(write=True) as s:
        return s.execute(update(Job).where(_fenced(claim)).values(
            status=JobStatus.cancelled.value, finished_at=db_now(), lease_owner=None, lease_token=None,
            lease_expires_at=None, error=note)).rowcount == 1
