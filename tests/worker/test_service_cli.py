"""``hinn serve``, ``hinn worker`` and ``hinn db``: a bad flag, setting or database is one line on
stderr and a non-zero exit, never a traceback, and nothing starts that would fail every job."""

from __future__ import annotations

import pytest

from app.cli import main


def _one_line(capsys, got: int, *needles: str) -> None:
    err = capsys.readouterr().err
    assert got == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert all(n in err for n in needles), err


@pytest.mark.parametrize("argv", [
    ["worker", "--threads", "-1"],
    ["worker", "--threads", "0"],
    ["worker", "--lease-seconds", "-1"],
    ["worker", "--poll-seconds", "0"],
    ["worker", "--max-jobs", "0"],
    ["serve", "--workers", "-1"],
    ["serve", "--port", "99999"],
])
def test_bad_flag_values_are_usage_errors(capsys, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err and argv[1] in err, err


def test_bad_database_urls_and_revisions_are_one_line(tmp_path, capsys) -> None:
    _one_line(capsys, main(["db", "current", "--database-url", "bogus://x"]), "bogus")
    _one_line(capsys, main(["db", "current", "--database-url", f"sqlite:///{tmp_path}/nodir/x.db"]),
              "OperationalError")
    _one_line(capsys, main(["db", "upgrade", "--revision", "bogus", "--database-url", f"sqlite:///{tmp_path}/x.db"]),
              "bogus")
    _one_line(capsys, main(["serve", "--database-url", "bogus://x"]), "bogus")  # before any server starts


def test_a_bad_setting_names_its_variable(capsys, monkeypatch) -> None:
    monkeypatch.setenv("HINN_LEASE_SECONDS", "-5")
    _one_line(capsys, main(["db", "current"]), "HINN_LEASE_SECONDS")


def test_workers_refuse_cuda_without_a_gpu(tmp_path, monkeypatch) -> None:
    """Every job such a worker claimed failed for good; now it does not start."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    url = f"sqlite:///{tmp_path}/x.db"
    for argv in (["worker", "--device", "cuda", "--database-url", url, "--exit-when-idle"],
                 ["serve", "--device", "cuda", "--database-url", url]):
        with pytest.raises(SystemExit, match="no CUDA device"):
            main(argv)


def test_a_worker_needs_at_least_one_thread(tmp_path) -> None:
    from app.worker import Worker

    with pytest.raises(ValueError, match="threads"):
        Worker(None, None, threads=0)  # type: ignore[arg-type]


def test_a_worker_refuses_a_bad_fastpath_setting(tmp_path) -> None:
    """Its training children read HINN_FASTPATH_* when they import the kernels: every job would fail.
    A fresh process, since this one has imported the kernels already."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = shutil.which("hinn", path=str(Path(sys.executable).parent))
    assert exe is not None
    done = subprocess.run([exe, "worker", "--database-url", f"sqlite:///{tmp_path}/x.db", "--exit-when-idle"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HINN_FASTPATH_THREADS": "0"})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().startswith("hinn worker: error: HINN_FASTPATH_THREADS: must be an integer >= 1, "
                                          "got '0'"), done.stderr
    assert not (tmp_path / "x.db").exists()  # refused before touching the database
