"""A throwaway ``hinn serve`` for the benchmarks: temp SQLite file, free loopback port, one worker.

Shared by `bench.load` and `bench.perf` so that both start, wait for and stop the server the same
way: its own process session (a Ctrl-C meant for the benchmark must not reach the server's training
child first), SIGTERM then SIGKILL on the way out, and the tail of its log when it ends badly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    url: str
    proc: subprocess.Popen[bytes]


@contextmanager
def hinn_serve(name: str, env: dict[str, str] | None = None, start_timeout: float = 60.0) -> Iterator[Server]:
    """Start ``hinn serve``, wait until ``/health`` answers, yield it; stop it and clean up after."""
    tmp = Path(tempfile.mkdtemp(prefix=f"hinn-{name}-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, "HINN_DEVICE": "cpu", "HINN_POLL_SECONDS": "0.2", **(env or {})}
    log = open(tmp / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1",
                             "--database-url", f"sqlite:///{tmp}/{name}.db"], stdout=log, stderr=subprocess.STDOUT,
                            env=full_env, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"hinn serve exited with {proc.returncode} before answering")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"hinn serve did not answer within {start_timeout:.0f} s")
            time.sleep(0.2)
        yield Server(url, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the training child too
                proc.wait()
        log.close()
        if proc.returncode not in (0, -signal.SIGTERM):
            print((tmp / "serve.log").read_text()[-4000:], file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
