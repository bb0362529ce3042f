"""Beat HNN on its own tasks: train hinn (defaults), HNN and the mlp baseline on the same data, score them.

    python -m bench.science.run --seeds 0 1 2 --extra-seeds 0 --jobs 2 --json docs/benchmarks.json
                      # all (28 min on 2 Zen 4 cores): docs/benchmarks.md + .json + docs/img/ (make bench-science)
    python -m bench.science.run --task spring    # one task (repeatable)
    python -m bench.science.run --quick          # smoke run (CI): spring, small budgets

Scores per task, on the protocol's 15 fresh initial conditions and horizon:
(a) the protocol's energy MSE, (b) state MSE against the true trajectories, (c) true-H energy MSE.
Each model is rolled out the way it was trained: hinn with its own integrator and mlp with RK4, both
at their training step (each learned that discrete map); HNN, a continuous-time field fitted to exact
derivatives, with RK4 at a quarter of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.science.tasks import PUBLISHED, Task, extra_tasks, hnn_tasks
from hinn_core import ModelSpec, TrainConfig, predict, train
from hinn_core.models import DynamicsModel

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Scores:
    protocol_energy_mse: float
    state_mse: float
    true_energy_mse: float
    train_seconds: float


def fine_times(times: np.ndarray, max_step: float) -> tuple[np.ndarray, np.ndarray]:
    """A grid refining every interval of ``times`` into equal sub-steps ≤ ``max_step``; and where ``times`` sit."""
    pieces, idx = [times[:1]], [0]
    for a, b in zip(times[:-1], times[1:], strict=True):
        n = max(1, math.ceil((b - a) / max_step - 1e-9))
        pieces.append(a + (b - a) * np.arange(1, n + 1) / n)
        idx.append(idx[-1] + n)
    return np.concatenate(pieces), np.array(idx)


def score(task: Task, model: DynamicsModel, seed: int, step: float, integrator: str | None = None) -> tuple[
        Scores, dict[str, np.ndarray]]:
    q0, p0 = task.eval_initial_conditions(seed)
    times = np.linspace(0.0, task.eval_t_end, task.eval_points)
    grid, at = fine_times(times, step)
    pred = predict(model, q0, p0, grid, integrator=integrator)
    q, p = pred.q[:, at], pred.p[:, at]
    q_ref, p_ref = task.system.solve(q0, p0, times)
    e_proto = (task.protocol_energy(q_ref, p_ref) - task.protocol_energy(q, p)) ** 2
    h = task.system.hamiltonian
    e_true = (np.asarray(h(q_ref, p_ref)) - np.asarray(h(q, p))) ** 2
    state = (((q - q_ref) ** 2).mean() + ((p - p_ref) ** 2).mean()) / 2
    traj = {"times": times, "q": q, "p": p, "q_ref": q_ref, "p_ref": p_ref,
            "E": np.asarray(h(q, p)), "E_ref": np.asarray(h(q_ref, p_ref))}
    return Scores(float(e_proto.mean()), float(state), float(e_true.mean()), math.nan), traj


def hinn_config(task: Task, n_windows: int, quick: bool) -> TrainConfig:
    """The hinn defaults, with the Adam budget expressed in optimiser steps for the big datasets."""
    cfg = TrainConfig()
    steps = 150 if quick else 600
    epochs = max(5, min(cfg.epochs, round(steps * cfg.batch_size / max(n_windows, 1))))
    noisy = task.noise_std > 0
    return TrainConfig(epochs=epochs, lbfgs_iterations=60 if quick else cfg.lbfgs_iterations,
                       initial_state="learned" if noisy else cfg.initial_state, **task.train_overrides)


def HNN_SPEC(dof: int) -> ModelSpec:  # noqa: N802 - a constant with a parameter
    """The protocol's network as closely as the hessQuik trunk allows: 200 wide, tanh, two hidden
    layers (d→200 tanh, one 200→200 tanh ResNet step, linear out), whatever hinn's defaults are."""
    return ModelSpec(architecture="hnn", dof=dof, width=200, depth=1, activation="tanh")


def hnn_config(task: Task, quick: bool) -> TrainConfig:
    """HNN's protocol: Adam lr 1e-3, no schedule; full batch 2000 steps (spring, pendulum, wd 1e-4),
    batch 200 × 10 000 steps (two-body), batch 600 × 10 000 steps (three-body, wd 1e-4)."""
    n_points = task.n_train * task.n_points
    batch, steps, wd = {"two-body": (200, 10_000, 0.0), "three-body": (600, 10_000, 1e-4)}.get(
        task.name.split("-variable")[0], (n_points, 2000, 1e-4))
    if quick:
        steps //= 4
    epochs = max(1, round(steps * batch / n_points))
    return TrainConfig(epochs=epochs, batch_size=batch, learning_rate=1e-3, lr_schedule="constant",
                       weight_decay=wd, lbfgs_iterations=0, val_fraction=0.0, patience=0)


def train_hnn(task: Task, seed: int, train_set: Any, quick: bool) -> DynamicsModel:
    """HNN as its protocol trains it: noisy input states, exact derivatives at the clean states."""
    clean_train, _ = task.data(seed, noise_std=0.0)  # same ICs and times, no noise
    dof = task.system.dof
    q, p = clean_train.states()[:, :dof], clean_train.states()[:, dof:]
    dq, dp = task.system.vector_field(q, p)
    return train(train_set, HNN_SPEC(dof), hnn_config(task, quick),
                 derivative_targets=(train_set.states(), np.concatenate([dq, dp], axis=1))).model


def run_task(task: Task, seed: int, quick: bool, methods: list[str], log: Any,
             hinn_spec: dict[str, Any] | None = None, hinn_train: dict[str, Any] | None = None) -> dict[str, Any]:
    from hinn_core.training import make_windows

    torch.manual_seed(seed)
    train_set, _ = task.data(seed)
    out: dict[str, Any] = {"task": task.name, "seed": seed, "scores": {}, "traj": {}}
    dt = task.dt
    for method in methods:
        t0 = time.perf_counter()
        if method == "hinn":
            spec = ModelSpec(dof=task.system.dof, **{**task.spec_overrides, **(hinn_spec or {})})
            cfg = hinn_config(task, len(make_windows(train_set, TrainConfig().rollout_steps)), quick)
            if hinn_train:
                cfg = dataclasses.replace(cfg, **hinn_train)
            model = train(train_set, spec, cfg).model
            step, integrator = dt, None
        elif method == "hnn":
            model = train_hnn(task, seed, train_set, quick)
            step, integrator = dt / 4, "rk4"
        else:  # mlp: the unconstrained field on hinn's trunk, trained like hinn through RK4 and rolled
            # out as trained (RK4 at the data step: the discrete map it learned, as hinn's rollouts are)
            hinn = ModelSpec(dof=task.system.dof, **{**task.spec_overrides, **(hinn_spec or {})})
            spec = ModelSpec(architecture="mlp", dof=hinn.dof, width=hinn.width, depth=hinn.depth,
                             activation=hinn.activation, resnet_step=hinn.resnet_step, integrator="rk4")
            cfg = hinn_config(task, len(make_windows(train_set, TrainConfig().rollout_steps)), quick)
            if hinn_train:
                cfg = dataclasses.replace(cfg, **hinn_train)
            model = train(train_set, spec, cfg).model
            step, integrator = dt, "rk4"
        seconds = time.perf_counter() - t0
        sc, traj = score(task, model, seed, step, integrator)
        sc.train_seconds = seconds
        out["scores"][method] = sc.__dict__
        out["traj"][method] = traj
        print(f"  {task.name:>22} seed {seed} {method:>5}: energy(protocol) {sc.protocol_energy_mse:.3e}  "
              f"state {sc.state_mse:.3e}  energy(true H) {sc.true_energy_mse:.3e}  [{seconds:.0f} s]",
              file=log, flush=True)
    return out


def _run_one(job: tuple[Any, ...]) -> dict[str, Any]:
    """One (task, seed) run; a top-level function so that worker processes can run it."""
    name, seed, quick, methods, hinn_spec, hinn_train = job
    torch.set_num_threads(1)
    task = {**hnn_tasks(), **extra_tasks()}[name]
    return run_task(task, seed, quick, methods, sys.stdout, hinn_spec, hinn_train)


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r["task"] for r in results):
        per = [r for r in results if r["task"] == name]
        row: dict[str, Any] = {"task": name, "seeds": len(per)}
        for method in per[0]["scores"]:
            for key in ("protocol_energy_mse", "state_mse", "true_energy_mse", "train_seconds"):
                row[f"{method}.{key}"] = _median([r["scores"][method][key] for r in per])
        base = name if name in PUBLISHED else None
        row["published_hnn_energy"] = PUBLISHED[base]["hnn"] if base else math.nan
        rows.append(row)
    return rows


def _fmt(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{x:.2e}"


def _ratio(a: float, b: float) -> str:
    return "—" if not (math.isfinite(a) and math.isfinite(b) and a > 0) else f"{b / a:.1f}×"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| task | seeds | hinn energy (protocol) | HNN energy (this run) | energy: HNN/hinn | HNN published "
            "| energy: published/hinn "
            "| hinn state | HNN state | mlp state | state: HNN/hinn | state: mlp/hinn | hinn true-H energy "
            "| HNN true-H energy | train s: hinn / HNN / mlp |\n" + "|---" * 15 + "|")
    lines = [head]
    for r in rows:
        g = r.get
        energy = g("hinn.protocol_energy_mse", math.nan)
        seconds = " / ".join("—" if not math.isfinite(v := g(f"{m}.train_seconds", math.nan)) else f"{v:.0f}"
                             for m in ("hinn", "hnn", "mlp"))
        lines.append("| " + " | ".join([
            r["task"], str(r["seeds"]), _fmt(energy), _fmt(g("hnn.protocol_energy_mse", math.nan)),
            _ratio(energy, g("hnn.protocol_energy_mse", math.nan)),
            _fmt(r["published_hnn_energy"]), _ratio(energy, r["published_hnn_energy"]),
            _fmt(g("hinn.state_mse", math.nan)), _fmt(g("hnn.state_mse", math.nan)), _fmt(g("mlp.state_mse", math.nan)),
            _ratio(g("hinn.state_mse", math.nan), g("hnn.state_mse", math.nan)),
            _ratio(g("hinn.state_mse", math.nan), g("mlp.state_mse", math.nan)),
            _fmt(g("hinn.true_energy_mse", math.nan)), _fmt(g("hnn.true_energy_mse", math.nan)),
            seconds]) + " |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4), layout="constrained")
    ax_q, ax_e = fig.subplots(1, 2)
    traj = result["traj"]
    ref = next(iter(traj.values()))
    t = ref["times"]
    ax_q.plot(t, ref["q_ref"][0, :, 0], "k-", lw=2, label="truth")
    ax_e.plot(t, ref["E_ref"][0], "k-", lw=2, label="truth")
    for method, tr in traj.items():
        ax_q.plot(t, tr["q"][0, :, 0], "--", label=method)
        ax_e.plot(t, tr["E"][0], "--", label=method)
    ax_q.set(xlabel="t", ylabel="q[0]", title=f"{result['task']}: trajectory (first eval IC)")
    ax_e.set(xlabel="t", ylabel="true H", title="true energy along each model's trajectory")
    ax_q.legend()
    ax_e.legend()
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = {**hnn_tasks(), **extra_tasks()}
    parser.add_argument("--task", action="append", choices=sorted(tasks), help="default: all")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds of the four HNN tasks (default: 0 1 2; --quick: 0)")
    parser.add_argument("--extra-seeds", type=int, nargs="+", default=None,
                        help="seeds of the other tasks (default: as --seeds)")
    parser.add_argument("--jobs", type=int, default=1, help="(task, seed) runs in parallel, one core each")
    parser.add_argument("--quick", action="store_true", help="spring only, small budgets (CI smoke test)")
    parser.add_argument("--methods", nargs="+", default=["hinn", "hnn", "mlp"])
    parser.add_argument("--hinn-spec", default="{}", help='JSON ModelSpec overrides for hinn, e.g. '
                        '\'{"architecture": "hinn-separable", "width": 16}\' (default: the service defaults)')
    parser.add_argument("--hinn-train", default="{}",
                        help="JSON TrainConfig overrides for hinn (and for mlp, trained with hinn's recipe)")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    parser.add_argument("--json", type=Path, default=None, help="write the summary rows as JSON here")
    parser.add_argument("--render", type=Path, default=None,
                        help="only re-write the report (--out or docs/benchmarks.md) from this --json file")
    args = parser.parse_args(argv)
    if args.render:
        render(args.render, args.out or ROOT / "docs" / "benchmarks.md")
        return 0
    torch.set_num_threads(1)
    names = args.task or (["spring"] if args.quick else list(tasks))
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    extra_seeds = args.extra_seeds if args.extra_seeds is not None else args.seeds
    runs = [(name, seed) for name in names
            for seed in (args.seeds if tasks[name].hnn_baseline == name else extra_seeds)]
    t0 = time.perf_counter()
    options = (args.quick, args.methods, json.loads(args.hinn_spec), json.loads(args.hinn_train))
    if args.jobs > 1:
        # longest first (the n-body tasks), so that the pool ends together
        order = sorted(runs, key=lambda r: -tasks[r[0]].system.dof * tasks[r[0]].n_train)
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = dict(zip(order, pool.map(_run_one, [(n, s, *options) for n, s in order]), strict=True))
        results = [done[r] for r in runs]
    else:
        results = [_run_one((name, seed, *options)) for name, seed in runs]
    rows = summarise(results)
    print(table(rows))
    seconds = time.perf_counter() - t0
    print(f"total {seconds:.0f} s")
    command = "python -m bench.science.run " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.json:
        runs_out = [{"task": r["task"], "seed": r["seed"], "scores": r["scores"]} for r in results]
        args.json.write_text(json.dumps({"command": command.strip(), "seconds": seconds, "rows": rows,
                                         "runs": runs_out}, indent=2))
    out = args.out if args.out else (None if args.quick else ROOT / "docs" / "benchmarks.md")
    if out is not None:
        img = out.parent / "img"
        img.mkdir(parents=True, exist_ok=True)
        for r in {r["task"]: r for r in reversed(results)}.values():  # each task's first seed
            plot(r, img / f"bench-{r['task']}.png")
        out.write_text(report(rows, command, seconds))
    return 0


def shortfalls(rows: list[dict[str, Any]]) -> list[str]:
    """Every comparison the issue asks hinn to win that it does not, in words."""
    out = []
    for r in rows:
        g = r.get
        e, pub = g("hinn.protocol_energy_mse", math.nan), r["published_hnn_energy"]
        if math.isfinite(pub) and not e < pub:
            out.append(f"{r['task']}: energy {e:.2e} does not beat HNN's published {pub:.2e}")
        ours = g("hnn.protocol_energy_mse", math.nan)
        if math.isfinite(ours) and not e < ours:
            out.append(f"{r['task']}: energy {e:.2e} does not beat HNN's {ours:.2e} on the same data")
        for base in ("hnn", "mlp"):
            b = g(f"{base}.state_mse", math.nan)
            if math.isfinite(b) and not g("hinn.state_mse", math.nan) < b:
                out.append(f"{r['task']}: state {g('hinn.state_mse', math.nan):.2e} does not beat {base}'s {b:.2e}")
    return out


def report(rows: list[dict[str, Any]], command: str, seconds: float) -> str:
    imgs = "\n".join(f"![{r['task']}](img/bench-{r['task']}.png)" for r in rows)
    missed = shortfalls(rows)
    misses = "\n".join(f"- {m}" for m in missed) if missed else "- none: hinn wins every comparison above."
    spec, cfg = ModelSpec(), TrainConfig()
    return f"""# Science benchmark: hinn vs HNN vs an unconstrained field

Produced by `{command.strip()}` in {seconds / 60:.0f} min on a 2-core CPU (float64), two runs at a time.
Medians over the seeds listed per task (the four HNN tasks: 3 seeds, as the protocol's seed spread
requires). "energy (protocol)" is Greydanus et al.'s metric on 15 fresh initial conditions and the
protocol's horizon (spring/pendulum score q² + p²); "state" is the MSE of (q, p) against the true
trajectories over the same rollouts; "true-H energy" scores the system's real energy. Ratios are
baseline ÷ hinn (> 1: hinn is better).

- **hinn**: the service defaults (`ModelSpec()`, `TrainConfig()`): `{spec.architecture}`, `{spec.integrator}`,
  `{spec.activation}` activation, width {spec.width}, depth {spec.depth}; {cfg.rollout_steps}-step windows,
  Adam then ≤ {cfg.lbfgs_iterations} L-BFGS iterations; on noisy data `initial_state="learned"` (each training
  trajectory's start is fitted with the weights: errors-in-variables). Its rollouts use its own
  integrator at the data step. `nonseparable` uses `architecture="hinn"` (its H couples q and p).
- **HNN**: the protocol's training exactly (exact derivatives at the clean states as targets, noisy
  inputs, Adam 1e-3, its step counts, batch sizes and weight decay) and its 200-wide tanh network
  with two hidden layers, built as a hessQuik trunk (d→200, one 200→200 ResNet step, linear out);
  rolled out with RK4 at a quarter of the data step.
- **mlp**: an unconstrained vector field on hinn's trunk (width, depth, activation), trained like
  hinn through RK4 at the data step (learned starts on noisy data) and rolled out as trained: RK4 at
  the data step.

Every method trains on the same observed trajectories (HNN, as its protocol has it, also gets the exact
derivatives at the clean states). Training budgets are each method's own, not equal: hinn and mlp the
same recipe (Adam steps, then L-BFGS), HNN its protocol's step counts; the last column gives the
seconds each took. "energy: HNN/hinn" compares with HNN trained here on the same data, "energy:
published/hinn" with the paper's figure.

{table(rows)}

## Where hinn falls short

{misses}

## Plots (first seed; trajectory of the first evaluation start, true energy along each model)

{imgs}
"""


def render(path: Path, out: Path) -> None:
    """Re-write the report from a ``--json`` file (no training; the plots stay as they are)."""
    data = json.loads(path.read_text())
    out.write_text(report(data["rows"], data["command"], data["seconds"]))


if __name__ == "__main__":
    raise SystemExit(main())
