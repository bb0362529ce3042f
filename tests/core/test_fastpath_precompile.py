"""`python -m hinn_core.fastpath`: the kernels compiled in several processes into one numba cache.

numba saves a cache entry by read-modify-write of a per-function index, so every process that
imports `hinn_core.fastpath` takes a file lock around each save (`cachelock`). The lock must exclude
another holder, and installing it again must not wrap the save twice (one process would then wait
on its own lock for ever).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from numba.core.caching import IndexDataCacheFile

from hinn_core import fastpath
from hinn_core.fastpath import cachelock, precompile

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
def test_cache_saves_wait_for_the_lock_and_are_wrapped_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    installed = IndexDataCacheFile.save  # hinn_core.fastpath's own, at import
    monkeypatch.setattr(IndexDataCacheFile, "save", installed)  # restored after the test
    numba_save = getattr(installed, "hinn_wrapped", installed)
    lock = str(tmp_path / "cache.lock")
    assert cachelock.serialise_cache_saves(lock)
    assert cachelock.serialise_cache_saves(lock)  # installed again in the same process
    assert IndexDataCacheFile.save.hinn_wrapped is numba_save  # type: ignore[attr-defined]

    index = IndexDataCacheFile(str(tmp_path), "kernel", source_stamp=("stamp", 1))
    saver = threading.Thread(target=index.save, args=(("sig", "float64"), b"object code"))
    with open(lock, "a") as held:  # another process saving: its own open file description
        fcntl.flock(held, fcntl.LOCK_EX)
        saver.start()
        time.sleep(0.3)
        assert saver.is_alive(), "a save went ahead while another process held the cache lock"
        assert not (tmp_path / "kernel.nbi").exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    saver.join(timeout=10)
    assert not saver.is_alive(), "the save never finished: its lock was taken twice"
    assert index.load(("sig", "float64")) == b"object code"


def test_importing_the_fast_path_locks_saves_beside_the_cached_kernels() -> None:
    cache = Path(fastpath._k.rollout._cache._cache_path)
    assert cachelock.installed() == str(cache / cachelock.LOCK_NAME)


def test_a_lock_file_that_cannot_be_opened_leaves_the_save_to_numba(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(IndexDataCacheFile, "save", IndexDataCacheFile.save)
    assert cachelock.serialise_cache_saves(str(tmp_path / "missing-folder" / "cache.lock"))
    index = IndexDataCacheFile(str(tmp_path), "kernel", source_stamp=("stamp", 1))
    index.save(("sig", "float32"), b"code")
    assert index.load(("sig", "float32")) == b"code"


def test_compile_kernels_names_the_kernels_it_knows() -> None:
    import torch

    with pytest.raises(ValueError, match="kernel must be one of"):
        fastpath.compile_kernels(torch.float64, "adjoint")


def test_jobs_below_one_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        precompile.main(["--jobs", "0"])
    assert info.value.code == 2 and "--jobs must be at least 1" in capsys.readouterr().err


@pytest.mark.timeout(900)  # minutes only when the kernels' sources changed since the cache was filled
def test_two_processes_fill_the_cache_and_this_one_compiles_nothing() -> None:
    """The command the install runs: each kernel and dtype reported once by a child process, then
    every entry kernel loaded, not compiled, in the parent."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "hinn_core.fastpath", "--jobs", "2"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    reported = sorted(line.split(":")[0].strip() for line in done.stdout.splitlines() if " kernels, " in line)
    assert reported == sorted(f"{k} kernels, {d}" for k in fastpath.KERNELS for d in ("float32", "float64"))
    assert "(0 kernel signatures compiled here)" in done.stdout, done.stdout
    assert "hinn fast path ready" in done.stdout


@pytest.mark.parametrize(("cpus", "memory", "jobs"), [
    (2, 24 << 30, 2), (16, 64 << 30, 4), (16, 3 << 30, 2), (8, 1 << 30, 1), (3, None, 3)])
def test_default_jobs_fit_the_cpus_the_kernels_and_the_memory(monkeypatch: pytest.MonkeyPatch, cpus: int,
                                                             memory: int | None, jobs: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setattr(precompile, "available_memory", lambda: memory)
    assert precompile.default_jobs() == jobs


def test_available_memory_reads_this_machine() -> None:
    memory = precompile.available_memory()
    assert memory is not None and 64 << 20 < memory < 1 << 50
