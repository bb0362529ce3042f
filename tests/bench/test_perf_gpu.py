"""bench/perf/gpu: issue 5's prepared GPU check. Without a GPU it refuses ``--device cuda`` loudly
(never a silent CPU run reported as GPU figures); ``--device cpu --quick`` runs the same code,
whose agreement columns must hold: the torch path against the CPU's compiled one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from bench.perf import gpu

ROOT = Path(__file__).resolve().parents[2]


def test_cuda_asked_for_where_there_is_none_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--device", "cuda"]) == 2
    assert "no CUDA device here" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_a_quick_cpu_run_reports_every_workload_and_agrees(tmp_path: Path) -> None:
    assert gpu.main(["--device", "cpu", "--quick", "--json", str(tmp_path / "g.json"),
                     "--out", str(tmp_path / "g.md")]) == 0
    result = json.loads((tmp_path / "g.json").read_text())
    combos = {(s, a, i, d) for s in ("d2w32", "d8w64") for a, i in gpu.WORKLOADS for d in ("float32", "float64")}
    for section in ("prediction", "training"):
        assert {(r["size"], r["architecture"], r["integrator"], r["dtype"]) for r in result[section]} == combos
    for r in result["prediction"]:
        assert r["bare_Mss"] > 0 and r["predict_Mss"] > 0 and r["cpu_compiled_Mss"] > 0
        assert r["max_diff_vs_cpu_float64"] <= (1e-12 if r["dtype"] == "float64" else 1e-5), r
    for r in result["training"]:
        assert r["device_ms"] > 0 and r["cpu_compiled_float64_ms"] > 0
        assert r["rel_grad_diff_vs_cpu_float64"] <= (1e-10 if r["dtype"] == "float64" else 1e-4), r
    report = (tmp_path / "g.md").read_text()
    assert report.startswith("# GPU check") and "## One training step" in report
    assert report.count("| d8w64 |") == 12


def test_the_device_script_is_valid_bash_and_runs_this_module() -> None:
    script = ROOT / "bench/perf/gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "python3 -m bench.perf.gpu --json" in script.read_text() and script.stat().st_mode & 0o111
