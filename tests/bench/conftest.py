"""Shared fixtures of the benchmark tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def empty_report() -> dict[str, Any]:
    """`bench.perf.run.render`'s input with every section empty: tests add the one they check."""
    return {"command": "python -m bench.perf.run", "machine": "x86_64", "cpu": "x", "cpus": 2, "load": 0.1,
            "date": "2026-11-29", "torch": "2.13.0", "numba": "0.68.1", "scipy": "1.17.1",
            "latency": [], "throughput": [], "training": [], "hessian": [], "http": []}
