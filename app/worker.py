"""Workers: claim a job, train it in a spawned child process, keep the lease alive, register the model.

A worker is a loop (`Worker.run`) that any host can run (``hinn worker``) or that ``hinn serve``
starts in threads. Training runs in a child process so that cancellation and timeouts are a kill,
and a crash in torch costs one attempt, not the worker.

A database outage (PostgreSQL restarting, a dropped connection) does not cost the job: a failed
heartbeat is retried on the next beat while training goes on, and the final write (complete/fail)
is retried for up to ``DB_RETRY_SECONDS``; all of them stay fenced by the lease token.

Test-only crash hook: ``HINN_FAULT_POINT=after_claim|before_complete`` makes the worker process
SIGKILL itself right after claiming a job (before its first heartbeat) or once training has
ended but before the model is registered (tests/faults kill workers there).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

from app import datasets, jobs
from app.db.models import Dataset
from app.db.session import Database
from app.settings import Settings

log = logging.getLogger("hinn.worker")

PROGRESS_WRITE_SECONDS = 0.5  # at most this often a new epoch's progress is written to the job row
DB_RETRY_SECONDS = 120.0  # how long a final write waits out a database outage before giving up the attempt
DB_ERRORS = (OperationalError, InterfaceError)  # connection lost/refused, server restarting, SQLite busy
FAULT_POINT_ENV = "HINN_FAULT_POINT"
T = TypeVar("T")


def _fault_point(point: str) -> None:
    """Test-only: SIGKILL this process here when HINN_FAULT_POINT names this point (no cleanup
    runs, as in a real crash; Windows has no SIGKILL: exit without cleanup there)."""
    if os.environ.get(FAULT_POINT_ENV) == point:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
        os._exit(70)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(self, db: Database, settings: Settings, worker_id: str | None = None,
                 stop: threading.Event | None = None, threads: int | None = None) -> None:
        self.db = db
        self.settings = settings
        self.worker_id = worker_id or default_worker_id()
        self.stop = stop or threading.Event()
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be None or >= 1, got {threads}")
        self.threads = threads
        self._ctx = multiprocessing.get_context("spawn")
        self._child: Any = None
        self._conn: Any = None

    # -- main loop -------------------------------------------------------------------------------
    def run(self, *, max_jobs: int | None = None, exit_when_idle: bool = False) -> int:
        """Process jobs until stopped (or ``max_jobs`` done, or idle with ``exit_when_idle``)."""
        done = 0
        try:
            while not self.stop.is_set() and (max_jobs is None or done < max_jobs):
                try:
                    worked = self.run_once()
                except Exception:  # database down, etc.: log, back off, keep serving
                    log.exception("worker %s: error while claiming or running a job", self.worker_id)
                    worked = False
                if worked:
                    done += 1
                elif exit_when_idle:
                    break
                else:
                    self.stop.wait(self.settings.poll_seconds)
        finally:
            self.close()
        return done

    def run_once(self) -> bool:
        claim = jobs.claim_next(self.db, self.worker_id, self.settings.lease_seconds)
        if claim is None:
            return False
        log.info("worker %s: claimed job %s (attempt %d)", self.worker_id, claim.job_id, claim.attempt)
        _fault_point("after_claim")
        self.execute(claim)
        return True

    # -- one job ---------------------------------------------------------------------------------
    def _payload(self, claim: jobs.Claim) -> dict[str, Any]:
        from sqlalchemy import select

        with self.db.session() as s:
            row = datasets.get(s, claim.dataset_id)
            blob = s.scalar(select(Dataset.data).where(Dataset.id == claim.dataset_id))
            source = dict(row.source)
        return {"request": claim.request, "dataset_npz": blob, "dataset_source": source,
                "dataset_id": claim.dataset_id, "job_id": claim.job_id, "name": claim.name,
                "device": self.settings.device, "threads": self.threads}

    def _training_process(self) -> tuple[Any, Any]:
        """The worker's long-lived training child, started (and warmed up) on first use."""
        from app import training_task

        if self._child is not None and self._child.is_alive():
            return self._child, self._conn
        self._discard_child()
        conn, child_conn = self._ctx.Pipe(duplex=True)
        child = self._ctx.Process(target=training_task.serve, args=(child_conn, os.getpid()), daemon=True,
                                  name="hinn-train")
        child.start()
        child_conn.close()
        self._child, self._conn = child, conn
        return child, conn

    def _discard_child(self) -> None:
        child, conn = self._child, self._conn
        self._child = self._conn = None
        if child is not None:
            if child.is_alive():
                child.kill()
            child.join(timeout=10)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Stop the training child (the loop calls this when it exits)."""
        self._discard_child()

    def _db_retry(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(*args, **kwargs)``, retried with backoff while the database is unreachable (up to
        DB_RETRY_SECONDS, or until the worker stops); other errors propagate at once."""
        deadline = time.monotonic() + DB_RETRY_SECONDS
        delay = 0.2
        while True:
            try:
                return call(*args, **kwargs)
            except DB_ERRORS as exc:
                if time.monotonic() + delay > deadline or self.stop.is_set():
                    raise
                log.warning("worker %s: database unavailable during %s (%s); retrying in %.1f s", self.worker_id,
                            what, type(exc).__name__, delay)
                self.stop.wait(delay)
                delay = min(2 * delay, 2.0)

    def execute(self, claim: jobs.Claim) -> str:
        """Run the claimed job to a final (or re-queued) state; returns what happened."""
        try:
            payload = self._db_retry("loading the dataset", self._payload, claim)
        except DB_ERRORS:
            raise  # the database stayed away: the lease expires and the job is claimed again later
        except Exception as exc:
            self._db_retry("failing the job", jobs.fail, self.db, claim, f"could not load the job's dataset: {exc}",
                           retry=False)
            return "failed"
        child, conn = self._training_process()
        try:
            conn.send(("job", payload))
        except (BrokenPipeError, OSError):
            self._discard_child()
            jobs.fail(self.db, claim, "training process was gone before the job started", retry=True)
            return "requeued"
        try:
            outcome, reusable = self._supervise(claim, child, conn)
        except BaseException:
            self._discard_child()  # it may still be training this job: never hand it the next one
            raise
        if not reusable:
            self._discard_child()  # killed or crashed: the next job gets a fresh child
        return outcome

    def _supervise(self, claim: jobs.Claim, child: Any, recv: Any) -> tuple[str, bool]:
        """Relay progress and heartbeats until the job ends; returns (outcome, child still usable)."""
        settings = self.settings
        started = time.monotonic()
        last_beat = last_write = started
        progress: dict[str, Any] | None = None
        history: list[dict[str, Any]] = []
        dirty = False
        beat_failures = 0
        while True:
            message = None
            if recv.poll(0.2):
                try:
                    message = recv.recv()
                except (EOFError, OSError):
                    message = ("eof", None)
            now = time.monotonic()
            if message is not None and message[0] == "ready":
                continue
            if message is not None and message[0] == "progress":
                progress = _json_safe(message[1])
                history.append(progress)
                dirty = True
            elif message is not None and message[0] == "result":
                result = message[1]
                _fault_point("before_complete")
                model = self._db_retry("registering the model", partial(
                    jobs.complete, self.db, claim, artifact=result["artifact"], sha256=result["sha256"],
                    config=result["config"], metrics=_json_safe(result["metrics"]), progress=progress,
                    history=_json_safe(result["history"])))
                if model is None:
                    log.warning("job %s: lease lost before completion; result discarded", claim.job_id)
                    return "lost", True
                log.info("job %s: registered model %s v%d", claim.job_id, model.name, model.version)
                return "succeeded", True
            elif message is not None and message[0] == "error":
                info = message[1]
                # the job's error is what its owner sees over the API; the traceback (server paths) is logged
                log.warning("job %s: training failed (%s): %s\n%s", claim.job_id,
                            "will retry if attempts remain" if info["retry"] else "permanent", info["message"],
                            info.get("traceback", ""))
                status = self._db_retry("failing the job", jobs.fail, self.db, claim, info["message"],
                                        retry=info["retry"])
                return status or "lost", True  # the child survived the error: it takes the next job
            elif message is not None and message[0] == "eof" or (message is None and not child.is_alive()
                                                                  and not recv.poll(0)):
                child.join(timeout=5)
                died = (f"training process died (exit code {child.exitcode}); the attempt is retried while "
                        "attempts remain")
                log.warning("job %s: %s", claim.job_id, died)
                status = self._db_retry("failing the job", jobs.fail, self.db, claim, died, retry=True)
                return status or "lost", False

            if self.stop.is_set():
                child.kill()
                jobs.fail(self.db, claim, "worker shut down during training; re-queued", retry=True)
                return "requeued", False
            if now - started > settings.job_timeout_seconds:
                child.kill()
                jobs.fail(self.db, claim, f"timed out after {settings.job_timeout_seconds:g} s "
                                          "(HINN_JOB_TIMEOUT_SECONDS)", retry=False)
                log.warning("job %s: timed out after %g s; training killed", claim.job_id,
                            settings.job_timeout_seconds)
                return "failed", False
            due = now - last_beat >= settings.heartbeat_interval
            if due or (dirty and now - last_write >= PROGRESS_WRITE_SECONDS):
                last_beat = now
                try:
                    beat = jobs.heartbeat(self.db, claim, settings.lease_seconds,
                                          progress=progress if dirty else None, history=history if dirty else None)
                except DB_ERRORS as exc:  # keep training; the next beat tries again (fenced: a lost lease shows)
                    if not beat_failures % 20:
                        log.warning("job %s: heartbeat failed, database unavailable (%s)", claim.job_id,
                                    type(exc).__name__)
                    beat_failures += 1
                    last_write = now
                    continue
                beat_failures = 0
                if dirty:
                    last_write, dirty = now, False
                if not beat.held:
                    child.kill()
                    log.warning("job %s: lease lost (expired and re-claimed); training killed", claim.job_id)
                    return "lost", False
                if beat.cancel_requested:
                    child.kill()
                    jobs.mark_cancelled(self.db, claim)
                    log.info("job %s: cancelled while running; training killed", claim.job_id)
                    return "cancelled", False

    def kill_child(self) -> None:
        child = self._child
        if child is not None and child.is_alive():
            child.kill()


def _json_safe(obj: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


class WorkerPool:
    """N worker threads in this process (``hinn serve``); stopped and joined on shutdown."""

    def __init__(self, db: Database, settings: Settings, n: int) -> None:
        self.stop = threading.Event()
        self.workers = [Worker(db, settings, stop=self.stop) for _ in range(n)]
        self.threads = [threading.Thread(target=w.run, name=f"hinn-worker-{i}", daemon=True)
                        for i, w in enumerate(self.workers)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def shutdown(self, timeout: float = 15.0) -> None:
        self.stop.set()
        for w in self.workers:
            w.kill_child()
        for t in self.threads:
            t.join(timeout=timeout)
