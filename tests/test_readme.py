"""The README stays true: its Python example runs, its commands exist, CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_block(heading: str) -> str:
    section = README.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading}"
    return match.group(1)


def test_the_python_api_example_runs(tmp_path, monkeypatch) -> None:
    code = _python_block("## The Python API")
    # the same code with a budget fit for a test (the README's numbers train for real)
    small = code.replace("n_trajectories=50", "n_trajectories=8").replace(
        "TrainConfig(epochs=100)", "TrainConfig(epochs=2, lbfgs_iterations=0)")
    assert small != code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"print": lambda *a, **k: None}
    exec(compile(small, "README.md", "exec"), namespace)
    assert (tmp_path / "pendulum.model").is_file()
    pred = namespace["pred"]
    assert pred.q.shape == (1, 201, 1) and pred.p.shape == (1, 201, 1) and pred.H.shape == (1, 201)
    assert set(namespace["metrics"]) >= {"rollout_mse", "long_horizon"}


def test_the_two_commands_exist_and_ci_runs_the_test_command() -> None:
    assert "make serve" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^serve:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "torch==2.13.0" in makefile
    # torch is installed before the project so pip never resolves torch itself
    assert makefile.index("torch==2.13.0") < makefile.index("-e '.[dev]'")
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


@pytest.mark.parametrize("command", ["train", "predict", "systems", "serve", "worker", "db"])
def test_every_cli_command_the_readme_names_exists(command) -> None:
    from app.cli import build_parser

    assert f"hinn {command}" in README
    argv = [command, "--help"] if command != "db" else ["db", "upgrade", "--help"]
    with pytest.raises(SystemExit) as info:  # argparse exits 0 after printing help for a known command
        build_parser().parse_args(argv)
    assert info.value.code == 0
