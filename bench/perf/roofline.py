"""How far the compiled rollouts are from what this machine's tuned GEMMs reach, and what a
throughput target asks of the products alone.

    python -m bench.perf.roofline            # ~1 min: both sizes, both dtypes, batch 4096
    python -m bench.perf.run --sections roofline --no-http   # the same as a section of the report

A rollout's multiply-adds per state-step are counted from the model's own layers (`sweep_madds`:
a gradient sweep is one product per layer forward and one back, a value sweep one forward;
tested against torch's FLOP counter on the same trunks), and so are its activations
(`sweep_activations`: σ with σ′ per hidden unit of a gradient sweep, σ alone in a value sweep).
The kernel's measured throughput gives the rate it sustains in those products, and the
issue's targets the rate they would need. Both are set against the best of numpy's BLAS and
torch's GEMM on the same shapes (a batch of 4096 rows through a width × width layer, in one call,
on all CPUs) and on a large square product: a rate reached by code tuned for this CPU.

*Ceiling* is the throughput a rollout would reach if its products ran at that best GEMM rate and
its activations at the compiled kernels' own speed measured alone (`activation_ns`: on a block
of 64 rows, as the rollouts use, in a compiled loop without call overhead), spread over all CPUs,
and nothing else — no elementwise backward products, no integrator, no data movement — cost
anything. A target above the ceiling is out of reach of these kernels' arithmetic for that
workload on this machine, however well scheduled (another integrator does other work: implicit
midpoint is not covered, its Newton iterations vary).
"""

from __future__ import annotations

import argparse
import json
import os
from functools import partial
from typing import Any

import numpy as np
import torch
from numba import njit

from hinn_core.fastpath import _math
from hinn_core.networks import ScalarTrunk

#: the issue's batch-4096 targets, M state-steps/s: (size, dtype) → target
TARGETS = {("d2w32", "float64"): 2.0, ("d8w64", "float64"): 0.8,
           ("d2w32", "float32"): 6.0, ("d8w64", "float32"): 2.0}
#: (architecture, integrator) whose sweeps per step are fixed (implicit midpoint's are not)
EXPLICIT = [("hinn-separable", "leapfrog"), ("hinn", "rk4")]


def trunk_madds(trunk: ScalarTrunk) -> tuple[int, int]:
    """Multiply-adds per sample of ``(a gradient sweep, a value sweep)`` of ``trunk``.

    The value sweep is one product per layer (Σ in·out); the gradient sweep adds the transposed
    products, except the output layer's: seeded with ∂H/∂H = 1, its product is its weight column."""
    first, blocks, last = trunk._weights()
    forward = sum(int(layer.K.numel()) for layer in (first, *blocks, last))
    return 2 * forward - int(last.K.numel()), forward


def trunk_units(trunk: ScalarTrunk) -> int:
    """Hidden units of ``trunk`` per sample: the opening layer's and each resnet layer's outputs."""
    first, blocks, _last = trunk._weights()
    return sum(int(layer.K.shape[1]) for layer in (first, *blocks))


def step_sweeps(field: Any, integrator: str, energy: bool = True) -> list[tuple[ScalarTrunk, bool]]:
    """The network sweeps of one compiled state-step, as ``(trunk, gradient sweep or value sweep)``.

    Separable leapfrog (kick–drift–kick, first-same-as-last): one gradient sweep of V and one of T
    per step; with H, T's value at each stored p in a value sweep (V's comes with its gradient).
    RK4 on the general H: four gradient sweeps of the one trunk (H at each state comes with the
    first stage's)."""
    if integrator == "leapfrog" and field.separable:
        return [(field.potential, True), (field.kinetic, True)] + ([(field.kinetic, False)] if energy else [])
    if integrator == "rk4" and not field.separable:
        return [(field.trunk, True)] * 4
    raise ValueError(f"no fixed sweep count for {integrator} on this field")


def sweep_madds(field: Any, integrator: str, energy: bool = True) -> int:
    """Multiply-adds per state-step of the compiled rollout's products (`step_sweeps`)."""
    return sum(trunk_madds(trunk)[0 if grad else 1] for trunk, grad in step_sweeps(field, integrator, energy))


def sweep_activations(field: Any, integrator: str, energy: bool = True) -> tuple[int, int]:
    """``(with derivatives, values only)``: activations per state-step (`step_sweeps`)."""
    sweeps = step_sweeps(field, integrator, energy)
    return (sum(trunk_units(trunk) for trunk, grad in sweeps if grad),
            sum(trunk_units(trunk) for trunk, grad in sweeps if not grad))


#: what a gradient sweep's activation pass computes (`_math.activate_first`), stored with each row
ACTIVATION_PASS = "σ, σ′"
#: what it computed, and `activation_ns` timed, before 2026-11-29's last session (`_math.activate`)
OLD_ACTIVATION_PASS = "σ, σ′, σ″"


@njit(**_math.KERNEL)
def _activate_loop(Z, A, D1, act, rh, reps, derivatives):
    for _ in range(reps):
        if derivatives:
            _math.activate_first(Z, A, D1, Z.shape[0], act, rh, True)
        else:
            _math.activate_value(Z, A, Z.shape[0], act, rh, True)


def activation_ns(activation: str, dtype: str, width: int, rows: int = 64, reps: int = 2000) -> tuple[float, float]:
    """ns per element of the kernels' own activation pass (with σ′ as a gradient sweep takes it; value
    only), one thread, on a
    ``rows × width`` block as the rollouts use, median of 7 compiled loops of ``reps`` passes."""
    from bench.perf.run import median_time

    z = np.random.default_rng(0).standard_normal((rows, width)).astype(dtype)
    a, d1 = np.zeros_like(z), np.zeros_like(z)
    code, rh = _math.ACT_CODES[activation], z.dtype.type(0.5)
    out = []
    for derivatives in (True, False):
        _activate_loop(z, a, d1, code, rh, 1, derivatives)
        t = median_time(lambda d=derivatives: _activate_loop(z, a, d1, code, rh, reps, d), 7)
        out.append(t / (reps * rows * width) * 1e9)
    return out[0], out[1]


def ceiling_mss(madds: int, gemm_gflops: float, activations: tuple[int, int], act_ns: tuple[float, float],
                cpus: int) -> float:
    """M state-steps/s if ``madds`` multiply-adds per state-step ran at ``gemm_gflops`` and the
    ``activations`` (with derivatives, values only) at ``act_ns`` per element on each of ``cpus``,
    and nothing else took time."""
    ns = 2 * madds / gemm_gflops + (activations[0] * act_ns[0] + activations[1] * act_ns[1]) / cpus
    return 1e3 / ns


def gemm_gflops(rows: int, inner: int, cols: int, dtype: str, repeats: int = 30) -> dict[str, float]:
    """GFLOP/s (2 per multiply-add) of ``(rows × inner) @ (inner × cols)`` into a preallocated
    output, numpy's BLAS and torch's GEMM on all CPUs, medians of ``repeats`` calls."""
    from bench.perf.run import median_time

    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, inner)).astype(dtype)
    b = rng.standard_normal((inner, cols)).astype(dtype)
    c = np.empty((rows, cols), dtype)
    ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
    flops = 2.0 * rows * inner * cols
    threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    try:
        t_torch = median_time(lambda: torch.mm(ta, tb, out=tc), repeats)
    finally:
        torch.set_num_threads(threads)
    t_numpy = median_time(lambda: np.matmul(a, b, out=c), repeats)
    return {"numpy": flops / t_numpy / 1e9, "torch": flops / t_torch / 1e9}


def bench_roofline(quick: bool, batch: int = 4096, steps: int = 100) -> list[dict[str, Any]]:
    """One row per size × dtype × explicit workload: the kernel's products rate, the target's,
    and the GEMM rates they are set against."""
    from bench.perf.run import DTYPES, SIZES, fast_call, initial_states, make_model, median_time

    rows, cpus = [], len(os.sched_getaffinity(0))
    big = {d: gemm_gflops(1024 if quick else 2048, 1024 if quick else 2048, 1024 if quick else 2048, d,
                          3 if quick else 7) for d in DTYPES}
    for size, (_dof, width) in SIZES.items():
        for dname, dtype in DTYPES.items():
            shape = gemm_gflops(batch, width, width, dname, 30 if quick else 200)
            best = max(*shape.values(), *big[dname].values())
            for arch, integ in EXPLICIT:
                model = make_model(arch, integ, size, dtype)
                q0, p0 = initial_states(batch, size)
                h = np.full(steps, 0.02)
                t_h = median_time(partial(fast_call, model, q0, p0, h), 3 if quick else 7)
                t_x = median_time(partial(fast_call, model, q0, p0, h, energy=False), 3 if quick else 7)
                m_h, m_x = sweep_madds(model.field, integ), sweep_madds(model.field, integ, energy=False)
                mss_h, mss_x = batch * steps / t_h / 1e6, batch * steps / t_x / 1e6
                act_ns = activation_ns(model.spec.activation, dname, width)
                ceilings = [ceiling_mss(madds, best, sweep_activations(model.field, integ, energy), act_ns, cpus)
                            for energy, madds in ((True, m_h), (False, m_x))]
                target = TARGETS[(size, dname)] if arch == "hinn-separable" else None
                row = {"size": size, "dtype": dname, "architecture": arch, "integrator": integ, "batch": batch,
                       "madds": m_h, "madds_states": m_x, "Mss": mss_h, "Mss_states": mss_x,
                       "gflops": 2e-3 * m_h * mss_h, "gflops_states": 2e-3 * m_x * mss_x,
                       "gemm_shape": shape, "gemm_big": big[dname], "gemm_best": best,
                       "activation": model.spec.activation, "activation_ns": act_ns,
                       "activation_pass": ACTIVATION_PASS, "cpus": cpus,
                       "ceiling_Mss": ceilings[0], "ceiling_Mss_states": ceilings[1], "target_Mss": target}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def render_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The report's table for `bench_roofline`'s rows (with H / states only in each cell)."""
    out = ["| size | dtype | model · integrator | multiply-adds per state-step | hinn, M state-steps/s "
           "| hinn's products, GFLOP/s (of the best GEMM) | GEMM 4096 × w × w, numpy / torch | large GEMM, "
           "numpy / torch | activation, ns per element (gradient sweep / value sweep) | ceiling, M state-steps/s "
           "| hinn / ceiling | target |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in rows:
        best, (a_d, a_v) = x["gemm_best"], x["activation_ns"]
        target = "—" if x["target_Mss"] is None else (
            f"{x['target_Mss']:g} M: {'**above**' if x['target_Mss'] > x['ceiling_Mss'] else 'below'} the ceiling")
        out.append(
            f"| {x['size']} | {x['dtype']} | {x['architecture']} · {x['integrator']} "
            f"| {x['madds']} / {x['madds_states']} | {x['Mss']:.2f} / {x['Mss_states']:.2f} "
            f"| {x['gflops']:.0f} ({x['gflops'] / best:.0%}) / {x['gflops_states']:.0f} "
            f"({x['gflops_states'] / best:.0%}) "
            f"| {x['gemm_shape']['numpy']:.0f} / {x['gemm_shape']['torch']:.0f} "
            f"| {x['gemm_big']['numpy']:.0f} / {x['gemm_big']['torch']:.0f} "
            f"| {a_d:.2f} / {a_v:.2f} ({x['activation']}; {x.get('activation_pass', OLD_ACTIVATION_PASS)} / σ) "
            f"| {x['ceiling_Mss']:.2f} / {x['ceiling_Mss_states']:.2f} "
            f"| {x['Mss'] / x['ceiling_Mss']:.0%} / {x['Mss_states'] / x['ceiling_Mss_states']:.0%} | {target} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller square GEMM")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = bench_roofline(args.quick)
    print("\n".join(render_rows(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
