"""The compiled prediction path of the working tree against a git revision's, in one process.

    python -m bench.perf.ab --base HEAD       # ~12 min on 2 cores the first time (compiles the base)
    python -m bench.perf.ab --base HEAD --rk45   # integrator="rk45" (`fastpath.rollout_rk45`) instead

The revision's `hinn_core` is exported (``git archive``) as the package ``hinn_core_base`` (its
absolute imports renamed) into a cache directory keyed by the commit, so both versions' kernels
load in one process and their calls are interleaved: on a shared virtual machine whose speed drifts
by 1.5× within minutes (measured here on 2026-11-29), only interleaved pairs give a ratio one can
trust. For each workload it prints both medians, the ratio of the medians, the median of the paired
ratios (base / working tree: > 1 means the working tree is faster) and the largest difference of
the two trajectories.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.perf.run import initial_states, make_model
from hinn_core import fastpath
from hinn_core.adaptive import Tolerances

ROOT = Path(__file__).resolve().parents[2]
BASE_PACKAGE = "hinn_core_base"
_IMPORT = re.compile(r"\bhinn_core\b")
#: (architecture, integrator, size, dtype): the prediction workloads of `bench.perf.run`
WORKLOADS = [("hinn-separable", "leapfrog", "d2w32", "float32"), ("hinn", "implicit_midpoint", "d2w32", "float32"),
             ("hinn-separable", "leapfrog", "d2w32", "float64"), ("hinn", "implicit_midpoint", "d2w32", "float64"),
             ("hinn", "rk4", "d2w32", "float64"), ("hinn-separable", "leapfrog", "d8w64", "float64"),
             ("hinn", "implicit_midpoint", "d8w64", "float32"), ("hinn", "rk4", "d8w64", "float64")]
#: (batch, steps, interleaved pairs)
SHAPES = [(4096, 50, 15), (1, 1000, 41)]
#: ``--rk45``: (architecture, size, dtype) and (batch, output times, interleaved pairs) over t ∈ [0, 20]
RK45_WORKLOADS = [("hinn", "d2w32", "float64"), ("hinn", "d8w64", "float64"), ("hinn-separable", "d2w32", "float32")]
RK45_SHAPES = [(1, 1000, 21), (64, 1000, 7), (1024, 1000, 3)]


def export_base(rev: str, cache: Path | None = None) -> Path:
    """Export ``rev``'s `hinn_core` as package `BASE_PACKAGE` under a directory that is returned
    (put it on ``sys.path``); reused while the commit is the same, so numba's cache survives."""
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    root = (cache or Path(tempfile.gettempdir()) / "hinn-ab") / sha
    pkg = root / BASE_PACKAGE
    if (pkg / "__init__.py").exists():
        return root
    tar = subprocess.run(["git", "archive", sha, "hinn_core"], cwd=ROOT, check=True, capture_output=True).stdout
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="export-", dir=root))  # renamed into place when complete
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        tf.extractall(staging, filter="data")
    for path in (staging / "hinn_core").rglob("*.py"):
        path.write_text(_IMPORT.sub(BASE_PACKAGE, path.read_text(encoding="utf-8")), encoding="utf-8")
    (staging / "hinn_core").rename(pkg)
    staging.rmdir()
    return root


def import_base(root: Path) -> Any:
    """The exported package (imported once per process)."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(BASE_PACKAGE)


def base_twin(model: Any, base: Any) -> Any:
    """``model`` rebuilt from the base revision's classes, with the same weights and integrator."""
    models = importlib.import_module(f"{base.__name__}.models")
    integrators = importlib.import_module(f"{base.__name__}.integrators")
    known = {f.name for f in dataclasses.fields(models.ModelSpec)}
    spec = models.ModelSpec(**{k: v for k, v in dataclasses.asdict(model.spec).items() if k in known})
    twin = models.DynamicsModel(spec).to(model.dtype)
    twin.load_state_dict(model.state_dict())
    twin.integrator = integrators.get_integrator(model.integrator.name)
    return twin.eval()


def interleaved(new: Callable[[], Any], old: Callable[[], Any], pairs: int) -> dict[str, float]:
    """Time ``pairs`` alternating calls of ``new`` and ``old``: both medians (ms) and the median of the
    paired ratios old / new."""
    t_new, t_old = [], []
    for _ in range(pairs):
        t = time.perf_counter()
        new()
        t_new.append(time.perf_counter() - t)
        t = time.perf_counter()
        old()
        t_old.append(time.perf_counter() - t)
    return {"new_ms": 1e3 * float(np.median(t_new)), "base_ms": 1e3 * float(np.median(t_old)),
            "paired": float(np.median(np.array(t_old) / np.array(t_new)))}


def _print_row(label: str, row: dict[str, Any]) -> None:
    print(f"| {row['size']} | {row['dtype']} | {label} | {row['batch']} × {row['steps']} | {row['new_ms']:.2f} "
          f"| {row['base_ms']:.2f} | {row['base_ms'] / row['new_ms']:.2f}× | {row['paired']:.2f}× "
          f"| {row['diff']:.1e} |", flush=True)


def compare(base: Any, workloads: list[tuple[str, str, str, str]], shapes: list[tuple[int, int, int]]) -> list[dict]:
    base_fp = importlib.import_module(f"{base.__name__}.fastpath")
    rows = []
    for arch, integ, size, dname in workloads:
        model = make_model(arch, integ, size, getattr(torch, dname))
        twin = base_twin(model, base)
        for batch, steps, pairs in shapes:
            q0, p0 = initial_states(batch, size)
            h = np.full(steps, 0.1)
            run_new = partial(fastpath.rollout, model, q0, p0, h)
            run_old = partial(base_fp.rollout, twin, q0, p0, h)
            new, old = run_new(), run_old()  # also compiles, untimed
            diff = max(float(np.abs(a - b).max()) for a, b in zip(new, old, strict=True))
            row = {"size": size, "dtype": dname, "integrator": integ, "batch": batch, "steps": steps,
                   **interleaved(run_new, run_old, pairs), "diff": diff}
            rows.append(row)
            _print_row(integ, row)
    return rows


def compare_rk45(base: Any, workloads: list[tuple[str, str, str]], shapes: list[tuple[int, int, int]]) -> list[dict]:
    """As `compare`, for `fastpath.rollout_rk45` at the perf run's reference tolerances."""
    from bench.perf.run import REFERENCE_TOLERANCES

    base_fp = importlib.import_module(f"{base.__name__}.fastpath")
    base_tol = importlib.import_module(f"{base.__name__}.adaptive").Tolerances
    rows = []
    for arch, size, dname in workloads:
        model = make_model(arch, "rk4", size, getattr(torch, dname))
        twin = base_twin(model, base)
        tol = REFERENCE_TOLERANCES if dname == "float64" else Tolerances(rtol=1e-4, atol=1e-6)
        btol = base_tol(rtol=tol.rtol, atol=tol.atol)
        for batch, points, pairs in shapes:
            q0, p0 = initial_states(batch, size)
            times = np.linspace(0.0, 20.0, points + 1)
            run_new = partial(fastpath.rollout_rk45, model, q0, p0, times, tol)
            run_old = partial(base_fp.rollout_rk45, twin, q0, p0, times, btol)
            new, old = run_new(), run_old()  # also compiles, untimed
            diff = max(float(np.abs(a - b).max()) for a, b in zip(new[:3], old[:3], strict=True))
            row = {"size": size, "dtype": dname, "integrator": "rk45", "batch": batch, "steps": points,
                   **interleaved(run_new, run_old, pairs), "diff": diff,
                   "nfev": float(new[3].mean()), "same_nfev": bool((new[3] == old[3]).all())}
            rows.append(row)
            _print_row(f"rk45, {row['nfev']:.0f} evaluations{'' if row['same_nfev'] else ' (differ)'}", row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="HEAD", help="git revision to compare the working tree against")
    ap.add_argument("--quick", action="store_true", help="two workloads, fewer pairs (a smoke run)")
    ap.add_argument("--rk45", action="store_true", help="compare the adaptive rk45 prediction instead")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # as the latency paths run
    base = import_base(export_base(args.base))
    workloads = WORKLOADS[:1] + WORKLOADS[2:3] if args.quick else WORKLOADS
    shapes = [(64, 20, 5), (1, 100, 5)] if args.quick else SHAPES
    print(f"working tree vs {args.base}, calls interleaved (ms: medians; ratios: base / working tree)\n")
    print("| size | dtype | integrator | batch × steps | working tree (ms) | base (ms) | ratio of medians "
          "| median paired ratio | max diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    if args.rk45:
        compare_rk45(base, RK45_WORKLOADS[:1] if args.quick else RK45_WORKLOADS,
                     [(1, 100, 3), (64, 100, 3)] if args.quick else RK45_SHAPES)
    else:
        compare(base, workloads, shapes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
