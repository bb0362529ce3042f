"""The local CLI: `hinn train` writes a model file, `hinn predict` prints the /predict JSON."""

from __future__ import annotations

import json
import shutil
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
    assert loaded.metadata["metrics"]["n_test_trajectories"] == 2
    assert loaded.metadata["training"]["config"]["epochs"] == 3


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
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_predict_rejects_mixed_time_options(model_file) -> None:
    with pytest.raises(SystemExit, match="either --times or --t-end"):
        main(["predict", model_file, "--q", "1", "--p", "0", "--times", "0", "1", "--t-end", "2", "--dt", "0.1"])


def test_predict_with_the_wrong_dimension_names_the_field(model_file, capsys) -> None:
    assert main(["predict", model_file, "--q", "1", "2", "--p", "0", "0", "--t-end", "1", "--dt", "0.1"]) == 1
    assert "initial_conditions.q" in capsys.readouterr().err


def test_the_console_script_is_installed() -> None:
    # the script pip installed beside this interpreter (the venv's bin/ need not be on PATH)
    exe = shutil.which("hinn", path=str(Path(sys.executable).parent))
    assert exe is not None
    out = subprocess.run([exe, "systems"], capture_output=True, text=True, check=True, timeout=120).stdout
    names = {s["name"] for s in json.loads(out)}
    assert {"spring", "pendulum", "two-body", "three-body", "henon-heiles", "nonseparable"} <= names
