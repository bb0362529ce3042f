"""bench/perf/ab: a git revision's `hinn_core` exported as its own package, importable next to the
working tree's, with models rebuilt from its classes that compute the same trajectories."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

from bench.perf.ab import _IMPORT, BASE_PACKAGE, base_twin, export_base, import_base
from hinn_core.models import DynamicsModel, ModelSpec


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = export_base("HEAD", cache=tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield root, import_base(root)
    for name in [m for m in sys.modules if m == BASE_PACKAGE or m.startswith(BASE_PACKAGE + ".")]:
        del sys.modules[name]


def test_the_export_is_a_separate_package_without_references_to_the_working_tree(base, tmp_path) -> None:
    root, pkg = base
    files = list((root / BASE_PACKAGE).rglob("*.py"))
    assert len(files) > 10 and (root / BASE_PACKAGE / "fastpath" / "_trunk.py") in files
    assert not [f for f in files if _IMPORT.search(f.read_text(encoding="utf-8"))]
    assert pkg.__name__ == BASE_PACKAGE and Path(pkg.__file__).is_relative_to(root)
    marker = root / BASE_PACKAGE / "__init__.py"
    stamp = marker.stat().st_mtime_ns
    assert export_base("HEAD", cache=tmp_path) == root and marker.stat().st_mtime_ns == stamp  # reused


@pytest.mark.parametrize(("arch", "integrator"), [("hinn-separable", "leapfrog"), ("hinn", "implicit_midpoint")])
def test_the_twin_has_the_base_classes_and_the_same_trajectory(base, arch, integrator) -> None:
    _, pkg = base
    torch.manual_seed(0)
    model = DynamicsModel(ModelSpec(architecture=arch, dof=1, width=8, integrator=integrator)).double().eval()
    twin = base_twin(model, pkg)
    assert type(twin).__module__ == f"{BASE_PACKAGE}.models" and twin.integrator.name == integrator
    q0, p0, h = torch.tensor([[0.4]], dtype=torch.float64), torch.tensor([[-0.3]], dtype=torch.float64), \
        torch.full((20,), 0.05, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(model.rollout(q0, p0, h), twin.rollout(q0, p0, h), strict=True):
            assert torch.equal(a, b)
    with torch.no_grad():  # a different model would not pass the comparison above
        next(model.parameters()).add_(0.1)
        assert not torch.equal(model.rollout(q0, p0, h)[0], twin.rollout(q0, p0, h)[0])


def test_interleaved_alternates_the_calls_and_pairs_their_times() -> None:
    from bench.perf.ab import interleaved

    calls: list[str] = []

    def new() -> None:
        calls.append("new")

    def old() -> None:
        calls.append("old")
        time.sleep(0.002)

    row = interleaved(new, old, 3)
    assert calls == ["new", "old"] * 3
    assert row["base_ms"] >= 2.0 > row["new_ms"] and row["paired"] > 1.0
