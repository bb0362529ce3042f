"""Fault-suite machinery: `hinn serve`/`hinn worker` subprocesses, a throwaway PostgreSQL, invariants.

Importable as ``fault_helpers`` (pytest puts this folder on sys.path); the fixtures are in conftest.py.
Every process started here is ours and is killed by its own handle at the end of its test.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from app.db.models import Job, Model
from app.db.session import Database


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A `python -m app.cli ...` subprocess with its output in a log file (shown when a test fails)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        full_env = {**os.environ, "HINN_DEVICE": "cpu", **(env or {})}
        with open(log, "w") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", *args], stdout=fh,
                                         stderr=subprocess.STDOUT, env=full_env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a power cut would."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"process did not exit within {timeout} s; its log:\n{self.output()}") from None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


class Serve(Proc):
    """`hinn serve` on a free loopback port, with in-process workers; ready once /health answers."""

    def __init__(self, url: str, log: Path, workers: int = 1, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(["serve", "--port", str(self.port), "--database-url", url, "--workers", str(workers)], log,
                         {"HINN_POLL_SECONDS": "0.2", **env})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"hinn serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.kill()
        raise AssertionError(f"hinn serve did not answer within 90 s:\n{self.output()}")


# -- a throwaway PostgreSQL ---------------------------------------------------------------------------
def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class ThrowawayPostgres:
    """A PostgreSQL cluster made with ``initdb`` in a temp dir, on its own port, stopped and started at will.

    PostgreSQL refuses to run as root, so as root its commands run as the ``postgres`` OS user.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="hinn-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres?connect_timeout=5"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if done.returncode != 0:
            log = self.root / "postgres.log"
            raise AssertionError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}\n"
                                 f"{log.read_text() if log.exists() else ''}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-o", options, "-w",
                  "-t", "60", "start")

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: the server process dies without a checkpoint, as in a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except AssertionError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)


# -- invariants -----------------------------------------------------------------------------------------
def assert_nothing_lost(db: Database, job_ids: list[str]) -> dict[str, Job]:
    """Each job is terminal and explained; a succeeded job has exactly one model, and every model row
    belongs to a succeeded job that points back at it (no orphans, no double completions)."""
    with db.session() as s:
        jobs = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(job_ids)))}
        models = list(s.scalars(select(Model)))
        all_jobs = {j.id: j for j in s.scalars(select(Job))}
    assert set(jobs) == set(job_ids), "a job row is missing"
    for job in jobs.values():
        assert job.status in ("succeeded", "failed", "cancelled"), (job.id, job.status)
        assert job.lease_token is None and job.lease_owner is None, f"job {job.id} still holds a lease"
        mine = [m for m in models if m.job_id == job.id]
        if job.status == "succeeded":
            assert len(mine) == 1, f"job {job.id} registered {len(mine)} models"
            assert job.model_id == mine[0].id and job.error is None
        else:
            assert mine == [] and job.model_id is None, f"{job.status} job {job.id} has a model"
            assert job.error, f"{job.status} job {job.id} does not say why"
    for m in models:
        owner = all_jobs.get(m.job_id or "")
        assert owner is not None and owner.status == "succeeded" and owner.model_id == m.id, f"orphan model {m.id}"
    versions = [(m.name, m.version) for m in models]
    assert len(versions) == len(set(versions))
    return jobs


def job_row(db: Database, job_id: str) -> Job:
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def progress_epoch(db: Database, job_id: str) -> int:
    return int((job_row(db, job_id).progress or {}).get("epoch") or 0)


def get_json(url: str, **kwargs: Any) -> Any:
    r = httpx.get(url, timeout=10, **kwargs)
    r.raise_for_status()
    return r.json()
