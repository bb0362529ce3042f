"""The ``hinn`` command line: local training and prediction, and the service's entry points.

``hinn train`` / ``hinn predict`` / ``hinn systems`` use `hinn_core` only (no server, no database);
``hinn serve`` / ``hinn worker`` / ``hinn db upgrade`` run the service. Heavy modules are imported
inside each command so that ``hinn --help`` answers instantly.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from app import cli_types

EXIT_USAGE = 2
EXIT_ERROR = 1
#: `hinn predict`'s default bound on the steps of one rollout
MAX_STEPS = 10_000_000


#: the simulated-data options (with --system; their flags are --n-trajectories, ...) and their
#: defaults: setting one with --data is an error
_SIMULATION_DEFAULTS = {"param": [], "n_trajectories": 50, "t_end": 3.0, "dt": 0.1, "dt_jitter": 0.0,
                        "noise_std": 0.0, "data_seed": 0}


def _add_train(sub: argparse._SubParsersAction) -> None:
    from hinn_core.data import MIN_TRAJECTORIES_TO_HOLD_OUT
    from hinn_core.integrators import INTEGRATORS
    from hinn_core.models import ARCHITECTURES, ModelSpec
    from hinn_core.networks import ACTIVATIONS
    from hinn_core.systems import SYSTEMS

    p = sub.add_parser("train", help="train a model locally and write a model file",
                       description="Train on a built-in system's simulated data or on a data file "
                                   "(.json/.csv/.npz), evaluate on a held-out split, write a model file.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--system", choices=sorted(SYSTEMS), help="simulate training data from this system")
    src.add_argument("--data", type=Path, help="trajectory file (.json, .csv or .npz)")
    p.add_argument("--out", type=Path, required=True, help="model file to write (e.g. spring.model)")
    p.add_argument("--name", help="model name stored in the file (default: the file's stem)")
    g = p.add_argument_group("simulated data (with --system)")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="system parameter, repeatable (e.g. --param m=2)")
    g.add_argument("--n-trajectories", type=cli_types.positive_int, default=_SIMULATION_DEFAULTS["n_trajectories"])
    g.add_argument("--t-end", type=float, default=_SIMULATION_DEFAULTS["t_end"])
    g.add_argument("--dt", type=float, default=_SIMULATION_DEFAULTS["dt"])
    g.add_argument("--dt-jitter", type=float, default=_SIMULATION_DEFAULTS["dt_jitter"],
                   help="in [0, 1): > 0 gives variable time steps")
    g.add_argument("--noise-std", type=float, default=_SIMULATION_DEFAULTS["noise_std"],
                   help="observation noise on q and p")
    g.add_argument("--data-seed", type=cli_types.seed, default=_SIMULATION_DEFAULTS["data_seed"])
    m = p.add_argument_group("model")
    spec = ModelSpec()  # the defaults (the science benchmark's best recipe)
    m.add_argument("--architecture", choices=sorted(ARCHITECTURES), default=spec.architecture,
                   help="default: %(default)s; use 'hinn' when H couples q and p")
    m.add_argument("--integrator", choices=sorted(INTEGRATORS), default=None,
                   help="default: the architecture's own (hinn: implicit_midpoint, hinn-separable: leapfrog)")
    m.add_argument("--width", type=cli_types.positive_int, default=spec.width)
    m.add_argument("--depth", type=cli_types.positive_int, default=spec.depth)
    m.add_argument("--activation", choices=sorted(ACTIVATIONS), default=None,
                   help="default: the architecture's own (hinn-separable, mlp: antitanh; hinn, hnn: tanh)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=cli_types.positive_int, default=None, help="Adam epochs")
    t.add_argument("--lbfgs-iterations", type=cli_types.non_negative_int, default=None,
                   help="L-BFGS polish iterations (0: none)")
    t.add_argument("--learning-rate", type=float, default=None)
    t.add_argument("--batch-size", type=cli_types.positive_int, default=None)
    t.add_argument("--rollout-steps", type=cli_types.positive_int, default=None)
    t.add_argument("--seed", type=cli_types.seed, default=0)
    t.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    t.add_argument("--dtype", choices=["auto", "float64", "float32"], default="auto",
                   help="auto: float32 on CUDA, float64 on CPU")
    t.add_argument("--initial-state", choices=["observed", "learned"], default=None,
                   help="'learned' fits each trajectory's start with the weights (noisy data)")
    t.add_argument("--engine", choices=["auto", "numba", "torch"], default=None,
                   help="how the loss is differentiated: numba = compiled adjoint (CPU), torch = autograd")
    t.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of the trajectories held out for evaluation, in [0, 1); with 0, or with fewer than "
                        f"{MIN_TRAJECTORIES_TO_HOLD_OUT} trajectories, none is (the metrics are then on the "
                        "training data)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train, command_parser=p)


def _parse_params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"hinn train: error: --param expects KEY=VALUE, got {item!r}")
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


def _check_writable(path: Path, flag: str) -> None:
    """Refuse an output path that cannot be written, before the work that produces it."""
    if path.is_dir():
        raise SystemExit(f"hinn: error: {flag} {path} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise SystemExit(f"hinn: error: {flag} {path}: the folder {parent} does not exist")


def cmd_train(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from hinn_core import ModelSpec, TrainConfig, build_metadata, evaluate, generate_dataset, save_model, train
    from hinn_core.dataio import load_dataset
    from hinn_core.errors import DataError

    _check_writable(args.out, "--out")  # before training, not after it
    if args.data is not None:
        given = ["--" + dest.replace("_", "-") for dest, default in _SIMULATION_DEFAULTS.items()
                 if getattr(args, dest) != default]
        if given:
            raise SystemExit(f"hinn train: error: {', '.join(given)} only apply with --system (simulated data), "
                             "not with --data")
    if args.system:
        data = generate_dataset(args.system, args.n_trajectories, args.t_end, args.dt,
                                dt_jitter=args.dt_jitter, noise_std=args.noise_std, seed=args.data_seed,
                                parameters=_parse_params(args.param))
        lineage: dict[str, Any] = {"dataset": data.source}
    else:
        try:
            data = load_dataset(args.data)
        except DataError as exc:  # the file's own problems name their row or key; the path names the flag
            if exc.field != "path":
                raise
            raise SystemExit(f"hinn train: error: --data {args.data}: {exc.problem}") from None
        digest = hashlib.sha256(args.data.read_bytes()).hexdigest()
        lineage = {"dataset": {**data.source, "kind": "file", "file": args.data.name, "sha256": digest}}
    train_set, test_set, held_out = data.holdout(args.test_fraction, seed=args.seed)
    spec = ModelSpec(architecture=args.architecture, dof=data.dof, width=args.width, depth=args.depth,
                     activation=args.activation, integrator=args.integrator)
    overrides = {k: getattr(args, k) for k in ("epochs", "lbfgs_iterations", "learning_rate", "batch_size",
                                               "rollout_steps", "initial_state", "engine")
                 if getattr(args, k) is not None}
    config = TrainConfig(seed=args.seed, device=args.device, dtype=args.dtype, **overrides)
    torch.manual_seed(args.seed)

    bar = None if args.quiet else tqdm(total=None, unit="epoch", file=sys.stderr, dynamic_ncols=True)

    def progress(rec: dict[str, Any]) -> None:
        if bar is None:
            return
        bar.total = rec["epochs"]
        bar.update(1)
        val = "—" if rec["val_loss"] is None else f"{rec['val_loss']:.3g}"  # nothing held out: no val loss
        bar.set_postfix(phase=rec["phase"], train=f"{rec['train_loss']:.3g}", val=val)

    try:
        result = train(train_set, spec, config, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    metrics = {**evaluate(result.model, test_set), "held_out": held_out}
    name = args.name or args.out.stem
    meta = build_metadata(result.model, name=name,
                          training={"config": config.to_dict(), **result.summary(), "history": result.history},
                          metrics=metrics, lineage=lineage)
    digest = save_model(result.model, args.out, meta)
    summary = {"model_file": str(args.out), "sha256": digest, "name": name, "spec": spec.to_dict(),
               "training": result.summary(), "metrics": metrics}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        lh = metrics.get("long_horizon", {})
        print(f"wrote {args.out} ({spec.architecture}, {spec.integrator}, dof {spec.dof}) "
              f"in {result.seconds:.1f} s, best epoch {result.best_epoch}")
        what = "test" if held_out else "training-data"  # nothing held out: the fit, not generalisation
        print(f"  {what} rollout MSE {metrics['rollout_mse']:.3e}  ({metrics['n_test_trajectories']} trajectories"
              f"{'' if held_out else ', none held out'})")
        if lh:
            print(f"  {lh['t_end'] / (data.time_stats()['t_max'] or 1):.0f}x horizon state MSE "
                  f"{lh['state_mse']:.3e}, true-energy rel. error max {lh['energy_rel_error_max']:.3e}")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    from hinn_core.integrators import INTEGRATORS

    p = sub.add_parser("predict", help="roll a model file out from initial conditions",
                       description="Prints the same JSON as POST /predict (or CSV with --format csv).")
    p.add_argument("model", type=Path, help="model file written by 'hinn train' or downloaded from the service")
    p.add_argument("--q", type=float, nargs="+", help="initial positions (dof values)")
    p.add_argument("--p", type=float, nargs="+", help="initial momenta (dof values)")
    p.add_argument("--initial-conditions", type=Path,
                   help='JSON file: [{"q": [...], "p": [...]}, ...] (instead of --q/--p)')
    p.add_argument("--t-end", type=float)
    p.add_argument("--dt", type=float)
    p.add_argument("--times", type=float, nargs="+", help="explicit output times (variable steps)")
    p.add_argument("--integrator", choices=[*sorted(INTEGRATORS), "rk45"],
                   help="override the model's integrator; rk45 = adaptive Dormand-Prince (--rtol/--atol)")
    p.add_argument("--rtol", type=float, default=None,
                   help="rk45's relative tolerance (default 1e-9; 1e-4 for float32 models)")
    p.add_argument("--atol", type=float, default=None,
                   help="rk45's absolute tolerance (default 1e-9; 1e-6 for float32 models)")
    p.add_argument("--max-steps", type=cli_types.positive_int, default=MAX_STEPS,
                   help=f"refuse longer rollouts (default {MAX_STEPS:,}: 80 MB per coordinate and trajectory)")
    p.add_argument("--format", choices=["json", "csv"], default="json")
    p.add_argument("--output", type=Path, help="write to this file instead of stdout")
    p.add_argument("--png", type=Path, help="also write a plot: trajectories, phase portrait, energy")
    p.set_defaults(func=cmd_predict, command_parser=p)


def prediction_csv(times: Any, q: Any, p: Any, H: Any, H_true: Any) -> str:
    """Long CSV: one row per (trajectory, time)."""
    dof = q.shape[2]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["trajectory", "t", *[f"q{j}" for j in range(dof)], *[f"p{j}" for j in range(dof)], "H"]
    if H_true is not None:
        header.append("H_true")
    w.writerow(header)
    for i in range(q.shape[0]):
        for k, t in enumerate(times):
            row = [i, repr(float(t)), *map(repr, q[i, k].tolist()), *map(repr, p[i, k].tolist()),
                   repr(float(H[i, k])) if H is not None else ""]
            if H_true is not None:
                row.append(repr(float(H_true[i, k])))
            w.writerow(row)
    return buf.getvalue()


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from hinn_core import load_model, make_system, make_time_grid, predict
    from hinn_core.plotting import prediction_png
    from hinn_core.rollout import check_times

    for path, flag in ((args.output, "--output"), (args.png, "--png")):
        if path is not None:
            _check_writable(path, flag)
    if args.initial_conditions and (args.q is not None or args.p is not None):
        raise SystemExit("hinn predict: error: give either --q/--p or --initial-conditions, not both")
    if args.initial_conditions:
        try:
            items = json.loads(args.initial_conditions.read_text())
        except json.JSONDecodeError as exc:
            raise SystemExit(f"hinn predict: error: --initial-conditions {args.initial_conditions} is not valid "
                             f"JSON ({exc})") from None
        try:
            q0 = np.array([it["q"] for it in items], dtype=float)
            p0 = np.array([it["p"] for it in items], dtype=float)
        except (KeyError, TypeError, ValueError):
            raise SystemExit("hinn predict: error: --initial-conditions must hold "
                             '[{"q": [...], "p": [...]}, ...]') from None
    elif args.q is not None and args.p is not None:
        q0, p0 = np.array(args.q), np.array(args.p)
    else:
        raise SystemExit("hinn predict: error: give --q and --p, or --initial-conditions FILE")
    if args.times is not None:
        if args.t_end is not None or args.dt is not None:
            raise SystemExit("hinn predict: error: give either --times or --t-end/--dt, not both")
        times = check_times(args.times, max_steps=args.max_steps)
    elif args.t_end is not None and args.dt is not None:
        times = make_time_grid(args.t_end, args.dt, max_steps=args.max_steps)
    else:
        raise SystemExit("hinn predict: error: give --t-end and --dt, or --times")

    loaded = load_model(args.model)
    source = loaded.metadata.get("lineage", {}).get("dataset", {})
    system = make_system(source["system"], source.get("parameters")) if source.get("system") else None
    tolerances = None
    if args.rtol is not None or args.atol is not None:
        if args.integrator != "rk45":
            args.command_parser.error("argument --rtol/--atol: apply with --integrator rk45 only")
        from hinn_core.adaptive import tolerances_for

        tolerances = tolerances_for(loaded.model.dtype, args.rtol, args.atol)
    pred = predict(loaded.model, q0, p0, times, integrator=args.integrator, system=system, tolerances=tolerances)
    if args.format == "csv":
        text = prediction_csv(pred.times, pred.q, pred.p, pred.H, pred.H_true)
    else:
        doc = {"model": {"id": loaded.sha256, "name": loaded.name, "version": None},
               "integrator": args.integrator or loaded.model.spec.integrator,
               "times": pred.times.tolist(), "trajectories": pred.trajectories()}
        text = json.dumps(doc)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    if args.png:
        args.png.write_bytes(prediction_png(pred, title=f"{loaded.name} ({loaded.model.spec.architecture})"))
    return 0


def cmd_systems(args: argparse.Namespace) -> int:
    from hinn_core.systems import SYSTEMS

    print(json.dumps([cls().describe() for cls in SYSTEMS.values()], indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hinn", description="Learn Hamiltonian dynamics from trajectories.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_predict(sub)
    s = sub.add_parser("systems", help="list the built-in systems (JSON)")
    s.set_defaults(func=cmd_systems)
    try:
        from app.service_cli import add_service_commands
    except ImportError:  # the service modules are optional for the local commands
        pass
    else:
        add_service_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from hinn_core.errors import HinnError

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.given_flags = {token.split("=", 1)[0] for token in argv if token.startswith("--")}
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"hinn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `hinn systems | head`: the reader left; no traceback, SIGPIPE's status
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (HinnError, *_expected_errors()) as exc:
        if os.environ.get("HINN_DEBUG"):
            raise
        flag = _flag_of(exc, args)
        if flag is not None:  # a flag's value that hinn_core refused: argparse's usage error, exit 2
            args.command_parser.error(f"argument {flag}: {exc if flag == '--param' else exc.problem}")
        print(f"hinn {args.command}: error: {_one_line(exc)} (HINN_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_ERROR


def _flag_of(exc: BaseException, args: argparse.Namespace) -> str | None:
    """The flag the user gave whose value ``exc`` (a hinn_core error) refuses, derived from its field
    (``training.epochs`` → ``--epochs``, ``parameters.k`` → ``--param``); None for anything else."""
    field = getattr(exc, "field", None)
    parser = getattr(args, "command_parser", None)
    if not isinstance(field, str) or parser is None:
        return None
    name = "param" if field.startswith("parameters.") else field.rsplit(".", 1)[-1]
    flag = "--" + name.replace("_", "-")
    options = parser._option_string_actions  # argparse keeps no public map of its options

    def resolved(token: str) -> str | None:  # argparse accepts unique prefixes (--t-e for --t-end)
        if token in options:
            return token
        matches = [option for option in options if option.startswith(token)]
        return matches[0] if len(matches) == 1 else None

    if flag not in options or flag not in {resolved(t) for t in getattr(args, "given_flags", ())}:
        return None  # not a flag of this command, or one the user did not give (a default)
    return flag


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What bad input or a bad environment raises (files, settings, database URLs, migrations,
    memory): one line each, not a traceback; anything else is a bug and keeps its traceback."""
    errors: list[type[BaseException]] = [OSError, MemoryError]
    for module, name in (("pydantic", "ValidationError"), ("sqlalchemy.exc", "SQLAlchemyError"),
                         ("alembic.util", "CommandError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except ImportError:  # the service's dependencies are optional for the local commands
            pass
    return tuple(errors)


def _one_line(exc: BaseException) -> str:
    from hinn_core.errors import HinnError

    if isinstance(exc, HinnError):  # hinn_core's messages name the field themselves
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    if type(exc).__name__ == "ValidationError" and hasattr(exc, "errors"):  # pydantic: the settings
        return "; ".join(f"HINN_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    text = str(orig if orig is not None else exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
