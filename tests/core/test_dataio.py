"""Dataset files (hinn_core.dataio): exact round trips and errors that name the bad place."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hinn_core.data import Trajectory, TrajectoryDataset, generate_dataset
from hinn_core.dataio import (
    DEFAULT_NPZ_MAX_BYTES,
    dataset_from_bytes,
    dataset_from_csv_text,
    dataset_from_json,
    dataset_from_npz_bytes,
    dataset_to_csv_text,
    dataset_to_json,
    dataset_to_npz_bytes,
    load_dataset,
    save_dataset,
)
from hinn_core.errors import DataError, DataLimitError
from tests.npz_bombs import deflate_npz

FORMATS = [".json", ".csv", ".npz"]


@pytest.fixture(scope="module")
def variable_steps() -> TrajectoryDataset:
    """Same length, jittered (non-uniform, per-trajectory) times, noisy full-precision floats."""
    kwargs: dict[str, Any] = {"t_end": 1.0, "dt": 0.1, "dt_jitter": 0.4, "noise_std": 0.01, "seed": 3}
    return generate_dataset("two-body", n_trajectories=4, **kwargs)


@pytest.fixture(scope="module")
def ragged() -> TrajectoryDataset:
    """Trajectories of different lengths, with awkward floats (0.1 + 0.2, 1e-300, -0.0, 1e17)."""
    a = generate_dataset("henon-heiles", n_trajectories=2, t_end=0.5, dt=0.1, dt_jitter=0.2, seed=1)
    b = generate_dataset("henon-heiles", n_trajectories=1, t_end=1.3, dt=0.1, seed=2)
    odd = Trajectory.from_arrays(
        [0.1 + 0.2, 1.0, 1e17], [[1e-300, -0.0], [np.pi, 1 / 3], [-1e-17, 5e-324]], np.full((3, 2), 2.0 / 3.0)
    )
    return TrajectoryDataset([*a.trajectories, *b.trajectories, odd], {"kind": "mixed", "n": 4})


def _assert_same(a: TrajectoryDataset, b: TrajectoryDataset) -> None:
    assert len(a) == len(b)
    for x, y in zip(a.trajectories, b.trajectories, strict=True):
        for key in ("t", "q", "p"):
            u, v = getattr(x, key), getattr(y, key)
            assert u.dtype == v.dtype == np.float64
            assert np.array_equal(u, v) and np.array_equal(np.signbit(u), np.signbit(v)), key


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("which", ["variable_steps", "ragged"])
def test_round_trip_is_exact(suffix: str, which: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    ds: TrajectoryDataset = request.getfixturevalue(which)
    path = save_dataset(ds, tmp_path / f"data{suffix}")
    back = load_dataset(path)
    _assert_same(ds, back)
    if suffix != ".csv":  # CSV carries no metadata
        assert back.source == ds.source
    again = dataset_from_bytes(path.read_bytes(), path.name)  # the upload path reads the same
    _assert_same(ds, again)


def test_in_memory_variants_round_trip(ragged: TrajectoryDataset) -> None:
    _assert_same(ragged, dataset_from_json(json.loads(json.dumps(dataset_to_json(ragged)))))
    _assert_same(ragged, dataset_from_csv_text(dataset_to_csv_text(ragged)))
    _assert_same(ragged, dataset_from_npz_bytes(dataset_to_npz_bytes(ragged)))
    doc = dataset_to_json(ragged)
    assert doc["format"] == "hinn-trajectories" and doc["version"] == 1 and doc["dof"] == 2


def test_npz_layouts(variable_steps: TrajectoryDataset, ragged: TrajectoryDataset) -> None:
    with np.load(io.BytesIO(dataset_to_npz_bytes(variable_steps)), allow_pickle=False) as npz:
        assert {"t", "q", "p", "source_json"} <= set(npz.files) and npz["q"].shape == (4, 11, 4)
    with np.load(io.BytesIO(dataset_to_npz_bytes(ragged)), allow_pickle=False) as npz:
        assert {"t_0", "q_3", "p_3"} <= set(npz.files) and "t" not in npz.files
    shared = _npz(t=np.linspace(0, 1, 5), q=np.ones((3, 5, 2)), p=np.zeros((3, 5, 2)))
    ds = dataset_from_npz_bytes(shared)  # one time grid for all trajectories
    assert len(ds) == 3 and ds.dof == 2 and ds.source == {}
    assert all(np.array_equal(tr.t, np.linspace(0, 1, 5)) for tr in ds.trajectories)


def test_csv_ids_are_strings_in_order_of_first_appearance() -> None:
    text = "trajectory,t,q0,p0\nb,0,1,2\nb,1,3,4\nfirst,0.5,5,6\n\nfirst,0.75,7,8\n"
    ds = dataset_from_csv_text(text)
    assert len(ds) == 2 and ds.trajectories[0].q[:, 0].tolist() == [1.0, 3.0]
    assert ds.trajectories[1].t.tolist() == [0.5, 0.75]
    header = dataset_to_csv_text(ds).splitlines()[0]
    assert header == "trajectory,t,q0,p0"


# -- bad files: every error names the place ------------------------------------------------------
def _csv_error(text: str) -> DataError:
    with pytest.raises(DataError) as info:
        dataset_from_csv_text(text)
    return info.value


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("trajectory,t,q0,q1,p0", "column p1"),  # missing
        ("trajectory,t,q0,p0,q1,p1", "column q1"),  # mis-ordered
        ("trajectory,t,q0,p0,extra", "column extra"),  # extra
        ("trajectory,t,p0,p1", "column q0"),  # no q at all
        ("id,t,q0,p0", "column trajectory"),
        ("trajectory,time,q0,p0", "column t"),
    ],
)
def test_bad_csv_header(header: str, field: str) -> None:
    err = _csv_error(header + "\n0,0,1,2,3,4\n")
    assert err.field == field


def test_empty_csv() -> None:
    assert _csv_error("").field == "header"
    assert _csv_error("trajectory,t,q0,p0\n").field == "trajectories"


def test_non_numeric_csv_cell() -> None:
    err = _csv_error("trajectory,t,q0,p0\n0,0.0,1,2\n0,0.1,abc,2\n")
    assert err.field == "row 3, column q0" and "abc" in err.problem


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-Infinity"])
def test_nan_csv_cell(bad: str) -> None:
    err = _csv_error(f"trajectory,t,q0,p0\nrun-7,0.0,1,2\nrun-7,0.1,1,{bad}\n")
    assert err.field == "row 3, column p0" and "run-7" in err.problem and "NaN or infinity" in err.problem


def test_non_increasing_times_in_csv() -> None:
    err = _csv_error("trajectory,t,q0,p0\na,0.0,1,2\nb,0.0,1,2\na,0.2,1,2\nb,0.3,1,2\na,0.2,1,2\n")
    assert err.field == "row 6, column t"
    assert "strictly increasing" in err.problem and "'a'" in err.problem and "row 4" in err.problem


def test_csv_row_shape_and_short_trajectory() -> None:
    assert _csv_error("trajectory,t,q0,p0\n0,0.0,1\n").field == "row 2"
    assert _csv_error("trajectory,t,q0,p0\n,0.0,1,2\n").field == "row 2, column trajectory"
    err = _csv_error("trajectory,t,q0,p0\nx,0.0,1,2\nx,0.1,1,2\nlonely,0.0,1,2\n")
    assert err.field == "trajectory lonely, column t" and "at least 2" in err.problem


def test_csv_limits_stop_reading_at_the_first_row_over_them() -> None:
    text = "trajectory,t,q0,p0\n" + "".join(f"{k},{i * 0.1:.1f},1,2\n" for k in "abc" for i in range(4))
    assert dataset_from_csv_text(text, max_points=12, max_trajectories=3).n_points == 12  # at the limits
    with pytest.raises(DataLimitError) as info:
        dataset_from_csv_text(text, max_points=7)
    assert (info.value.bound, info.value.limit, info.value.field) == ("max_points", 7, "row 9")
    with pytest.raises(DataLimitError) as info:
        dataset_from_csv_text(text, max_trajectories=2)
    assert (info.value.bound, info.value.limit, info.value.field) == ("max_trajectories", 2, "row 10")
    with pytest.raises(DataLimitError):  # the upload path passes them through
        dataset_from_bytes(text.encode(), "x.csv", max_trajectories=2)


def test_csv_parsing_holds_about_two_copies_of_the_numbers_not_python_objects() -> None:
    """50 × 2000 rows: flat float buffers and lazy lines peak at ~2× the text (was ~14×: a list of
    Python floats per row and io.StringIO's copy of the text)."""
    text = "trajectory,t,q0,p0\n" + "".join(f"tr{k},{i * 0.1:.1f},0.500,-0.250\n"
                                            for k in range(50) for i in range(2000))
    tracemalloc.start()
    try:
        ds = dataset_from_csv_text(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.n_points == 100_000 and ds.trajectories[7].q[3, 0] == 0.5
    assert peak < 4 * len(text), peak / len(text)


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _npz_error(data: bytes) -> DataError:
    with pytest.raises(DataError) as info:
        dataset_from_npz_bytes(data)
    return info.value


def test_npz_missing_keys() -> None:
    t, q = np.linspace(0, 1, 4), np.zeros((2, 4, 1))
    assert _npz_error(_npz(t=t, q=q)).field == "p"
    assert _npz_error(_npz(q=q, p=q)).field == "t"
    assert _npz_error(_npz(other=q)).field == "t"
    assert _npz_error(_npz(t_0=t, q_0=q[0], p_0=q[0], t_1=t, p_1=q[1])).field == "q_1"
    assert _npz_error(_npz(t_0=t, q_0=q[0], p_0=q[0], q_1=q[0], p_1=q[0])).field == "t_1"
    assert _npz_error(_npz(t_0=t, q_0=q[0], p_0=q[0], q_2=q[0], p_2=q[0])).field == "t_1"  # a gap
    assert _npz_error(_npz(q_0=q[0], p_0=q[0])).field == "t_0"


def test_npz_shape_and_content_errors() -> None:
    t, q = np.linspace(0, 1, 4), np.zeros((2, 4, 1))
    assert _npz_error(_npz(t=t, q=q, p=np.zeros((2, 4, 2)))).field == "p"
    assert _npz_error(_npz(t=np.linspace(0, 1, 5), q=q, p=q)).field == "t"
    assert _npz_error(_npz(t=t, q=q[0], p=q[0])).field == "q"
    assert _npz_error(_npz(t=np.array(["a", "b", "c", "d"]), q=q, p=q)).field == "t"
    bad_t = np.stack([t, t[::-1]])  # second trajectory runs backwards
    err = _npz_error(_npz(t=bad_t, q=q, p=q))
    assert err.field == "t[1]" and "strictly increasing" in err.problem
    nan_q = q.copy()
    nan_q[1, 2, 0] = np.nan
    assert _npz_error(_npz(t=t, q=nan_q, p=q)).field == "q[1]"
    err = _npz_error(_npz(t_0=t, q_0=q[0], p_0=q[0], t_1=t, q_1=np.zeros((4, 2)), p_1=np.zeros((4, 2))))
    assert err.field == "q_1" and "dof" in err.problem
    assert _npz_error(b"this is not a zip archive").field == "file"
    assert _npz_error(_npz(t=t, q=q, p=q, source_json=np.frombuffer(b"{not json", np.uint8))).field == (
        "source_json"
    )


UNPICKLED: list[str] = []


def _record_unpickling() -> str:
    UNPICKLED.append("payload ran")
    return "payload"


class _Payload:
    """Unpickling this object runs `_record_unpickling`: a stand-in for a malicious pickle."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_record_unpickling, ())


def test_npz_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    t = np.linspace(0, 1, 4)
    evil = np.empty((1, 4, 1), dtype=object)
    evil[0, 0, 0] = _Payload()
    data = _npz(t=t, q=evil, p=np.zeros((1, 4, 1)))
    UNPICKLED.clear()
    err = _npz_error(data)
    assert err.field == "q" and "unpickling" in err.problem
    (tmp_path / "evil.npz").write_bytes(data)
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "evil.npz")
    assert info.value.field == "q"
    assert UNPICKLED == []  # the payload never ran
    np.load(io.BytesIO(data), allow_pickle=True)["q"]  # sanity: it *would* run if unpickled
    assert UNPICKLED == ["payload ran"]


BOMB_POINTS = 8_000_000  # 3 arrays × 64 MB of float64 zeros declared; ~190 KB once deflated


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return deflate_npz({"t": (BOMB_POINTS,), "q": (1, BOMB_POINTS, 1), "p": (1, BOMB_POINTS, 1)})


def _limit_error(data: bytes, **limits: Any) -> tuple[DataLimitError, int]:
    """The `DataLimitError` that reading ``data`` raises, and the peak memory traced meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(DataLimitError) as info:
            dataset_from_npz_bytes(data, **limits)
        return info.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_npz_deflate_bomb_is_refused_before_its_arrays_are_allocated(bomb: bytes, tmp_path: Path) -> None:
    declared = 3 * 8 * BOMB_POINTS
    assert len(bomb) < 300_000 < declared // 500
    err, peak = _limit_error(bomb, max_points=1_000_000)
    assert (err.field, err.bound, err.limit, err.declared) == ("t", "max_points", 1_000_000, BOMB_POINTS)
    assert isinstance(err, DataError) and "over the limit of 1000000" in err.problem
    assert peak < 4 * 2**20 < declared // 40  # nothing near the 192 MB declared was allocated
    err, peak = _limit_error(bomb, max_bytes=64 * 2**20)  # t alone fits; t + q do not
    assert (err.field, err.bound, err.declared) == ("q", "max_bytes", 2 * 8 * BOMB_POINTS)
    assert peak < 4 * 2**20
    (tmp_path / "bomb.npz").write_bytes(bomb)
    with pytest.raises(DataLimitError) as info:
        load_dataset(tmp_path / "bomb.npz", max_points=10)
    assert info.value.field == "t"


def test_npz_declared_size_is_bounded_by_default() -> None:
    """Headers alone may declare terabytes (the data need not even be there): the default limit holds."""
    huge = deflate_npz({"t": (10**6,), "q": (1, 10**6, 10**6), "p": (1, 10**6, 1)}, truncated=True)
    err, peak = _limit_error(huge)
    assert (err.field, err.bound, err.limit) == ("q", "max_bytes", DEFAULT_NPZ_MAX_BYTES)
    assert peak < 2**20
    ragged = deflate_npz({"t_0": (10,), "q_0": (10, 1), "p_0": (10, 1), "t_1": (10,), "q_1": (10**9, 1),
                          "p_1": (10, 1)}, truncated=True)
    err, _ = _limit_error(ragged, max_points=100)  # trajectory 1 declares 10**9 points in q_1
    assert (err.field, err.declared) == ("q_1", 10 + 10**9)


def test_npz_limits_admit_data_within_them(ragged: TrajectoryDataset, variable_steps: TrajectoryDataset) -> None:
    for ds in (ragged, variable_steps):
        data = dataset_to_npz_bytes(ds)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            nbytes = sum(npz[k].nbytes for k in npz.files)
        _assert_same(ds, dataset_from_npz_bytes(data, max_points=ds.n_points, max_bytes=nbytes))
        assert _limit_error(data, max_points=ds.n_points - 1)[0].bound == "max_points"
        assert _limit_error(data, max_bytes=nbytes - 1)[0].bound == "max_bytes"
        _assert_same(ds, dataset_from_bytes(data, "x.npz", max_points=ds.n_points, max_bytes=None))


def test_npz_members_without_a_numpy_header_are_refused_unread() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("t.npy", _npz_member(np.linspace(0, 1, 4)))
        zf.writestr("q", bytes(10**6))  # numpy.load would hand this back whole, as bytes
        zf.writestr("p.npy", _npz_member(np.zeros((1, 4, 1))))
    err = _npz_error(buf.getvalue())
    assert err.field == "q" and "no NumPy header" in err.problem
    bare = io.BytesIO()
    np.lib.format.write_array_header_1_0(bare, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    assert _npz_error(bare.getvalue()).field == "file"  # a bare .npy header: refused, not allocated


def _npz_member(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_json_missing_trajectories_and_dof_mismatch(ragged: TrajectoryDataset) -> None:
    doc = dataset_to_json(ragged)
    with pytest.raises(DataError) as info:
        dataset_from_json({k: v for k, v in doc.items() if k != "trajectories"})
    assert info.value.field == "trajectories"
    with pytest.raises(DataError) as info:
        dataset_from_json({**doc, "dof": 3})
    assert info.value.field == "trajectories[0].q" and "dof 3" in info.value.problem
    for key, value in (("dof", "two"), ("format", "csv"), ("version", 2), ("source", [1])):
        with pytest.raises(DataError) as info:
            dataset_from_json({**doc, key: value})
        assert info.value.field == key
    minimal = dataset_from_json({"trajectories": doc["trajectories"]})
    assert minimal.source == {} and len(minimal) == len(ragged)


def test_json_file_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"trajectories": [', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "bad.json")
    assert info.value.field == "file"
    nan_doc = '{"trajectories": [{"t": [0, 1], "q": [[0], [NaN]], "p": [[0], [0]]}]}'
    (tmp_path / "nan.json").write_text(nan_doc, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "nan.json")
    assert info.value.field == "trajectories[0].q"


@pytest.mark.parametrize("name", ["data.txt", "data", "data.json.gz"])
def test_unknown_suffix(name: str, tmp_path: Path, ragged: TrajectoryDataset) -> None:
    for call in (lambda: save_dataset(ragged, tmp_path / name), lambda: load_dataset(tmp_path / name)):
        with pytest.raises(DataError) as info:
            call()
        assert info.value.field == "path"
    assert not (tmp_path / name).exists()
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "absent.csv")
    assert info.value.field == "path"


@pytest.mark.parametrize("suffix", [".json", ".csv", ".npz"])
def test_save_dataset_replaces_a_file_whole_or_not_at_all(tmp_path, monkeypatch, suffix: str) -> None:
    """Through a temp file and a rename: a failed write leaves the previous file as it was, no temp file."""
    path = tmp_path / f"d{suffix}"
    old = generate_dataset("spring", 2, 0.5, 0.1, seed=0)
    save_dataset(old, path)
    before = path.read_bytes()

    def fail(self, target):  # the rename fails, as on a full disk or a crash just before it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        save_dataset(generate_dataset("spring", 3, 0.5, 0.1, seed=1), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    monkeypatch.undo()
    assert len(load_dataset(path)) == 2
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        save_dataset(old, folder)
