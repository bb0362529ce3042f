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


def _row(task: str, hinn: float, hnn: float, mlp: float, energy: float, published: float) -> dict:
    return {"task": task, "seeds": 3, "hinn.protocol_energy_mse": energy, "hinn.state_mse": hinn,
            "hnn.state_mse": hnn, "mlp.state_mse": mlp, "published_hnn_energy": published,
            "hinn.train_seconds": 1.0}


def test_the_report_lists_every_comparison_hinn_loses(tmp_path) -> None:
    from bench.science.run import render, shortfalls

    rows = [_row("spring", 1e-2, 0.5, 5e-3, 1e-4, 3.8e-4),       # loses state to mlp
            _row("pendulum", 1e-3, 0.2, 0.3, 5e-2, 2.5e-2),      # loses energy to the published HNN
            _row("three-body", 1e-4, 1e-2, 1e-2, 1e-4, 4e-2)]    # wins everything
    missed = shortfalls(rows)
    assert len(missed) == 2
    assert "spring: state 1.00e-02 does not beat mlp's 5.00e-03" in missed
    assert any(m.startswith("pendulum: energy") for m in missed)
    src = tmp_path / "rows.json"
    src.write_text(json.dumps({"command": "python -m bench.science.run", "seconds": 60.0, "rows": rows}))
    render(src, tmp_path / "b.md")
    text = (tmp_path / "b.md").read_text()
    assert "| three-body | 3 |" in text and "does not beat mlp" in text and "img/bench-pendulum.png" in text
