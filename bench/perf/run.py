"""Performance benchmark: every prediction and training path side by side, in one run, as ratios.

    python -m bench.perf.run                      # ~18 min on 2 cores; writes docs/performance.md
    python -m bench.perf.run --quick              # ~1 min smoke run (fewer repeats, no HTTP 1024-IC case)
    python -m bench.perf.run --json perf.json     # also the raw figures
    python -m bench.perf.run --render perf.json   # re-render the report from them (notes.md edited)

For a spring-size network (d = 2: 2→32→32→32→1) and a two-body-size one (d = 8: 8→64→64→64→1),
in float64 and float32, it times

- batch-1 latency of a 1000-step rollout: hinn's prediction path (the compiled numba kernel
  behind `hinn_core.predict`) vs the same integrator in a Python loop calling hessQuik per step,
  calling autograd per step, hinn's own torch path (the fast path's reference), and the HNN
  reference's scipy RK45 (rtol 1e-9, autograd right-hand side) on the same network;
- batched ``integrator="rk45"`` at batch 64 and 1024 vs fixed-step RK4 over the same horizon: time,
  evaluations and error against a tight solution;
- batched throughput (state-steps/s) at batch 64 and 4096 vs the naive autograd loop;
- the batch-4096 rollouts against this machine's tuned GEMMs (`bench.perf.roofline`): the rate the
  kernels sustain in their products, and the ceiling products at the GEMM rate and activations
  at their own speed would allow, against the issue's targets;
- one Adam step (batch 256 × 10 rollout steps): the compiled adjoint of the whole rollout
  (training's default engine) vs the torch path with hinn's hand-written ∇H adjoint vs autograd
  double-backprop vs hessQuik's gradient, and the weight-gradient agreement;
- the Hessian at batch 256 (implicit midpoint's Newton steps): the compiled sweep and the torch path's
  vs hessQuik and torch.func;
- end-to-end ``POST /predict`` over HTTP against ``hinn serve`` on loopback: p50/p99 and the
  share of the time outside the integrator (``Server-Timing``), JSON and NPZ.

Every path's trajectory is compared with the hessQuik loop's (max abs difference). Medians of
repeated runs; one torch thread on latency paths (the service does the same).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import scipy
import torch
from scipy.integrate import solve_ivp

from bench.perf import roofline
from bench.serve import hinn_serve
from hinn_core import fastpath
from hinn_core.adaptive import Tolerances
from hinn_core.data import generate_dataset
from hinn_core.dynamics import HamiltonianDynamics
from hinn_core.fastpath import vectorwidth
from hinn_core.fastpath.vectorwidth import active_features
from hinn_core.integrators import get_integrator, integrate
from hinn_core.models import DynamicsModel, ModelSpec
from hinn_core.networks import ScalarTrunk
from hinn_core.systems import make_system
from hinn_core.training import TrainConfig, Windows, _rollout_loss, train

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"d2w32": (1, 32), "d8w64": (4, 64)}  # name: (dof, width); depth 2 → three hidden layers
#: the HNN protocol's systems (shared/benchmarks/hnn-protocol.md): its spring is H = q² + p² (ω = 2)
SYSTEM = {"d2w32": ("spring", {"m": 0.5, "k": 2.0}), "d8w64": ("two-body", None)}
_TRAINED: dict[tuple[str, str], DynamicsModel] = {}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# (architecture, integrator): explicit leapfrog on the separable H (one gradient sweep of each
# trunk per step, the issue's calibration workload), RK4 on the general H (four sweeps per step),
# and implicit midpoint on the general H (the service's default: Newton with Hessians)
WORKLOADS = [("hinn-separable", "leapfrog"), ("hinn", "rk4"), ("hinn", "implicit_midpoint")]
#: 1000 output points over t ∈ [0, 20], the protocol's prediction horizon (spring, two-body)
STEPS, DT = 1000, 0.02


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _trained(arch: str, size: str) -> DynamicsModel:
    """A briefly trained float64 model of the size's system (cached): realistic weights and time
    scales, which the adaptive reference solver's step count depends on."""
    key = (arch, size)
    if key not in _TRAINED:
        dof, width = SIZES[size]
        system, parameters = SYSTEM[size]
        ds = generate_dataset(system, n_trajectories=40, t_end=3.0, dt=0.1, seed=0, parameters=parameters)
        spec = ModelSpec(architecture=arch, dof=dof, width=width, depth=2,
                         integrator="leapfrog" if arch == "hinn-separable" else "rk4")
        _TRAINED[key] = train(ds, spec, TrainConfig(epochs=15, lbfgs_iterations=0, seed=0)).model.eval()
    return _TRAINED[key]


def make_model(arch: str, integrator: str, size: str, dtype: torch.dtype) -> DynamicsModel:
    model = copy.deepcopy(_trained(arch, size)).to(dtype)
    model.integrator = get_integrator(integrator)
    return model


def initial_states(batch: int, size: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Initial conditions from the system's own sampler (where the model was trained)."""
    return make_system(*SYSTEM[size]).sample_initial_conditions(batch, np.random.default_rng(seed))


class NaiveField:
    """∇H (and ∇²H) of a model's field computed per call by hessQuik or by autograd: what a
    straightforward implementation does at every step."""

    def __init__(self, field: Any, mode: str) -> None:
        self.field, self.mode, self.dof, self.separable = field, mode, field.dof, field.separable

    def _autograd(self, fn: Callable[..., torch.Tensor], *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            xs = tuple(x.detach().requires_grad_() for x in xs)
            return torch.autograd.grad(fn(*xs).sum(), xs)

    def grad(self, q: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "hessquik":
            g = self.field.grad_hessquik(q, p)
            return g[:, : self.dof], g[:, self.dof :]
        gq, gp = self._autograd(self.field.hamiltonian, q, p)
        return gq, gp

    def _half(self, trunk: Any, hat: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              scale: torch.Tensor) -> torch.Tensor:
        f = self.field
        if self.mode == "hessquik":
            _, d, _ = trunk.hessquik(hat(x))
            return d[:, :, 0] * (f.out_scale / scale)
        (g,) = self._autograd(lambda y: f.out_scale * trunk(hat(y))[:, 0], x)
        return g

    def grad_q(self, q: torch.Tensor) -> torch.Tensor:
        f = self.field
        return self._half(f.potential, f._q_hat, q, f.scale[: self.dof])

    def grad_p(self, p: torch.Tensor) -> torch.Tensor:
        f = self.field
        return self._half(f.kinetic, f._p_hat, p, f.scale[self.dof :])

    def hessian(self, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return self.field.hessian_hessquik(q, p)


def naive_rollout(model: DynamicsModel, mode: str, q0: np.ndarray, p0: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The integrator's Python loop with a hessQuik/autograd gradient per stage (no fused kernels)."""
    kw = {"dtype": model.dtype}
    dyn = HamiltonianDynamics(NaiveField(model.field, mode))
    with torch.no_grad():
        q, p = integrate(model.integrator, dyn, torch.as_tensor(q0, **kw), torch.as_tensor(p0, **kw),
                         torch.as_tensor(h, **kw))
    return torch.cat([q, p], -1).double().numpy()


def torch_rollout(model: DynamicsModel, q0: np.ndarray, p0: np.ndarray, h: np.ndarray) -> np.ndarray:
    kw = {"dtype": model.dtype}
    with torch.no_grad():
        q, p = model.rollout(torch.as_tensor(q0, **kw), torch.as_tensor(p0, **kw), torch.as_tensor(h, **kw))
    return torch.cat([q, p], -1).double().numpy()


def fast_rollout(model: DynamicsModel, q0: np.ndarray, p0: np.ndarray, h: np.ndarray,
                 reuse_jacobian: bool = True) -> np.ndarray:
    """hinn's prediction path, as one array for `max_diff` (timings call `fast_call`: the concatenation
    and float64 copy are this comparison's, not the path's)."""
    q, p, _ = fast_call(model, q0, p0, h, reuse_jacobian)
    return np.concatenate([q, p], -1).astype(np.float64)


def fast_call(model: DynamicsModel, q0: np.ndarray, p0: np.ndarray, h: np.ndarray, reuse_jacobian: bool = True,
              energy: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What `hinn_core.predict` runs: q, p and (with ``energy``) the learned H at every state."""
    return fastpath.rollout(model, q0, p0, h, reuse_jacobian=reuse_jacobian, energy=energy)


def scipy_rollout(model: DynamicsModel, q0: np.ndarray, p0: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, int]:
    """HNN's reference path: solve_ivp RK45 (rtol 1e-9) calling an autograd ∇H per evaluation."""
    n = model.dof
    field = NaiveField(model.field, "autograd")
    times = np.concatenate([[0.0], np.cumsum(h)])

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(y[None], dtype=model.dtype)
        gq, gp = field.grad(x[:, :n], x[:, n:])
        return torch.cat([gp, -gq], -1)[0].double().numpy()

    sol = solve_ivp(rhs, (0.0, times[-1]), np.concatenate([q0[0], p0[0]]), method="RK45", t_eval=times, rtol=1e-9)
    return sol.y.T[None], int(sol.nfev)


#: the HNN reference's tolerances (`scipy_rollout`): rtol 1e-9, scipy's default atol 1e-6
REFERENCE_TOLERANCES = Tolerances(rtol=1e-9, atol=1e-6)


def bench_rk45(model: DynamicsModel, q0: np.ndarray, p0: np.ndarray, h: np.ndarray, scipy_states: np.ndarray,
               reps: int) -> dict[str, Any]:
    """hinn's adaptive RK45 (`fastpath.rollout_rk45`, with H) at the reference's tolerances: time,
    evaluations, and the max difference from scipy's solution (the same steps: round-off apart)."""
    times = np.concatenate([[0.0], np.cumsum(h)])
    run = partial(fastpath.rollout_rk45, model, q0, p0, times, REFERENCE_TOLERANCES)
    q, p, _, nfev = run()
    return {"rk45_ms": 1e3 * median_time(run, reps), "rk45_nfev": int(nfev[0]),
            "diff_rk45_scipy": max_diff(np.concatenate([q, p], -1), scipy_states)}


#: `bench_adaptive`: rk45 tolerances (rtol = atol) and fixed RK4 step counts over t ∈ [0, 20]
ADAPTIVE_TOLERANCES = (1e-6, 1e-9, 1e-11)
FIXED_STEPS = (250, 1000)


def bench_adaptive(quick: bool) -> list[dict[str, Any]]:
    """Batched `integrator="rk45"` (lock-stepped blocks) against fixed-step RK4 over the same horizon
    (t ∈ [0, 20], H included, float64): time, field evaluations per trajectory and the max distance of
    q, p from a tight solution (rk45 at rtol = atol = 1e-13) at 250 common output times — the cost of
    each accuracy, and the reference's own setting (rtol 1e-9, atol 1e-6) for comparison."""
    rows = []
    times = np.linspace(0.0, 20.0, 1001)
    common = np.linspace(0.0, 20.0, 251)
    tight = Tolerances(rtol=1e-13, atol=1e-13)
    for size in SIZES:
        model = make_model("hinn", "rk4", size, torch.float64)
        for batch in (64,) if quick else (64, 1024):
            q0, p0 = initial_states(batch, size)
            rq, rp, _, _ = fastpath.rollout_rk45(model, q0, p0, common, tight, energy=False)
            exact = np.concatenate([rq, rp], -1)
            runs: list[tuple[str, str, Callable[[], Any], int]] = [
                ("rk45", "rtol 1e-9, atol 1e-6 (the reference's)",
                 partial(fastpath.rollout_rk45, model, q0, p0, times, REFERENCE_TOLERANCES), 4)]
            runs += [("rk45", f"rtol = atol = {tol:.0e}",
                      partial(fastpath.rollout_rk45, model, q0, p0, times, Tolerances(rtol=tol, atol=tol)), 4)
                     for tol in ADAPTIVE_TOLERANCES]
            runs += [("rk4", f"{steps} steps", partial(fastpath.rollout, model, q0, p0, np.full(steps, 20.0 / steps),
                                                        "rk4"), steps // 250) for steps in FIXED_STEPS]
            for method, setting, run, stride in runs:
                out = run()
                nfev = float(out[3].mean()) if method == "rk45" else 4.0 * (len(out[0][0]) - 1)
                got = np.concatenate([out[0], out[1]], -1)[:, ::stride]
                row = {"size": size, "batch": batch, "method": method, "setting": setting,
                       "ms": 1e3 * median_time(run, 3 if quick else 7), "nfev": nfev, "err": max_diff(got, exact)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)))


def bench_latency(quick: bool) -> list[dict[str, Any]]:
    rows = []
    reps_fast, reps_slow = (5, 1) if quick else (21, 3)
    for size in SIZES:
        for dname, dtype in DTYPES.items():
            for arch, integ in WORKLOADS:
                model = make_model(arch, integ, size, dtype)
                q0, p0 = initial_states(1, size)
                h = np.full(STEPS, DT)
                ref = naive_rollout(model, "hessquik", q0, p0, h)
                row: dict[str, Any] = {"size": size, "dtype": dname, "architecture": arch, "integrator": integ}
                row["fast_ms"] = 1e3 * median_time(partial(fast_call, model, q0, p0, h), reps_fast)
                if integ == "implicit_midpoint":  # the same kernel with a fresh Jacobian every iteration
                    row["full_newton_ms"] = 1e3 * median_time(
                        partial(fast_call, model, q0, p0, h, False), reps_fast)
                row["torch_ms"] = 1e3 * median_time(partial(torch_rollout, model, q0, p0, h), reps_slow)
                row["hessquik_ms"] = 1e3 * median_time(partial(naive_rollout, model, "hessquik", q0, p0, h),
                                                       reps_slow, warmup=0)
                if integ != "implicit_midpoint":  # autograd Hessians per Newton step: not a path anyone takes
                    row["autograd_ms"] = 1e3 * median_time(
                        partial(naive_rollout, model, "autograd", q0, p0, h), reps_slow, warmup=0)
                    row["diff_autograd"] = max_diff(naive_rollout(model, "autograd", q0, p0, h), ref)
                if integ == "rk4":  # the HNN reference integrates the same H adaptively
                    t = time.perf_counter()
                    y, nfev = scipy_rollout(model, q0, p0, h)
                    row["scipy_rk45_ms"], row["scipy_nfev"] = 1e3 * (time.perf_counter() - t), nfev
                    row["diff_scipy"] = max_diff(y, ref)
                    if dtype == torch.float64:  # the same solver compiled: hinn's integrator="rk45"
                        row.update(bench_rk45(model, q0, p0, h, y, reps_fast))
                row["diff_fast"] = max_diff(fast_rollout(model, q0, p0, h), ref)
                row["diff_torch"] = max_diff(torch_rollout(model, q0, p0, h), ref)
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def bench_throughput(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for size in SIZES:
        for dname, dtype in DTYPES.items():
            for arch, integ in WORKLOADS:
                model = make_model(arch, integ, size, dtype)
                for batch in (64, 4096):
                    q0, p0 = initial_states(batch, size)
                    steps_fast = 1000 if batch == 64 else 100
                    steps_naive = 50 if batch == 64 else 5
                    hf, hn = np.full(steps_fast, DT), np.full(steps_naive, DT)
                    t_fast = median_time(partial(fast_call, model, q0, p0, hf), 3 if quick else 7)
                    # states only, as the naive loop computes them (no H along the trajectory)
                    t_states = median_time(partial(fast_call, model, q0, p0, hf, energy=False), 3 if quick else 7)
                    t_full = None if integ != "implicit_midpoint" else median_time(
                        partial(fast_call, model, q0, p0, hf, False), 3 if quick else 7)
                    mode = "hessquik" if integ == "implicit_midpoint" else "autograd"
                    # hessQuik's Hessian at batch 4096 takes seconds per Newton iteration: not timed there
                    t_naive = None if (mode, batch) == ("hessquik", 4096) else median_time(
                        partial(naive_rollout, model, mode, q0, p0, hn), 1 if quick else 3, warmup=0)
                    t_torch = median_time(partial(torch_rollout, model, q0, p0, hn),
                                          1 if quick else 3)
                    row = {"size": size, "dtype": dname, "architecture": arch, "integrator": integ, "batch": batch,
                           "fast_Mss": batch * steps_fast / t_fast / 1e6,
                           "states_Mss": batch * steps_fast / t_states / 1e6,
                           "full_newton_Mss": None if t_full is None else batch * steps_fast / t_full / 1e6,
                           "torch_Mss": batch * steps_naive / t_torch / 1e6,
                           "naive_Mss": None if t_naive is None else batch * steps_naive / t_naive / 1e6,
                           "naive": mode}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    return rows


def _train_step_factory(model: DynamicsModel, batch: int, window: int,
                        seed: int = 0) -> Callable[[str], list[torch.Tensor]]:
    """One Adam step of training's own rollout loss on random windows; ``engine`` as `TrainConfig.engine`."""
    rng = np.random.default_rng(seed)
    dof = model.dof
    kw = {"dtype": model.dtype, "device": model.device}
    win = Windows(x0=torch.as_tensor(0.5 * rng.standard_normal((batch, 2 * dof)), **kw),
                  target=torch.as_tensor(0.5 * rng.standard_normal((batch, window, 2 * dof)), **kw),
                  h=torch.full((batch, window), 0.05, **kw))
    opt = torch.optim.Adam(model.parameters(), lr=0.0)  # lr 0: every variant steps from the same weights

    def step(engine: str = "torch") -> list[torch.Tensor]:
        opt.zero_grad(set_to_none=True)
        _rollout_loss(model, win, engine=engine).backward()
        opt.step()
        # the output bias does not enter ∇H: autograd leaves its grad None, the adjoints give zeros
        return [torch.zeros_like(w) if w.grad is None else w.grad.detach().clone() for w in model.parameters()]

    return step


def _set_trunk_gradient(model: DynamicsModel, variant: str) -> None:
    """Route every trunk's ``value_and_grad`` to the variant under test."""
    for trunk in (m for m in model.modules() if isinstance(m, ScalarTrunk)):
        trunk.__dict__.pop("value_and_grad", None)
        if variant == "autograd":
            trunk.value_and_grad = trunk.value_and_grad_ops
        elif variant == "hessquik":
            def via_hessquik(u: torch.Tensor, t: Any = trunk) -> tuple[torch.Tensor, torch.Tensor]:
                f, df, _ = t.hessquik(u)
                return f[:, 0], df[:, :, 0]
            trunk.value_and_grad = via_hessquik


def bench_training(quick: bool) -> list[dict[str, Any]]:
    """One Adam step four ways: the compiled adjoint (training's default engine), the torch path
    with hinn's hand-written ∇H adjoint, autograd double-backprop through the same ops, hessQuik's
    gradient; weight gradients compared with double-backprop's."""
    rows = []
    reps = 3 if quick else 11
    for size in SIZES:
        for dname, dtype in DTYPES.items():
            for arch, integ in WORKLOADS:
                model = make_model(arch, integ, size, dtype).train()
                step = _train_step_factory(model, 256, 10)
                row: dict[str, Any] = {"size": size, "dtype": dname, "architecture": arch, "integrator": integ}
                grads = {}
                for variant in ("compiled", "fast", "autograd", "hessquik"):
                    _set_trunk_gradient(model, "fast" if variant == "compiled" else variant)
                    run = partial(step, "numba" if variant == "compiled" else "torch")
                    grads[variant] = run()
                    row[f"{variant}_ms"] = 1e3 * median_time(run, reps)
                _set_trunk_gradient(model, "fast")
                scale = max(float(g.abs().max()) for g in grads["autograd"])
                for variant in ("compiled", "fast", "hessquik"):
                    row[f"rel_grad_diff_{variant}"] = max(
                        float((a - b).abs().max()) for a, b in zip(grads[variant], grads["autograd"], strict=True)
                    ) / scale
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def bench_hessian(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for size in SIZES:
        for dname, dtype in DTYPES.items():
            model = make_model("hinn", "implicit_midpoint", size, dtype)
            f = model.field
            q0, p0 = initial_states(256, size)
            q, p = torch.as_tensor(q0, dtype=dtype), torch.as_tensor(p0, dtype=dtype)
            with torch.no_grad():
                ref = f.hessian_hessquik(q, p, forward_mode=True)
                ours = f.grad_and_hessian(q, p)[2]
            x = torch.cat([q, p], -1)

            def one(xi: torch.Tensor, f: Any = f, n: int = SIZES[size][0]) -> torch.Tensor:
                return f.hamiltonian(xi[None, :n], xi[None, n:])[0]

            func_hess = torch.func.vmap(torch.func.hessian(one))
            reps = 5 if quick else 21
            compiled_call = partial(fastpath.grad_and_hessian, model, q.numpy(), p.numpy())  # the model's dtype
            compiled = compiled_call()[2]
            row = {"size": size, "dtype": dname,
                   "compiled_ms": 1e3 * median_time(compiled_call, reps),
                   "fast_ms": 1e3 * median_time(partial(f.grad_and_hessian, q, p), reps),
                   "hessquik_forward_ms": 1e3 * median_time(partial(f.hessian_hessquik, q, p, forward_mode=True), reps),
                   "hessquik_backward_ms": 1e3 * median_time(partial(f.hessian_hessquik, q, p, forward_mode=False),
                                                             reps),
                   "torch_func_ms": 1e3 * median_time(partial(func_hess, x), reps),
                   "diff_compiled": max_diff(compiled.astype(np.float64), ref.double().numpy()),
                   "diff_fast": max_diff(ours.double().numpy(), ref.double().numpy()),
                   "diff_torch_func": max_diff(func_hess(x).detach().double().numpy(), ref.double().numpy())}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def bench_http(quick: bool) -> list[dict[str, Any]]:
    """``hinn serve`` on loopback with a trained d2w32 hinn model; sequential requests, one client."""
    rows = []
    with hinn_serve("perf", {"HINN_LOG_LEVEL": "WARNING"}) as server, \
            httpx.Client(base_url=server.url, timeout=120) as c:
        for _ in range(600):  # the server compiles/loads its kernels in the background at start
            if c.get("/ready").json().get("fast_path") in ("ready", "unavailable"):
                break
            time.sleep(0.5)
        ds = c.post("/datasets", json={"name": "perf", "system": "spring", "n_trajectories": 8, "t_end": 2.0,
                                       "dt": 0.1}).json()
        job = c.post("/train", json={"name": "perf-model", "dataset_id": ds["id"],
                                     "model": {"architecture": "hinn", "width": 32, "depth": 2},
                                     "training": {"epochs": 2, "lbfgs_iterations": 0}}).json()
        for _ in range(600):
            job = c.get(f"/jobs/{job['id']}").json()
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(0.5)
        assert job["status"] == "succeeded", job
        cases = [(1, 60 if quick else 300), (1024, 2 if quick else 10)]
        for n_ic, n_req in cases:
            q0, p0 = initial_states(n_ic, "d2w32")
            ics = [{"q": q.tolist(), "p": p.tolist()} for q, p in zip(q0, p0, strict=True)]
            for integ in ("implicit_midpoint", "leapfrog"):
                for fmt, accept in (("json", "application/json"), ("npz", "application/vnd.hinn.npz")):
                    body = {"model": "perf-model", "initial_conditions": ics, "t_end": STEPS * DT, "dt": DT,
                            "integrator": integ}
                    totals, rollouts, sizes = [], [], []
                    for i in range(n_req + 2):
                        t = time.perf_counter()
                        r = c.post("/predict", json=body, headers={"Accept": accept})
                        total = time.perf_counter() - t
                        r.raise_for_status()
                        if i < 2:
                            continue  # warm-up: model load, kernel compile
                        timing = dict(x.split(";dur=") for x in r.headers["server-timing"].split(", "))
                        totals.append(total)
                        rollouts.append(float(timing["rollout"]) / 1e3)
                        sizes.append(len(r.content))
                    tot = np.array(totals)
                    row = {"initial_conditions": n_ic, "steps": STEPS, "integrator": integ, "format": fmt,
                           "requests": n_req, "p50_ms": 1e3 * float(np.percentile(tot, 50)),
                           "p99_ms": 1e3 * float(np.percentile(tot, 99)),
                           "rollout_p50_ms": 1e3 * float(np.median(rollouts)),
                           "outside_share": float(np.median(1 - np.array(rollouts) / tot)),
                           "response_mb": float(np.median(sizes)) / 2**20}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
def _f(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _g(x: float | None) -> str:
    return "—" if x is None else f"{x:.1e}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.0f}×" if a / b >= 10 else f"{a / b:.1f}×"


def cpu_description() -> str:
    """The CPU the kernels were compiled for: LLVM's name for it (what numba targets), the vendor's
    model name and the widest vector extension — the day's shared machine is not always the same
    kind (a Zen 3 gave a third of a Zen 5's batch-4096 throughput on the compiled paths)."""
    import llvmlite.binding as llvm

    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        model = platform.processor()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2" if flags else "SIMD unknown"
    if vectorwidth.WIDE in active_features().split(","):
        simd += ", 512-bit vectors preferred"  # hinn_core.fastpath.vectorwidth
    return f"{llvm.get_host_cpu_name()} ({model or 'model unknown'}, {simd})"


def render(r: dict[str, Any]) -> str:
    out = ["# Performance", "",
           f"Measured by `{r['command']}` on {r['machine']}, {r.get('cpu', 'CPU not recorded')}; "
           f"{r['cpus']} CPUs, load average {r['load']:.1f} at start; {r['date']}; "
           f"torch {r['torch']}, numba {r['numba']}, scipy {r['scipy']}. "
           "Medians of repeated runs, one torch thread. Ratios are against hinn's compiled path "
           "(the one `hinn_core.predict` and `POST /predict` take); *diff* is the max abs difference of the "
           "trajectory from the hessQuik loop's.", "",
           "## The paths", "",
           "- **hinn (prediction)** — `hinn_core.fastpath`: one numba-compiled call runs the whole rollout "
           "(every integrator; implicit stages by simplified Newton: the hand-derived Jacobian is kept across "
           "iterations and steps while each iteration shrinks the correction ≥ 1000× and re-evaluated "
           "otherwise, with a small dense solve; same root and stopping test as the torch path's full "
           "Newton), batched over initial conditions in cache-sized blocks, threads for large batches. "
           "Weights are packed once per model version. No Python, torch, hessQuik or autograd inside the loop. "
           "`hinn_core.predict` takes it whenever the model is on the CPU; the torch path is the reference "
           "and the fallback (CUDA, custom integrators).",
           "- **torch path** — `DynamicsModel.rollout`: the integrator's Python loop over hinn's hand-written "
           "gradient/Hessian sweeps in torch (what training differentiates through).",
           "- **hessQuik loop / autograd loop** — the same loop calling hessQuik's network gradient "
           "(Hessian for Newton) or `torch.autograd.grad` of H at every stage: the naive implementation.",
           "- **scipy RK45** — the HNN reference's prediction path: `solve_ivp(RK45, rtol=1e-9)` (atol 1e-6, "
           "as the reference) with an autograd ∇H per evaluation, 1000 output points. Its cost depends on "
           "the dynamics, so the models are briefly trained on the HNN protocol's own systems (spring "
           "H = q² + p², ω = 2; two-body) and every rollout spans the protocol's t ∈ [0, 20] (dt = 0.02).",
           "- **hinn (training)** — `hinn_core.fastpath.rollout_sse`, training's default engine: one compiled "
           "call per block of samples runs the rollout, forms the loss's residuals, and sweeps back through "
           "each integrator's adjoint; every field evaluation on the way back is the adjoint of the ∇H sweep "
           "(the Hessian-vector product for the states, ∂/∂θ (c·∇H) for the weights). Leapfrog's "
           "consecutive kicks share one adjoint sweep; implicit midpoint solves the transposed Newton "
           "system with the last iteration's Jacobian, as the torch path's differentiable Newton step does.",
           "- **torch path (training)** — autograd through the integrator, with hinn's `_ValueAndGrad` (a "
           "hand-written adjoint of the gradient sweep) for ∇H; *double-backprop* records the same sweep "
           "op by op.",
           "", "The float64 agreement of the compiled path with the torch path is tested to ≤ 1e-10 for every "
           "architecture × activation × integrator (`tests/core/test_fastpath.py`); the training adjoints "
           "against autograd to round-off (`tests/core/test_compiled_training.py`).", "",
           "## Batch-1 latency, 1000-step rollout", "",
           "*full Newton*: hinn's kernel re-evaluating the Jacobian at every Newton iteration (as the torch "
           "path); *diff RK45* the scipy solution's max difference from the hessQuik loop's (both are "
           "accurate to ~1e-5 over t = 20).", "",
           "| size | dtype | model · integrator | hinn (ms) | full Newton | hessQuik loop | autograd loop "
           "| torch path | scipy RK45 (nfev) | diff fast | diff autograd | diff RK45 |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["latency"]:
        fast = x["fast_ms"]
        out.append(
            f"| {x['size']} | {x['dtype']} | {x['architecture']} · {x['integrator']} | {_f(fast)} "
            f"| {_f(x.get('full_newton_ms'))} ms ({_ratio(x.get('full_newton_ms'), fast)}) "
            f"| {_f(x['hessquik_ms'], 0)} ms ({_ratio(x['hessquik_ms'], fast)}) "
            f"| {_f(x.get('autograd_ms'), 0)} ms ({_ratio(x.get('autograd_ms'), fast)}) "
            f"| {_f(x['torch_ms'], 0)} ms ({_ratio(x['torch_ms'], fast)}) "
            f"| {_f(x.get('scipy_rk45_ms'), 0)} ms ({_ratio(x.get('scipy_rk45_ms'), fast)}, "
            f"{x.get('scipy_nfev', '—')}) "
            f"| {_g(x['diff_fast'])} | {_g(x.get('diff_autograd'))} | {_g(x.get('diff_scipy'))} |")
    adaptive_rows = [x for x in r["latency"] if x.get("rk45_ms") is not None]
    if adaptive_rows:
        out += ["", "## The reference's own solver, compiled: `integrator=\"rk45\"`", "",
                "hinn's adaptive Dormand–Prince (`hinn_core.adaptive`, compiled in `hinn_core.fastpath`) at the "
                "reference's tolerances (rtol 1e-9, atol 1e-6), H included, against scipy RK45 on the same network "
                "and output times: the same algorithm, so the same evaluations, and solutions round-off apart.", "",
                "| size | model | scipy RK45 (ms, nfev) | hinn rk45 (ms, nfev) | ratio | diff |",
                "|---|---|---|---|---|---|"]
        for x in adaptive_rows:
            out.append(f"| {x['size']} | {x['architecture']} | {_f(x['scipy_rk45_ms'], 0)} ({x['scipy_nfev']}) "
                       f"| {_f(x['rk45_ms'])} ({x['rk45_nfev']}) | {_ratio(x['scipy_rk45_ms'], x['rk45_ms'])} "
                       f"| {_g(x['diff_rk45_scipy'])} |")
    if r.get("adaptive"):
        out += ["", "## Batched `rk45` against fixed-step RK4: the cost of an accuracy", "",
                "t ∈ [0, 20] with 1000 output points (RK4: its own steps), H included, float64, two threads. `rk45`: "
                "lock-stepped blocks of 64 trajectories, each under its own step-size control. *error*: max distance "
                "of q, p from rk45 at rtol = atol = 1e-13, at 250 common times. scipy's default atol 1e-6, which the "
                "HNN reference keeps, binds before its rtol 1e-9 for states of order one.", "",
                "| size | batch | method | setting | time (ms) | evaluations per trajectory | error |",
                "|---|---|---|---|---|---|---|"]
        for x in r["adaptive"]:
            out.append(f"| {x['size']} | {x['batch']} | {x['method']} | {x['setting']} | {_f(x['ms'])} "
                       f"| {x['nfev']:.0f} | {_g(x['err'])} |")
    out += ["", "## Batched throughput (million state-steps per second)", "",
            "The naive loop is autograd per stage (hessQuik for implicit midpoint, which needs Hessians; not "
            "timed at batch 4096, where one hessQuik Hessian takes seconds).", "",
            "*hinn* computes q, p and the learned H at every state, as `POST /predict` does; *states only* the same "
            "kernel without H (`energy=False`), the work the naive loop does.", "",
            "| size | dtype | model · integrator | batch | hinn | states only | full Newton | torch path | naive loop "
            "| hinn / naive |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["throughput"]:
        out.append(f"| {x['size']} | {x['dtype']} | {x['architecture']} · {x['integrator']} | {x['batch']} "
                   f"| {_f(x['fast_Mss'])} | {_f(x.get('states_Mss'))} | {_f(x.get('full_newton_Mss'))} "
                   f"| {_f(x['torch_Mss'], 3)} "
                   f"| {_f(x['naive_Mss'], 4)} "
                   f"| {_ratio(x['fast_Mss'], x['naive_Mss'])} |")
    if r.get("roofline"):
        out += ["", "## Against this machine's GEMMs (batch 4096, 100 steps)", "",
                "`bench.perf.roofline`: multiply-adds per state-step counted from the model's layers (tested "
                "against torch's FLOP counter); *hinn's products* the rate the rollout sustains in them; the GEMM "
                "columns the best of numpy's BLAS and torch on all CPUs, at the rollout's own product shape and at "
                "a large square product. *Ceiling*: the throughput if the products ran at the best GEMM rate and the "
                "activations at the kernels' own measured speed, spread over the CPUs, and nothing else cost "
                "anything. The issue's batch-4096 targets are set against the leapfrog rows (its calibration "
                "workload). Each cell: with H / states only.", ""]
        out += roofline.render_rows(r["roofline"])
    out += ["", "## One Adam step (batch 256 × 10 rollout steps)", "",
            "*hinn* is training's default engine: the compiled adjoint of the whole rollout "
            "(`hinn_core.fastpath.autograd`, one reverse sweep per block of samples); *torch path* autograd "
            "through the integrator with hinn's hand-written ∇H adjoint (`_ValueAndGrad`, the `engine=\"torch\"` "
            "path); *double-backprop* autograd through the same ops recorded one by one; *hessQuik* its "
            "gradient. *rel diff* is the max weight-gradient difference from double-backprop relative to the "
            "largest gradient.", "",
            "| size | dtype | model · integrator | hinn (ms) | torch path | double-backprop | hessQuik | rel diff hinn "
            "| rel diff torch path | rel diff hessQuik |", "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["training"]:
        f = x["compiled_ms"]
        out.append(f"| {x['size']} | {x['dtype']} | {x['architecture']} · {x['integrator']} | {_f(f, 1)} "
                   f"| {_f(x['fast_ms'], 1)} ms ({_ratio(x['fast_ms'], f)}) "
                   f"| {_f(x['autograd_ms'], 1)} ms ({_ratio(x['autograd_ms'], f)}) "
                   f"| {_f(x['hessquik_ms'], 1)} ms ({_ratio(x['hessquik_ms'], f)}) "
                   f"| {_g(x['rel_grad_diff_compiled'])} | {_g(x['rel_grad_diff_fast'])} "
                   f"| {_g(x['rel_grad_diff_hessquik'])} |")
    out += ["", "## Gradient and Hessian at batch 256", "",
            "*hinn compiled*: `fastpath.grad_and_hessian`, the sweep implicit midpoint's Newton steps run inside "
            "the prediction kernel (one thread at this batch); *hinn torch path*: the field's hand-written "
            "`grad_and_hessian` in torch ops (the torch engine's, e.g. on CUDA). Ratios against the compiled one "
            "(against the torch path in runs from before it was timed).", "",
            "| size | dtype | hinn compiled (ms) | hinn torch path | hessQuik forward | hessQuik backward "
            "| torch.func vmap(hessian) | diff compiled | diff torch path | diff torch.func |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["hessian"]:
        f = x.get("compiled_ms") or x["fast_ms"]
        out.append(f"| {x['size']} | {x['dtype']} | {_f(x.get('compiled_ms'), 3)} "
                   f"| {_f(x['fast_ms'], 3)} ms ({_ratio(x['fast_ms'], f)}) "
                   f"| {_f(x['hessquik_forward_ms'], 2)} ms ({_ratio(x['hessquik_forward_ms'], f)}) "
                   f"| {_f(x['hessquik_backward_ms'], 2)} ms ({_ratio(x['hessquik_backward_ms'], f)}) "
                   f"| {_f(x['torch_func_ms'], 2)} ms ({_ratio(x['torch_func_ms'], f)}) "
                   f"| {_g(x.get('diff_compiled'))} | {_g(x['diff_fast'])} | {_g(x['diff_torch_func'])} |")
    if r.get("http"):
        out += ["", "## `POST /predict` over HTTP (d2w32 hinn model, loopback, one client)", "",
                "*outside* is the share of the request time not spent in the rollout (validation, model "
                "lookup, encoding, HTTP), from `Server-Timing`.", "",
                "| ICs × steps | integrator | format | requests | p50 (ms) | p99 (ms) | rollout p50 (ms) | outside "
                "| response (MiB) |", "|---|---|---|---|---|---|---|---|---|"]
        for x in r["http"]:
            out.append(f"| {x['initial_conditions']} × {x['steps']} | {x['integrator']} | {x['format']} "
                       f"| {x['requests']} | {_f(x['p50_ms'], 1)} | {_f(x['p99_ms'], 1)} "
                       f"| {_f(x['rollout_p50_ms'], 1)} | {100 * x['outside_share']:.0f}% "
                       f"| {_f(x['response_mb'], 3)} |")
    notes = Path(__file__).with_name("notes.md")
    if notes.is_file():
        out += ["", notes.read_text().rstrip()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not for the docs)")
    ap.add_argument("--no-http", action="store_true", help="skip the HTTP section")
    ap.add_argument("--sections", default="latency,adaptive,throughput,roofline,training,hessian,http")
    ap.add_argument("--out", default=None, help="markdown report (default docs/performance.md; none with --quick)")
    ap.add_argument("--json", default=None, help="also write the raw figures here")
    ap.add_argument("--render", default=None, metavar="JSON",
                    help="only re-render the report from a run's raw figures (after editing notes.md)")
    args = ap.parse_args(argv)
    if args.render:
        text = render(json.loads(Path(args.render).read_text()))
        Path(args.out or ROOT / "docs" / "performance.md").write_text(text)
        return 0
    torch.set_num_threads(1)
    sections = set(args.sections.split(","))
    if args.no_http:
        sections.discard("http")
    import numba

    results: dict[str, Any] = {
        "command": "python -m bench.perf.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": platform.processor() or platform.machine(), "cpu": cpu_description(),
        "cpus": len(os.sched_getaffinity(0)),
        "load": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
        "numba": numba.__version__, "scipy": scipy.__version__}
    for name, fn in (("latency", bench_latency), ("adaptive", bench_adaptive), ("throughput", bench_throughput),
                     ("roofline", roofline.bench_roofline),
                     ("training", bench_training), ("hessian", bench_hessian), ("http", bench_http)):
        results[name] = fn(args.quick) if name in sections else []
    text = render(results)
    print(text)
    out = args.out or (None if args.quick else str(ROOT / "docs" / "performance.md"))
    if out:
        Path(out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
