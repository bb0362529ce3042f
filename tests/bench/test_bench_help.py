"""Every benchmark entry point answers ``--help`` with its usage and exits, without running anything
(`bench.perf.kernels` once started its ~1.5-minute benchmark instead)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "bench").rglob("*.py")
                 if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8"))


def test_the_entry_points_are_found() -> None:
    assert {"bench.perf.run", "bench.perf.kernels", "bench.science.run", "bench.load.run"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_help_prints_usage_and_runs_nothing(module: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ") and "|---|" not in done.stdout, done.stdout[:500]
