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
    (row,) = json.loads(out.read_text())
    assert row["task"] == "spring"
    assert row["hinn.state_mse"] < row["hnn.state_mse"]
    assert row["hinn.state_mse"] < 0.1 and row["hinn.protocol_energy_mse"] < 1e-2
