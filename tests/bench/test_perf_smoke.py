"""bench/perf: the training step it times is training's own loss on both engines, and the report
re-renders from a run's raw figures."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.perf.run import _train_step_factory, cpu_description, main, render
from hinn_core import fastpath
from hinn_core.models import DynamicsModel, ModelSpec


def test_the_timed_training_step_gives_the_same_gradients_on_both_engines() -> None:
    torch.manual_seed(0)
    model = DynamicsModel(ModelSpec(architecture="hinn-separable", dof=2, width=8)).double().train()
    step = _train_step_factory(model, batch=40, window=5)
    compiled, reference = step("numba"), step("torch")
    scale = max(float(g.abs().max()) for g in reference)
    assert scale > 0
    for a, b in zip(compiled, reference, strict=True):
        assert float((a - b).abs().max()) <= 1e-12 * scale


def test_render_from_raw_figures(tmp_path: Path) -> None:
    row = {"size": "d2w32", "dtype": "float64", "architecture": "hinn-separable", "integrator": "leapfrog",
           "compiled_ms": 10.0, "fast_ms": 25.0, "autograd_ms": 30.0, "hessquik_ms": 70.0,
           "rel_grad_diff_compiled": 1e-15, "rel_grad_diff_fast": 2e-15, "rel_grad_diff_hessquik": 3e-15}
    results = {"command": "python -m bench.perf.run", "machine": "x86_64", "cpu": cpu_description(), "cpus": 2,
               "load": 0.1, "date": "2026-11-28", "torch": "2.13.0", "numba": "0.68.1", "scipy": "1.17.1",
               "latency": [], "throughput": [], "training": [row], "hessian": [], "http": []}
    text = render(results)
    assert f"on x86_64, {results['cpu']}; 2 CPUs" in text.splitlines()[2]
    line = next(x for x in text.splitlines() if x.startswith("| d2w32 | float64 | hinn-separable · leapfrog | 10.0"))
    assert "25.0 ms (2.5×)" in line and "30.0 ms (3.0×)" in line and "70.0 ms (7.0×)" in line
    raw, out = tmp_path / "perf.json", tmp_path / "perf.md"
    raw.write_text(json.dumps(results))
    assert main(["--render", str(raw), "--out", str(out)]) == 0
    assert out.read_text() == text


def test_the_cpu_is_named_as_numba_targets_it() -> None:
    import llvmlite.binding as llvm

    cpu = cpu_description()
    assert cpu.startswith(llvm.get_host_cpu_name() + " (")
    assert cpu.endswith(("AVX-512)", "AVX2)", "no AVX2)", "SIMD unknown)", "AVX-512, 512-bit vectors preferred)"))
    # the report says which vector width the kernels were compiled for (hinn_core.fastpath.vectorwidth)
    assert cpu.endswith("512-bit vectors preferred)") == (fastpath.WIDE_VECTORS is not None)


def test_render_shows_batched_rk45_against_rk4_and_reads_runs_without_it(empty_report: dict) -> None:
    base = empty_report
    assert "## Batched `rk45`" not in render(base)  # a run from before the section: no table, no error
    row = {"size": "d8w64", "batch": 1024, "method": "rk45", "setting": "rtol = atol = 1e-11", "ms": 400.0,
           "nfev": 607.3, "err": 1e-9}
    text = render({**base, "adaptive": [row]})
    line = next(x for x in text.splitlines() if x.startswith("| d8w64 | 1024 |"))
    assert line == "| d8w64 | 1024 | rk45 | rtol = atol = 1e-11 | 400.00 | 607 | 1.0e-09 |"


def test_hessian_table_sets_the_compiled_sweep_first_and_reads_runs_without_it(empty_report: dict) -> None:
    base = empty_report
    old = {"size": "d2w32", "dtype": "float64", "fast_ms": 1.0, "hessquik_forward_ms": 20.0,
           "hessquik_backward_ms": 30.0, "torch_func_ms": 40.0, "diff_fast": 1e-15, "diff_torch_func": 2e-15}
    new = {**old, "dtype": "float32", "compiled_ms": 0.05, "diff_compiled": 3e-7}
    lines = render({**base, "hessian": [old, new]}).splitlines()
    assert ("| d2w32 | float64 | — | 1.000 ms (1.0×) | 20.00 ms (20×) | 30.00 ms (30×) | 40.00 ms (40×) "
            "| — | 1.0e-15 | 2.0e-15 |") in lines
    assert ("| d2w32 | float32 | 0.050 | 1.000 ms (20×) | 20.00 ms (400×) | 30.00 ms (600×) | 40.00 ms (800×) "
            "| 3.0e-07 | 1.0e-15 | 2.0e-15 |") in lines
