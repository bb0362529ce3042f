"""Fault-suite fixtures: started processes are killed afterwards; a throwaway PostgreSQL cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_helpers import Proc, ThrowawayPostgres, pg_bin


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[Proc]]:
    """Processes a test starts (append them); each is killed by its handle afterwards."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A running throwaway cluster; a failure under CI=true when PostgreSQL's binaries are missing."""
    bin_dir = pg_bin()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but PostgreSQL's initdb/pg_ctl are not installed: the restart test must run in CI")
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed")
    pg = ThrowawayPostgres(bin_dir)
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()
