"""The local CLI: `hinn train` writes a model file, `hinn predict` prints the /predict JSON."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from hinn_core import ModelSpec, generate_dataset, load_model
from hinn_core.dataio import save_dataset

TINY = ["--epochs", "3", "--lbfgs-iterations", "0", "--width", "8", "--quiet"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("cli") / "spring.model"
    assert main(["train", "--system", "spring", "--n-trajectories", "8", "--out", str(path), *TINY]) == 0
    return str(path)


def test_train_writes_a_loadable_model_with_metrics_and_lineage(model_file) -> None:
    loaded = load_model(model_file)
    assert loaded.name == "spring"
    defaults = ModelSpec()  # the CLI's defaults are the core's (the benchmark's recipe)
    assert loaded.model.spec.architecture == defaults.architecture == "hinn-separable"
    assert loaded.model.spec.integrator == "leapfrog" and loaded.model.spec.activation == defaults.activation
    assert loaded.metadata["lineage"]["dataset"]["system"] == "spring"
    assert loaded.metadata["metrics"]["n_test_trajectories"] == 2 and loaded.metadata["metrics"]["held_out"] is True
    assert loaded.metadata["training"]["config"]["epochs"] == 3


def test_train_without_quiet_shows_progress_with_epochs_and_losses_on_stderr(tmp_path, capsys) -> None:
    out = tmp_path / "loud.model"
    loud = [a for a in TINY if a != "--quiet"]
    assert main(["train", "--system", "spring", "--n-trajectories", "6", "--out", str(out), *loud]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "3/3" not in captured.out  # progress goes to stderr only
    final = captured.err.strip().split("\r")[-1]  # tqdm redraws one line; its last state stays
    history = load_model(out).metadata["training"]["history"]
    assert len(history) == 3
    assert re.search(r"\b3/3\b", final), final
    assert f"train={history[-1]['train_loss']:.3g}" in final and f"val={history[-1]['val_loss']:.3g}" in final
    assert "phase=adam" in final


def test_train_json_prints_metrics(tmp_path, capsys) -> None:
    out = tmp_path / "p.model"
    code = main(["train", "--system", "pendulum", "--n-trajectories", "6", "--architecture", "hinn-separable",
                 "--out", str(out), "--json", *TINY])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["spec"]["architecture"] == "hinn-separable" and summary["spec"]["integrator"] == "leapfrog"
    assert summary["metrics"]["rollout_mse"] >= 0 and "long_horizon" in summary["metrics"]


def test_train_from_a_variable_step_data_file(tmp_path) -> None:
    data = tmp_path / "lab.csv"
    save_dataset(generate_dataset("spring", 6, 1.0, 0.1, dt_jitter=0.4, seed=1), data)
    out = tmp_path / "lab.model"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 0
    lineage = load_model(out).metadata["lineage"]["dataset"]
    assert lineage["file"] == "lab.csv" and len(lineage["sha256"]) == 64


def test_train_with_a_bad_data_file_fails_with_the_field(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"trajectories": [{"t": [0.0, 0.2, 0.1], "q": [[0], [1], [2]], "p": [[0], [1], [2]]}]}))
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "x.model"), *TINY]) == 1
    err = capsys.readouterr().err
    assert "trajectories[0].t" in err and "strictly increasing" in err


def test_predict_prints_the_rest_contract(model_file, capsys) -> None:
    assert main(["predict", model_file, "--q", "0.5", "--p", "0.0", "--t-end", "1.0", "--dt", "0.1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"model", "times", "trajectories"}
    assert doc["model"]["name"] == "spring" and len(doc["model"]["id"]) == 64
    assert len(doc["times"]) == 11 and doc["times"][-1] == 1.0
    traj = doc["trajectories"][0]
    assert np.array(traj["q"]).shape == (11, 1) and np.array(traj["p"]).shape == (11, 1)
    assert len(traj["H"]) == 11 and traj["H_true"][0] == pytest.approx(0.125)


def test_predict_csv_with_variable_times_and_png(model_file, tmp_path, capsys) -> None:
    png = tmp_path / "plot.png"
    assert main(["predict", model_file, "--q", "0.5", "--p", "0.1", "--times", "0", "0.1", "0.35", "1.0",
                 "--format", "csv", "--png", str(png)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "trajectory,t,q0,p0,H,H_true" and len(lines) == 5
    assert lines[3].split(",")[1] == "0.35"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1500, 450)  # IHDR: the 15 × 4.5 in figure at 100 dpi


def test_predict_png_has_the_three_panels_with_the_prediction(model_file, tmp_path, capsys, monkeypatch) -> None:
    import matplotlib.image

    import hinn_core.plotting as plotting

    figures = []
    real_png = plotting._png

    def keep(fig):
        figures.append(fig)
        return real_png(fig)

    monkeypatch.setattr(plotting, "_png", keep)
    png = tmp_path / "plot.png"
    assert main(["predict", model_file, "--q", "0.5", "--p", "0.1", "--t-end", "1.0", "--dt", "0.1",
                 "--png", str(png)]) == 0
    doc = json.loads(capsys.readouterr().out)
    traj = doc["trajectories"][0]
    (fig,) = figures
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["trajectories (solid q, dashed p)", "phase portrait", "energy"]
    ax_t, ax_ph, ax_e = axes
    q, p = np.array(traj["q"])[:, 0], np.array(traj["p"])[:, 0]
    # trajectories: q and p over time; phase portrait: p against q; energy: learned and true H over time
    assert len(ax_t.lines) == 2
    np.testing.assert_allclose(ax_t.lines[0].get_xydata(), np.column_stack([doc["times"], q]))
    np.testing.assert_allclose(ax_t.lines[1].get_xydata(), np.column_stack([doc["times"], p]))
    (phase,) = ax_ph.lines
    np.testing.assert_allclose(phase.get_xydata(), np.column_stack([q, p]))
    assert [line.get_label() for line in ax_e.lines] == ["learned H", "true H"]
    np.testing.assert_allclose(ax_e.lines[0].get_ydata(), traj["H"])
    np.testing.assert_allclose(ax_e.lines[1].get_ydata(), traj["H_true"])
    # the file is that figure: every third of the image has drawn (non-white) pixels
    img = matplotlib.image.imread(str(png))
    assert img.shape[:2] == (450, 1500)
    for third in np.array_split(img[..., :3], 3, axis=1):
        assert (third < 0.5).mean() > 0.005


def test_predict_rejects_mixed_time_options(model_file) -> None:
    with pytest.raises(SystemExit, match="either --times or --t-end"):
        main(["predict", model_file, "--q", "1", "--p", "0", "--times", "0", "1", "--t-end", "2", "--dt", "0.1"])


def test_predict_adaptive_rk45_with_tolerances(model_file, capsys) -> None:
    args = ["predict", model_file, "--q", "0.5", "--p", "0.0", "--t-end", "1.0", "--dt", "0.1"]
    assert main([*args, "--integrator", "rk4"]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert main([*args, "--integrator", "rk45", "--rtol", "1e-10", "--atol", "1e-10"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["integrator"] == "rk45" and len(doc["times"]) == 11
    assert doc["trajectories"][0]["evaluations"] > 6 and "evaluations" not in fixed["trajectories"][0]
    q, q_fixed = np.array(doc["trajectories"][0]["q"]), np.array(fixed["trajectories"][0]["q"])
    assert np.abs(q - q_fixed).max() < 1e-4  # RK4 at dt 0.1 against an accurate solution
    for flag in ("--rtol", "--atol"):  # tolerances with a fixed-step integrator
        _usage_error(capsys, [*args, flag, "1e-6"], "argument --rtol/--atol: apply with --integrator rk45 only")


def test_predict_with_the_wrong_dimension_names_the_flag(model_file, tmp_path, capsys) -> None:
    _usage_error(capsys, ["predict", model_file, "--q", "1", "2", "--p", "0", "0", "--t-end", "1", "--dt", "0.1"],
                 "hinn predict: error: argument --q: ")
    ics = tmp_path / "ics.json"  # from a file, the flag --q was not given: hinn_core's field name, exit 1
    ics.write_text(json.dumps([{"q": [1, 2], "p": [0, 0]}]))
    _one_line_error(capsys, 1, main(["predict", model_file, "--initial-conditions", str(ics), "--t-end", "1",
                                     "--dt", "0.1"]), "initial_conditions.q: ")


def test_the_console_script_is_installed() -> None:
    # the script pip installed beside this interpreter (the venv's bin/ need not be on PATH)
    exe = shutil.which("hinn", path=str(Path(sys.executable).parent))
    assert exe is not None
    out = subprocess.run([exe, "systems"], capture_output=True, text=True, check=True, timeout=120).stdout
    names = {s["name"] for s in json.loads(out)}
    assert {"spring", "pendulum", "two-body", "three-body", "henon-heiles", "nonseparable"} <= names


def _one_line_error(capsys, status: int, got: int, *needles: str) -> str:
    """The command failed with ``status`` and one line on stderr naming what is wrong, no traceback."""
    err = capsys.readouterr().err
    assert got == status, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _usage_error(capsys, argv: list[str], *needles: str) -> None:
    """argparse's usage error (exit 2) for a bad flag value."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(n in err for n in needles), err


@pytest.mark.parametrize("flag", ["--seed", "--data-seed"])
def test_train_refuses_a_negative_seed_as_a_usage_error(tmp_path, capsys, flag: str) -> None:
    _usage_error(capsys, ["train", "--system", "spring", "--out", str(tmp_path / "m.model"), flag, "-1", *TINY],
                 flag, "[0, 9223372036854775807]")


def test_train_checks_its_output_path_before_training(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit, match="the folder .*nodir does not exist"):
        main(["train", "--system", "spring", "--out", str(tmp_path / "nodir" / "m.model"), *TINY])
    with pytest.raises(SystemExit, match="is a directory"):
        main(["train", "--system", "spring", "--out", str(tmp_path), *TINY])
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_train_refuses_simulation_flags_with_a_data_file(tmp_path) -> None:
    data = tmp_path / "d.npz"
    save_dataset(generate_dataset("spring", 4, 1.0, 0.1, seed=0), data)
    with pytest.raises(SystemExit, match="--param, --n-trajectories only apply with --system"):
        main(["train", "--data", str(data), "--out", str(tmp_path / "m.model"), "--n-trajectories", "9",
              "--param", "k=2", *TINY])


def test_predict_file_problems_are_one_line_errors(model_file, tmp_path, capsys) -> None:
    base = ["predict", model_file, "--t-end", "1", "--dt", "0.1"]
    _one_line_error(capsys, 1, main([*base, "--initial-conditions", str(tmp_path / "missing.json")]),
                    "missing.json", "No such file")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SystemExit, match="bad.json is not valid JSON"):
        main([*base, "--initial-conditions", str(bad)])
    with pytest.raises(SystemExit, match="either --q/--p or --initial-conditions"):
        main([*base, "--initial-conditions", str(bad), "--q", "1", "--p", "0"])
    for flag in ("--output", "--png"):
        with pytest.raises(SystemExit, match=f"{flag} .*the folder .*nodir does not exist"):
            main([*base, "--q", "1", "--p", "0", flag, str(tmp_path / "nodir" / "out")])
    assert capsys.readouterr().out == ""  # nothing printed before the refusal


def test_predict_refuses_more_steps_than_max_steps(model_file, capsys) -> None:
    """1e12 steps once asked numpy for 7 TiB; now a usage error naming the flag and the bound."""
    base = ["predict", model_file, "--q", "1", "--p", "0"]
    _usage_error(capsys, [*base, "--t-end", "1e9", "--dt", "1e-3"], "argument --dt: ", "10000000")
    _usage_error(capsys, [*base, "--t-end", "1", "--dt", "0.1", "--max-steps", "5"],
                 "hinn predict: error: argument --dt: t_end/dt gives 10 steps, more than the limit of 5")
    _usage_error(capsys, [*base, "--times", "0", "1", "2", "--max-steps", "1"],
                 "hinn predict: error: argument --times: has 2 steps, more than the limit of 1")


@pytest.mark.parametrize(("extra", "needle"), [
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
    (["--width", "-3"], "argument --width: must be an integer >= 1"),
    (["--lbfgs-iterations", "-1"], "argument --lbfgs-iterations: must be an integer >= 0"),
    (["--epochs", "2000000"], "argument --epochs: must be an integer in [1, 1000000], got 2000000"),
    (["--learning-rate", "nan"], "argument --learning-rate: must be a finite number > 0"),
    (["--dt-jitter", "1.5"], "argument --dt-jitter: must be in [0, 1), got 1.5"),
    (["--dt", "5"], "argument --dt: must be in (0, t_end - t_start = 3.0]"),
    (["--noise-std", "-1"], "argument --noise-std: must be a finite number >= 0"),
    (["--param", "k=abc"], "argument --param: parameters.k: must be a number, got 'abc'"),
    (["--test-fraction", "1"], "argument --test-fraction: must be in [0, 1), got 1.0"),
])
def test_train_flag_values_refused_by_hinn_core_are_usage_errors(tmp_path, capsys, extra: list, needle: str) -> None:
    """README: exit status 2 for a bad flag value, named as the flag — not 1 with hinn_core's field name."""
    out = tmp_path / "m.model"
    _usage_error(capsys, ["train", "--system", "spring", "--n-trajectories", "2", "--out", str(out), *TINY, *extra],
                 "hinn train: error: " + needle)
    assert not out.exists()


@pytest.mark.parametrize(("extra", "needle"), [
    (["--t-end", "nan", "--dt", "0.1"], "argument --t-end: must be a finite number > 0.0, got nan"),
    (["--t-end", "1", "--dt", "-0.1"], "argument --dt: must be a finite number > 0, got -0.1"),
    (["--times", "0", "1", "1"], "argument --times: must be strictly increasing"),
])
def test_predict_flag_values_refused_by_hinn_core_are_usage_errors(model_file, capsys, extra: list,
                                                                   needle: str) -> None:
    _usage_error(capsys, ["predict", model_file, "--q", "1", "--p", "0", *extra], "hinn predict: error: " + needle)


def test_a_default_is_not_blamed_as_a_flag_the_user_gave(tmp_path, capsys) -> None:
    """--t-end 0.05 makes the default --dt too long: hinn_core's field name and exit 1, not 'argument --dt'."""
    base = ["train", "--system", "spring", "--out", str(tmp_path / "m.model"), *TINY]
    _one_line_error(capsys, 1, main([*base, "--t-end", "0.05"]), "hinn train: error: dt: must be in (0, ")
    _usage_error(capsys, [*base, "--t-end", "0.05", "--dt", "0.1"], "argument --dt: must be in (0, ")
    _usage_error(capsys, [*base, "--dt-j", "1.5"], "argument --dt-jitter: ")  # argparse's prefixes resolve
    _usage_error(capsys, [*base, "--t-end=0.05", "--dt=0.1"], "argument --dt: ")


def test_train_names_a_missing_data_file_and_its_flag(tmp_path, capsys) -> None:
    missing = tmp_path / "missing.csv"
    with pytest.raises(SystemExit, match=f"hinn train: error: --data {re.escape(str(missing))}: cannot be read: "
                                         "No such file"):
        main(["train", "--data", str(missing), "--out", str(tmp_path / "m.model"), *TINY])


@pytest.mark.parametrize(("n", "fraction"), [(1, "0.2"), (8, "0")])
def test_train_holds_nothing_out_with_one_trajectory_or_test_fraction_0(tmp_path, capsys, n: int,
                                                                       fraction: str) -> None:
    """As the service does: too few trajectories (or --test-fraction 0) train on all and say so."""
    out = tmp_path / "m.model"
    assert main(["train", "--system", "spring", "--n-trajectories", str(n), "--test-fraction", fraction,
                 "--out", str(out), *TINY]) == 0
    assert "training-data rollout MSE" in capsys.readouterr().out
    metrics = load_model(out).metadata["metrics"]
    assert metrics["held_out"] is False and metrics["n_test_trajectories"] == n


def test_a_bad_fastpath_setting_is_one_line_naming_the_variable(model_file) -> None:
    """Read when the kernels are imported: once a traceback from int('abc')."""
    exe = shutil.which("hinn", path=str(Path(sys.executable).parent))
    for name in ("HINN_FASTPATH_THREADS", "HINN_FASTPATH_PARALLEL_MIN"):
        done = subprocess.run([exe, "predict", model_file, "--q", "1", "--p", "0", "--t-end", "0.2", "--dt", "0.1"],
                              capture_output=True, text=True, timeout=300, env={**os.environ, name: "abc"})
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip() == (f"hinn predict: error: {name}: must be an integer >= 1, got 'abc' "
                                       "(HINN_DEBUG=1 shows the traceback)")


def test_the_cli_seed_bound_is_the_cores() -> None:
    from app import cli_types
    from hinn_core.data import MAX_SEED

    assert cli_types.MAX_SEED == MAX_SEED


def test_a_closed_pipe_is_not_a_traceback() -> None:
    """`hinn systems | head -1`: the reader leaves early; hinn exits quietly with SIGPIPE's status."""
    code = ("import sys, os; from app.cli import main; r, w = os.pipe(); os.close(r); os.dup2(w, 1); "
            "sys.stdout = os.fdopen(1, 'w', buffering=1); sys.exit(main(['systems']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 141 and "Traceback" not in done.stderr, done.stderr
