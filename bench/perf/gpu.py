"""The GPU check of issue 5, prepared to run as one short command whenever a CUDA machine is lent:

    python -m bench.perf.gpu --json gpu.json     # on a CUDA machine
    python -m bench.perf.gpu --device cpu --quick  # a smoke run of the same code without a GPU
    bench/perf/gpu_check.sh                        # on the lent device machine (see that script)

In one run, for the bench's two sizes (d2w32, d8w64) and three workloads, on ``--device``:

- prediction throughput (state-steps/s) of the torch path, the one CUDA models take: the bare
  rollout (states only, on the device) and `hinn_core.predict` (states, the learned H, copied back
  to the host: what ``POST /predict`` does), at large batches, in float32 (CUDA's default) and
  float64; against the CPU's compiled path (`hinn_core.fastpath`, batch 4096) as a ratio;
- one training step (Adam, rollout loss over 10-step windows) on the device, at batch 256 and 8192,
  against the CPU's compiled engine at the same batch;
- agreement: the device's trajectory against the CPU's float64 compiled one (max abs difference),
  and the weight gradients against the CPU's (max difference relative to the largest gradient).

Asking for ``--device cuda`` where there is none exits with status 2 and says so; it never falls
back silently. Timings synchronise the device around every call.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from bench.perf.run import DT, SIZES, WORKLOADS, _f, _g, _ratio, _train_step_factory, initial_states, make_model
from hinn_core import fastpath, predict

#: batches timed on the device (GPUs need wide batches to fill), and the CPU's comparison batch
DEVICE_BATCHES = (4096, 65536)
CPU_BATCH = 4096
TRAIN_BATCHES = (256, 8192)
STEPS = 100


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` after one warm-up call, the device synchronised around each call."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def _bare_rollout(model: Any, q0: torch.Tensor, p0: torch.Tensor, h: torch.Tensor) -> None:
    with torch.no_grad():
        model.rollout(q0, p0, h)


def bench_prediction(device: torch.device, quick: bool) -> list[dict[str, Any]]:
    rows = []
    batches = (64,) if quick else DEVICE_BATCHES
    steps = 5 if quick else STEPS
    repeats = 2 if quick else 5
    h = np.full(steps, DT)
    times = np.concatenate([[0.0], np.cumsum(h)])
    for size in SIZES:
        for arch, integ in WORKLOADS:
            reference = make_model(arch, integ, size, torch.float64)  # CPU, compiled path
            q_cpu, p_cpu = initial_states(CPU_BATCH if not quick else 64, size)
            cpu_s = timed(partial(fastpath.rollout, reference, q_cpu, p_cpu, h), torch.device("cpu"), repeats)
            cpu_rate = q_cpu.shape[0] * steps / cpu_s
            for dname, dtype in (("float32", torch.float32), ("float64", torch.float64)):
                model = make_model(arch, integ, size, dtype).to(device)
                for batch in batches:
                    q0, p0 = initial_states(batch, size)
                    kw = {"dtype": dtype, "device": device}
                    qt, pt, ht = torch.as_tensor(q0, **kw), torch.as_tensor(p0, **kw), torch.as_tensor(h, **kw)
                    bare_s = timed(partial(_bare_rollout, model, qt, pt, ht), device, repeats)
                    full_s = timed(partial(predict, model, q0, p0, times, engine="torch"), device, repeats)
                    n = min(batch, 256)
                    got = predict(model, q0[:n], p0[:n], times, engine="torch")
                    want_q, want_p, _ = fastpath.rollout(reference, q0[:n], p0[:n], h)
                    diff = max(float(np.abs(got.q - want_q).max()), float(np.abs(got.p - want_p).max()))
                    row = {"size": size, "architecture": arch, "integrator": integ, "dtype": dname, "batch": batch,
                           "steps": steps, "bare_Mss": batch * steps / bare_s / 1e6,
                           "predict_Mss": batch * steps / full_s / 1e6, "cpu_compiled_Mss": cpu_rate / 1e6,
                           "cpu_batch": q_cpu.shape[0], "max_diff_vs_cpu_float64": diff}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    return rows


def bench_training(device: torch.device, quick: bool) -> list[dict[str, Any]]:
    rows = []
    batches = (32,) if quick else TRAIN_BATCHES
    repeats = 2 if quick else 7
    for size in SIZES:
        for arch, integ in WORKLOADS:
            for batch in batches:
                cpu_model = make_model(arch, integ, size, torch.float64).train()
                cpu_step = _train_step_factory(cpu_model, batch, 10)
                want = cpu_step("numba")
                cpu_s = timed(partial(cpu_step, "numba"), torch.device("cpu"), repeats)
                scale = max(float(g.abs().max()) for g in want)
                for dname, dtype in (("float32", torch.float32), ("float64", torch.float64)):
                    model = make_model(arch, integ, size, dtype).to(device).train()
                    step = _train_step_factory(model, batch, 10)  # same seed: the same windows
                    got = step("torch")
                    device_s = timed(partial(step, "torch"), device, repeats)
                    diff = max(float((a.double().cpu() - b).abs().max()) for a, b in zip(got, want, strict=True))
                    row = {"size": size, "architecture": arch, "integrator": integ, "dtype": dname, "batch": batch,
                           "window": 10, "device_ms": 1e3 * device_s, "cpu_compiled_float64_ms": 1e3 * cpu_s,
                           "rel_grad_diff_vs_cpu_float64": diff / scale}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    return rows


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return f"CPU ({platform.machine()})"


def render(result: dict[str, Any]) -> str:
    out = [f"# GPU check: `python -m bench.perf.gpu` on {result['device']}", "",
           f"torch {result['torch']}; {result['date']}. Device rows are the torch path; the CPU column is "
           "the compiled path (float64) on this machine's CPU in the same run.", "",
           "## Prediction (million state-steps per second)", "",
           "| size | workload | dtype | batch | rollout (device) | `predict` (+H, to host) | CPU compiled "
           "(batch) | device / CPU | max diff vs CPU float64 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["prediction"]:
        out.append(f"| {r['size']} | {r['architecture']} · {r['integrator']} | {r['dtype']} | {r['batch']} "
                   f"| {_f(r['bare_Mss'])} | {_f(r['predict_Mss'])} | {_f(r['cpu_compiled_Mss'])} ({r['cpu_batch']}) "
                   f"| {_ratio(r['predict_Mss'], r['cpu_compiled_Mss'])} | {_g(r['max_diff_vs_cpu_float64'])} |")
    out += ["", "## One training step (Adam, 10-step windows)", "",
            "| size | workload | dtype | batch | device (ms) | CPU compiled float64 (ms) | CPU / device "
            "| rel. grad diff vs CPU |", "|---|---|---|---|---|---|---|---|"]
    for r in result["training"]:
        out.append(f"| {r['size']} | {r['architecture']} · {r['integrator']} | {r['dtype']} | {r['batch']} "
                   f"| {_f(r['device_ms'], 1)} | {_f(r['cpu_compiled_float64_ms'], 1)} "
                   f"| {_ratio(r['cpu_compiled_float64_ms'], r['device_ms'])} "
                   f"| {_g(r['rel_grad_diff_vs_cpu_float64'])} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf.gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="torch device to time (default cuda)")
    ap.add_argument("--quick", action="store_true", help="tiny batches and few steps (a smoke run)")
    ap.add_argument("--json", default=None, help="also write the raw figures here")
    ap.add_argument("--out", default=None, help="write the markdown report here (default: stdout only)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench.perf.gpu: no CUDA device here (torch.cuda.is_available() is False); "
              "run it on a GPU machine, or pass --device cpu for a smoke run", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    from hinn_core.fastpath.precompile import compile_all, default_jobs

    compile_all(default_jobs())  # the CPU columns' kernels, in parallel on a fresh machine
    result = {"device": describe(device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "prediction": bench_prediction(device, args.quick), "training": bench_training(device, args.quick)}
    text = render(result)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
