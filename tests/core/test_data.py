"""Trajectory validation, dataset generation and splits (hinn_core.data)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hinn_core.data import MIN_TRAJECTORIES_TO_HOLD_OUT, Trajectory, TrajectoryDataset, generate_dataset, make_times
from hinn_core.errors import DataError
from hinn_core.systems import make_system


def _item(n: int = 4, dof: int = 1, t0: float = 0.0) -> dict[str, Any]:
    t = (t0 + 0.1 * np.arange(n)).tolist()
    return {"t": t, "q": np.ones((n, dof)).tolist(), "p": np.zeros((n, dof)).tolist()}


def _error(items: list[dict[str, Any]], **kwargs: Any) -> DataError:
    with pytest.raises(DataError) as info:
        TrajectoryDataset.from_lists(items, **kwargs)
    return info.value


def test_valid_lists_build_a_read_only_dataset() -> None:
    ds = TrajectoryDataset.from_lists([_item(), _item(6)], source={"kind": "upload"})
    assert len(ds) == 2 and ds.dof == 1 and ds.n_points == 10
    assert ds.trajectories[1].state.shape == (6, 2)
    with pytest.raises(ValueError):
        ds.trajectories[0].q[0, 0] = 5.0


def test_trajectory_copies_the_callers_arrays() -> None:
    t, q, p = np.linspace(0.0, 1.0, 3), np.zeros((3, 2)), np.zeros((3, 2))
    tr = Trajectory.from_arrays(t, q[:, :1], q[:, 1:])
    q[0, 0] = 7.0  # the caller's array stays writable and the trajectory does not change
    t[0] = -1.0
    assert tr.q[0, 0] == 0.0 and tr.t[0] == 0.0
    assert Trajectory.from_arrays(t, p, p).p.flags.writeable is False


@pytest.mark.parametrize("bad_t", [[0.0, 0.1, 0.1, 0.3], [0.0, 0.2, 0.1, 0.3]])
def test_non_increasing_times(bad_t: list[float]) -> None:
    item = _item()
    item["t"] = bad_t
    err = _error([_item(), item])
    assert err.field == "trajectories[1].t"
    assert "strictly increasing" in err.problem and "t[2]" in err.problem


def test_ragged_lists_are_named() -> None:
    item = _item(3, dof=2)
    item["q"] = [[0.0, 1.0], [2.0], [3.0, 4.0]]
    err = _error([item])
    assert err.field == "trajectories[0].q" and "ragged" in err.problem
    item = _item(3)
    item["t"] = [0.0, [1.0], 2.0]
    assert _error([item]).field == "trajectories[0].t"


@pytest.mark.parametrize(("key", "value"), [("q", float("nan")), ("p", float("inf")), ("t", float("-inf"))])
def test_nan_and_inf_are_rejected(key: str, value: float) -> None:
    item = _item(4)
    if key == "t":
        item["t"][3] = value
    else:
        item[key][2][0] = value
    err = _error([item])
    assert err.field == f"trajectories[0].{key}" and "NaN or infinity" in err.problem


def test_q_p_rows_must_match_times() -> None:
    item = _item(4)
    item["q"] = item["q"][:3]
    err = _error([item])
    assert err.field == "trajectories[0].q" and "3 rows" in err.problem and "4 time points" in err.problem
    item = _item(4)
    item["p"] = item["p"] + [[0.0]]
    assert _error([item]).field == "trajectories[0].p"


def test_q_p_dimensions_must_match() -> None:
    item = _item(4, dof=2)
    item["p"] = np.zeros((4, 3)).tolist()
    err = _error([item])
    assert err.field == "trajectories[0].p" and "same dof" in err.problem


def test_single_point_and_missing_keys() -> None:
    assert _error([_item(1)]).field == "trajectories[0].t"
    item = _item()
    del item["p"]
    err = _error([_item(), item])
    assert err.field == "trajectories[1]" and "'p'" in err.problem
    assert _error([]).field == "trajectories"


def test_dataset_dof_mismatch() -> None:
    err = _error([_item(dof=2), _item(dof=2), _item(dof=3)])
    assert err.field == "trajectories[2].q" and "dof 2" in err.problem
    assert _error([_item(dof=2)], dof=1).field == "trajectories[0].q"
    a = Trajectory.from_arrays(*_item(dof=1).values())
    b = Trajectory.from_arrays(*_item(dof=2).values())
    with pytest.raises(DataError) as info:
        TrajectoryDataset([a, b])
    assert info.value.field == "trajectories[1].q"


def test_generate_dataset_is_deterministic_for_a_seed() -> None:
    kwargs: dict[str, Any] = {"n_trajectories": 3, "t_end": 2.0, "dt": 0.2, "dt_jitter": 0.3, "seed": 4}
    a, b = generate_dataset("pendulum", **kwargs), generate_dataset("pendulum", **kwargs)
    c = generate_dataset("pendulum", **{**kwargs, "seed": 5})
    for x, y in zip(a.trajectories, b.trajectories, strict=True):
        for key in ("t", "q", "p"):
            np.testing.assert_array_equal(getattr(x, key), getattr(y, key))
    assert not np.array_equal(a.trajectories[0].q, c.trajectories[0].q)
    assert a.source["system"] == "pendulum" and a.source["seed"] == 4 and a.source["dt_jitter"] == 0.3
    assert a.system is not None and a.system.name == "pendulum"


def test_dt_jitter_gives_variable_steps_ending_at_t_end() -> None:
    ds = generate_dataset("spring", n_trajectories=4, t_end=3.0, dt=0.1, dt_jitter=0.5, seed=1)
    system = make_system("spring")
    grids = []
    for tr in ds.trajectories:
        assert tr.n_points == 31 and tr.t[0] == 0.0 and tr.t[-1] == 3.0
        h = tr.steps
        assert h.std() / h.mean() > 0.1 and not tr.is_uniform  # uniform jitter 0.5: rel. std ≈ 0.29
        assert h.min() > 0.1 * 0.5 * 0.8 and h.max() < 0.1 * 1.5 * 1.2
        q, p = system.solve(tr.q[0], tr.p[0], tr.t)  # the data are the solution at those times
        assert np.abs(q - tr.q).max() < 1e-12 and np.abs(p - tr.p).max() < 1e-12
        grids.append(tr.t)
    assert not np.array_equal(grids[0], grids[1])
    assert ds.time_stats()["uniform"] is False
    uniform = generate_dataset("spring", n_trajectories=2, t_end=3.0, dt=0.1, seed=1)
    assert uniform.time_stats()["uniform"] is True and uniform.trajectories[0].n_points == 31


def test_noise_std_adds_noise_of_that_size() -> None:
    kwargs: dict[str, Any] = {"n_trajectories": 20, "t_end": 5.0, "dt": 0.1, "seed": 2}
    clean = generate_dataset("two-body", **kwargs)
    noisy = generate_dataset("two-body", noise_std=0.05, **kwargs)
    pairs = zip(noisy.trajectories, clean.trajectories, strict=True)
    diff = np.concatenate([n.state - c.state for n, c in pairs])
    assert diff.size > 5000
    assert abs(diff.std() - 0.05) < 0.2 * 0.05 and abs(diff.mean()) < 0.05 * 0.1
    np.testing.assert_array_equal(noisy.trajectories[0].t, clean.trajectories[0].t)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"t_end": 0.0}, "t_end"),
        ({"t_end": float("inf")}, "t_end"),
        ({"dt": 0.0}, "dt"),
        ({"dt": 5.0}, "dt"),
        ({"dt_jitter": 1.0}, "dt_jitter"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"n_trajectories": 0}, "n_trajectories"),
    ],
)
def test_generate_dataset_rejects_bad_options(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(DataError) as info:
        generate_dataset("spring", **{"n_trajectories": 2, "t_end": 1.0, "dt": 0.1, **kwargs})
    assert info.value.field == field


def test_make_times_count_and_end() -> None:
    t = make_times(1.0, 0.3, 0.9, np.random.default_rng(0))
    assert len(t) == 4 and t[-1] == 1.0 and (np.diff(t) > 0).all()


def _keys(ds: TrajectoryDataset) -> set[float]:
    return {float(tr.q[0, 0]) for tr in ds.trajectories}


SPLITS = [
    (10, (0.8, 0.2), (8, 2)),
    (10, (0.6, 0.2, 0.2), (6, 2, 2)),
    (3, (0.98, 0.01, 0.01), (1, 1, 1)),  # every part gets at least one trajectory
    (7, (1, 1), (3, 4)),
]


@pytest.mark.parametrize(("n", "fractions", "sizes"), SPLITS)
def test_split_by_trajectory(n: int, fractions: tuple[float, ...], sizes: tuple[int, ...]) -> None:
    ds = generate_dataset("spring", n_trajectories=n, t_end=1.0, dt=0.5, seed=0)
    parts = ds.split(fractions, seed=3)
    assert tuple(len(part) for part in parts) == sizes
    keys = [_keys(part) for part in parts]
    assert sum(len(k) for k in keys) == n and set().union(*keys) == _keys(ds)  # disjoint, complete
    assert [_keys(part) for part in ds.split(fractions, seed=3)] == keys  # deterministic
    assert all(part.source == ds.source for part in parts)


def test_split_shuffles_with_the_seed_and_needs_enough_trajectories() -> None:
    ds = generate_dataset("spring", n_trajectories=10, t_end=1.0, dt=0.5, seed=0)
    orders = {tuple(sorted(_keys(ds.split((0.5, 0.5), seed=s)[0]))) for s in range(5)}
    assert len(orders) > 1
    with pytest.raises(DataError) as info:
        ds.subset([0, 1]).split((0.4, 0.3, 0.3))
    assert info.value.field == "trajectories"


def test_holdout_splits_or_keeps_everything_for_training() -> None:
    """The rule the CLI and the service share: a split only with test_fraction > 0 and enough trajectories."""
    ds = generate_dataset("spring", n_trajectories=MIN_TRAJECTORIES_TO_HOLD_OUT, t_end=1.0, dt=0.5, seed=0)
    train, test, held_out = ds.holdout(0.2, seed=3)
    assert held_out and (len(train), len(test)) == (4, 1)
    assert [_keys(part) for part in (train, test)] == [_keys(part) for part in ds.split((0.8, 0.2), seed=3)]
    few = ds.subset(list(range(MIN_TRAJECTORIES_TO_HOLD_OUT - 1)))
    for data, fraction in ((few, 0.2), (ds, 0.0), (ds, 0)):
        train, test, held_out = data.holdout(fraction)
        assert train is data and test is data and held_out is False
    for fraction in (1.0, -0.1, float("nan"), "0.2", None):
        with pytest.raises(DataError, match="^test_fraction: "):
            ds.holdout(fraction)
    with pytest.raises(DataError, match="^seed: "):
        few.holdout(0.2, seed=-1)


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True, "0"])
def test_seeds_outside_torchs_range_are_data_errors(seed: Any) -> None:
    """numpy refused a negative seed with a bare ValueError and torch overflowed above 2^63."""
    with pytest.raises(DataError, match=r"seed: must be an integer in \[0, 9223372036854775807\]"):
        generate_dataset("spring", 2, 0.5, 0.1, seed=seed)
    with pytest.raises(DataError, match="seed"):
        generate_dataset("spring", 2, 0.5, 0.1, seed=0).split((0.5, 0.5), seed=seed)


def test_overflowing_noise_names_noise_std() -> None:
    with pytest.raises(DataError, match="noise_std: 1e\\+308 is so large"):
        generate_dataset("spring", 2, 0.5, 0.1, noise_std=1e308, seed=0)


def test_parameters_with_a_system_object_are_refused() -> None:
    """They were silently ignored (the object carries its own)."""
    with pytest.raises(DataError, match="parameters"):
        generate_dataset(make_system("spring"), 1, 0.5, 0.1, parameters={"m": 5.0})
