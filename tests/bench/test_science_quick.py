"""CI smoke run of the science benchmark: the quick spring task, hinn ahead of HNN on state error."""

from __future__ import annotations

import json

import pytest

from bench.science.run import fine_times, main


def test_fine_times_refines_every_interval_and_keeps_the_grid() -> None:
    import numpy as np

    times = np.array([0.0, 0.25, 1.0])
    grid, at = fine_times(times, 0.1)
    np.testing.assert_allclose(grid[at], times)
    assert np.diff(grid).max() <= 0.1 + 1e-12 and len(grid) == 1 + 3 + 8


@pytest.mark.slow
def test_quick_benchmark_ranks_hinn_ahead_of_hnn_on_spring_state_error(tmp_path) -> None:
    out = tmp_path / "rows.json"
    assert main(["--quick", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["task"] == "spring"
    assert row["hinn.state_mse"] < row["hnn.state_mse"]
    assert row["hinn.state_mse"] < 0.1 and row["hinn.protocol_energy_mse"] < 1e-2


def _row(task: str, hinn: float, hnn: float, mlp: float, energy: float, published: float,
         hnn_energy: float = 1.0) -> dict:
    return {"task": task, "seeds": 3, "hinn.protocol_energy_mse": energy, "hinn.state_mse": hinn,
            "hnn.state_mse": hnn, "mlp.state_mse": mlp, "published_hnn_energy": published,
            "hnn.protocol_energy_mse": hnn_energy, "hinn.train_seconds": 12.0, "hnn.train_seconds": 34.0}


def test_the_report_lists_every_comparison_hinn_loses(tmp_path) -> None:
    from bench.science.run import render, shortfalls

    rows = [_row("spring", 1e-2, 0.5, 5e-3, 1e-4, 3.8e-4),       # loses state to mlp
            _row("pendulum", 1e-3, 0.2, 0.3, 5e-2, 2.5e-2),      # loses energy to the published HNN
            _row("two-body", 1e-3, 0.2, 0.3, 5e-5, 1e-4, 2e-5),  # loses energy to HNN on the same data
            _row("three-body", 1e-4, 1e-2, 1e-2, 1e-4, 4e-2)]    # wins everything
    missed = shortfalls(rows)
    assert len(missed) == 3
    assert "spring: state 1.00e-02 does not beat mlp's 5.00e-03" in missed
    assert any(m.startswith("pendulum: energy") for m in missed)
    assert "two-body: energy 5.00e-05 does not beat HNN's 2.00e-05 on the same data" in missed
    src = tmp_path / "rows.json"
    src.write_text(json.dumps({"command": "python -m bench.science.run", "seconds": 60.0, "rows": rows}))
    render(src, tmp_path / "b.md")
    text = (tmp_path / "b.md").read_text()
    assert "| three-body | 3 |" in text and "does not beat mlp" in text and "img/bench-pendulum.png" in text
    header, rule, *lines = [line for line in text.splitlines() if line.startswith("|")]
    assert header.count("|") == rule.count("|") == lines[0].count("|")  # one cell per column
    assert "| 10000.0× | 3.80e-04 | 3.8× |" in lines[0]  # energy: HNN/hinn, published/hinn
    assert lines[0].endswith("| 12 / 34 / — |")  # train seconds: hinn / HNN / mlp (no mlp run here)
