"""Trajectory files: JSON, CSV and NPZ, read and written with exact round trips.

Formats (chosen by the file suffix):

* ``.json`` — ``{"format": "hinn-trajectories", "version": 1, "dof": n, "source": {...},
  "trajectories": [{"t": [...], "q": [[...]], "p": [[...]]}, ...]}``; only ``trajectories`` is
  required on load.
* ``.csv`` — long format, one row per time point, header ``trajectory,t,q0..q{n-1},p0..p{n-1}``;
  rows of one trajectory share its id (any string), trajectories in order of first appearance.
  Errors name ``row N, column NAME`` with N the 1-based line number of the file (header = line 1).
  A CSV holds the trajectories only: a dataset's ``source`` does not survive a CSV round trip.
* ``.npz`` — stacked ``t`` (N, T+1) or shared (T+1,), ``q``/``p`` (N, T+1, n); or ragged
  ``t_0, q_0, p_0, t_1, ...``; optional ``source_json`` (UTF-8 bytes as uint8). Always read
  with ``allow_pickle=False``: object arrays are refused, never unpickled. Before any array is
  loaded, the ``.npy`` header of every member the reader would load is checked: object dtypes,
  members without a NumPy header, and declared sizes over ``max_points`` (time points) or
  ``max_bytes`` (uncompressed bytes; a few hundred KB of DEFLATE can declare gigabytes of zeros)
  raise before anything is allocated — the latter two as `DataLimitError`.

Every malformed input raises `DataError` whose ``field`` points at the offending key, column or
row. The ``*_text``/``*_bytes`` variants serve uploads that never touch the file system.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zipfile
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hinn_core.atomic import write_bytes_atomically
from hinn_core.data import Trajectory, TrajectoryDataset
from hinn_core.errors import DataError, DataLimitError

FORMAT_NAME = "hinn-trajectories"
FORMAT_VERSION = 1
SUFFIXES = (".json", ".csv", ".npz")
#: Default bound on the uncompressed bytes that the arrays read from one NPZ archive may declare
#: (``max_bytes``; ``None`` lifts it). Compressed size says nothing: zeros deflate ~1000:1.
DEFAULT_NPZ_MAX_BYTES = 1 << 30
#: the NPZ keys this module reads; other members are never loaded, so never checked
_NPZ_KEY = re.compile(r"[tqp](?:_\d+)?|source_json")


def _json_default(obj: Any) -> Any:
    """Numpy scalars/arrays in ``source`` metadata → plain JSON values."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _remap(err: DataError, fields: dict[str, str]) -> DataError:
    """The same problem with the Trajectory-level field (``t``/``q``/``p``) renamed for the file."""
    return DataError(err.problem, field=fields.get(err.field or "", err.field))


# -- JSON ------------------------------------------------------------------------------------------
def dataset_to_json(ds: TrajectoryDataset) -> dict[str, Any]:
    """The JSON document of ``ds`` (floats survive ``json.dumps`` exactly: they are written by repr)."""
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "dof": ds.dof,
        "source": dict(ds.source),
        "trajectories": ds.to_lists(),
    }


def dataset_from_json(obj: Any) -> TrajectoryDataset:
    """Validate a parsed JSON document (see the module docstring) and build the dataset."""
    if not isinstance(obj, dict):
        raise DataError(
            f"must be a JSON object with key 'trajectories', got {type(obj).__name__}", field="file"
        )
    if "format" in obj and obj["format"] != FORMAT_NAME:
        raise DataError(f"must be {FORMAT_NAME!r}, got {obj['format']!r}", field="format")
    if "version" in obj and obj["version"] != FORMAT_VERSION:
        raise DataError(
            f"unsupported version {obj['version']!r}; this reader knows {FORMAT_VERSION}", field="version"
        )
    if "trajectories" not in obj:
        raise DataError("is missing: expected a list of {t, q, p} objects", field="trajectories")
    dof = obj.get("dof")
    if dof is not None and (isinstance(dof, bool) or not isinstance(dof, int) or dof < 1):
        raise DataError(f"must be a positive integer, got {dof!r}", field="dof")
    source = obj.get("source") or {}
    if not isinstance(source, dict):
        raise DataError(f"must be an object, got {type(source).__name__}", field="source")
    return TrajectoryDataset.from_lists(obj["trajectories"], source=source, dof=dof)


def _dataset_from_json_text(text: str) -> TrajectoryDataset:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}", field="file"
        ) from None
    return dataset_from_json(obj)


# -- CSV -------------------------------------------------------------------------------------------
def dataset_to_csv_text(ds: TrajectoryDataset) -> str:
    """Long-format CSV; trajectory ids are 0, 1, ...; numbers written by ``repr`` (exact round trip)."""
    n = ds.dof
    lines = [",".join(["trajectory", "t", *(f"q{j}" for j in range(n)), *(f"p{j}" for j in range(n))])]
    for i, tr in enumerate(ds.trajectories):
        rows = np.concatenate([tr.t[:, None], tr.q, tr.p], axis=1).tolist()
        lines.extend(f"{i}," + ",".join(map(repr, row)) for row in rows)
    return "\n".join(lines) + "\n"


def _check_header(names: list[str]) -> int:
    """The dof declared by a CSV header; `DataError` naming the first wrong/missing/extra column."""
    n = max(1, sum(1 for name in names[2:] if re.fullmatch(r"q\d+", name)))
    expected = ["trajectory", "t", *(f"q{j}" for j in range(n)), *(f"p{j}" for j in range(n))]
    for k, want in enumerate(expected):
        got = names[k] if k < len(names) else None
        if got != want:
            found = "is missing" if got is None else f"found {got!r} instead"
            raise DataError(
                f"header column {k + 1} must be {want!r} ({found}); expected header {','.join(expected)}",
                field=f"column {want}",
            )
    if len(names) > len(expected):
        extra = names[len(expected)]
        raise DataError(
            f"unexpected column {extra!r} after the {len(expected)} expected ones ({','.join(expected)})",
            field=f"column {extra}",
        )
    return n


def _lines(text: str) -> Iterator[str]:
    """``text``'s lines with their ``\n``, one at a time (io.StringIO would first copy the whole
    text, at up to 4 bytes a character)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        stop = len(text) if end < 0 else end + 1
        yield text[start:stop]
        start = stop


def dataset_from_csv_text(text: str, *, max_points: int | None = None,
                          max_trajectories: int | None = None) -> TrajectoryDataset:
    """Parse and validate long-format CSV text (see the module docstring).

    Values are kept in flat ``array('d')`` buffers per trajectory (about 8 bytes a number, not a
    Python float in a list per row), and more than ``max_points`` rows or ``max_trajectories``
    trajectory ids raise `DataLimitError` while reading, before the rest is parsed.
    """
    reader = csv.reader(_lines(text.removeprefix("\ufeff")))
    try:
        header = next(r for r in reader if any(c.strip() for c in r))
    except StopIteration:
        raise DataError("the CSV file is empty; expected a header line", field="header") from None
    except csv.Error as e:
        raise DataError(f"is not valid CSV: {e}", field="header") from None
    names = [c.strip() for c in header]
    n = _check_header(names)
    width = len(names) - 1
    groups: dict[str, tuple[list[int], array]] = {}  # id: (last row's line, flat values)
    rows = 0
    try:
        for row in reader:
            if not any(c.strip() for c in row):
                continue
            line = reader.line_num
            if len(row) != len(names):
                raise DataError(f"has {len(row)} cells but the header has {len(names)}", field=f"row {line}")
            tid = row[0].strip()
            if not tid:
                raise DataError("the trajectory id is empty", field=f"row {line}, column trajectory")
            rows += 1
            if max_points is not None and rows > max_points:
                raise DataLimitError(f"has more data rows (time points) than the limit of {max_points}",
                                     field=f"row {line}", bound="max_points", limit=max_points, declared=rows)
            values = []
            for name, cell in zip(names[1:], row[1:], strict=True):
                try:
                    x = float(cell)
                except ValueError:
                    raise DataError(
                        f"is not a number: {cell!r}", field=f"row {line}, column {name}"
                    ) from None
                if not math.isfinite(x):
                    raise DataError(
                        f"NaN or infinity ({cell.strip()!r}) in trajectory {tid!r}; values must be finite",
                        field=f"row {line}, column {name}",
                    )
                values.append(x)
            group = groups.get(tid)
            if group is None:
                if max_trajectories is not None and len(groups) >= max_trajectories:
                    raise DataLimitError(f"brings a trajectory id over the limit of {max_trajectories}",
                                         field=f"row {line}", bound="max_trajectories", limit=max_trajectories,
                                         declared=len(groups) + 1)
                group = groups[tid] = ([0], array("d"))
            last, data = group
            if data and values[0] <= data[-width]:
                raise DataError(
                    f"times must be strictly increasing within trajectory {tid!r}: t = {values[0]!r} "
                    f"follows t = {data[-width]!r} (row {last[0]})",
                    field=f"row {line}, column t",
                )
            last[0] = line
            data.extend(values)
    except csv.Error as e:
        raise DataError(f"is not valid CSV: {e}", field=f"row {reader.line_num}") from None
    if not groups:
        raise DataError("the CSV file has a header but no data rows", field="trajectories")
    trajectories = []
    for tid, (_, data) in groups.items():
        arr = np.frombuffer(data, dtype=np.float64).reshape(-1, width).copy()
        where = f"trajectory {tid}"
        try:
            tr = Trajectory.from_arrays(arr[:, 0], arr[:, 1 : 1 + n], arr[:, 1 + n :])
        except DataError as e:
            raise _remap(e, {k: f"{where}, column {k}" for k in ("t", "q", "p")}) from None
        trajectories.append(tr)
    return TrajectoryDataset(trajectories)


# -- NPZ -------------------------------------------------------------------------------------------
def dataset_to_npz_bytes(ds: TrajectoryDataset) -> bytes:
    """Stacked arrays when all trajectories have the same length, else ragged ``t_i/q_i/p_i`` keys."""
    arrays: dict[str, np.ndarray] = {}
    if len({tr.n_points for tr in ds.trajectories}) == 1:
        arrays = {k: np.stack([getattr(tr, k) for tr in ds.trajectories]) for k in ("t", "q", "p")}
    else:
        for i, tr in enumerate(ds.trajectories):
            arrays.update({f"t_{i}": tr.t, f"q_{i}": tr.q, f"p_{i}": tr.p})
    source = json.dumps(ds.source, default=_json_default).encode("utf-8")
    arrays["source_json"] = np.frombuffer(source, dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _npz_headers(data: bytes) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each member the reader may load, from its ``.npy`` header alone.

    Only the first few hundred bytes of each member are decompressed. Keys map to members the way
    `numpy.lib.npyio.NpzFile` maps them (``"q"`` → ``"q.npy"``, the last of duplicate names wins).
    Object dtypes (which only unpickling could read) and members without a NumPy header (which
    `numpy.load` would hand back whole as bytes) are refused here.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DataError(f"is not a readable NPZ archive: {e}", field="file") from None
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with zf:
        names = zf.namelist()
        for key, member in dict(zip([n.removesuffix(".npy") for n in names], names, strict=True)).items():
            if not _NPZ_KEY.fullmatch(key):
                continue
            try:
                with zf.open(member) as f:
                    if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                        raise DataError("is not a .npy array (the archive member has no NumPy header)", field=key)
                    f.seek(0)
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:  # 3.0 only serves structured dtypes with non-Latin-1 field names: never numeric
                        raise DataError(f"has unsupported .npy format version {version}", field=key)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                    RuntimeError) as e:  # RuntimeError: encrypted member; NotImplementedError: compression
                if isinstance(e, DataError):
                    raise
                raise DataError(f"is corrupt: {e}", field=key) from None
            if dtype.hasobject:
                raise DataError(f"cannot be read without unpickling (dtype {dtype} holds Python objects); "
                                "store numeric arrays only", field=key)
            headers[key] = (tuple(int(n) for n in shape), dtype)
    return headers


def _npz_points(key: str, shape: tuple[int, ...]) -> int:
    """Time points an array declares: all of ``t``; all but the last (dof) axis of ``q``/``p``."""
    return math.prod(shape if key.startswith("t") else shape[:-1])


def _check_npz_limits(headers: dict[str, tuple[tuple[int, ...], np.dtype]], max_points: int | None,
                      max_bytes: int | None) -> None:
    """`DataLimitError` naming the array whose declared shape takes the archive over a limit."""
    if max_points is not None:
        for key in ("t", "q", "p"):  # stacked: each array declares the whole dataset
            if key in headers and (n := _npz_points(key, headers[key][0])) > max_points:
                raise DataLimitError(
                    f"declares {n} time points (shape {headers[key][0]}), over the limit of {max_points}",
                    field=key, bound="max_points", limit=max_points, declared=n)
        total, i = 0, 0
        while f"t_{i}" in headers:  # ragged: trajectories add up, in the order they are read
            present = [k for k in (f"t_{i}", f"q_{i}", f"p_{i}") if k in headers]
            key = max(present, key=lambda k: _npz_points(k, headers[k][0]))
            total += _npz_points(key, headers[key][0])
            if total > max_points:
                raise DataLimitError(
                    f"brings the declared time points to {total} (shape {headers[key][0]}), over the limit "
                    f"of {max_points}", field=key, bound="max_points", limit=max_points, declared=total)
            i += 1
    if max_bytes is not None:
        total = 0
        for key, (shape, dtype) in headers.items():
            total += math.prod(shape) * dtype.itemsize
            if total > max_bytes:
                raise DataLimitError(
                    f"declares shape {shape} of {dtype}, bringing the archive to {total} bytes uncompressed, "
                    f"over the limit of {max_bytes} bytes", field=key, bound="max_bytes", limit=max_bytes,
                    declared=total)


def _npz_array(npz: Any, key: str, ndims: tuple[int, ...]) -> np.ndarray:
    """``npz[key]`` as a numeric array of one of ``ndims``, loaded without pickle."""
    if key not in npz.files:
        raise DataError(f"missing array {key!r}; NPZ keys present: {sorted(npz.files)}", field=key)
    try:
        arr = npz[key]
    except ValueError as e:  # object arrays: numpy refuses them when allow_pickle=False
        raise DataError(
            f"cannot be read without unpickling ({e}); store numeric arrays only", field=key
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"is corrupt: {e}", field=key) from None
    if arr.dtype.kind not in "iuf":
        raise DataError(f"must be a numeric (int/float) array, got dtype {arr.dtype}", field=key)
    if arr.ndim not in ndims:
        raise DataError(
            f"must have {' or '.join(map(str, ndims))} dimensions, got shape {arr.shape}", field=key
        )
    return arr


def _npz_source(npz: Any) -> dict[str, Any]:
    if "source_json" not in npz.files:
        return {}
    try:
        raw = npz["source_json"]
    except ValueError:
        raise DataError(
            "cannot be read without unpickling; store UTF-8 bytes as uint8", field="source_json"
        ) from None
    try:
        text = raw.tobytes().decode("utf-8") if raw.dtype == np.uint8 else str(raw[()])
        source = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, IndexError, ValueError) as e:
        raise DataError(f"is not UTF-8 JSON text: {e}", field="source_json") from None
    if not isinstance(source, dict):
        raise DataError(f"must hold a JSON object, got {type(source).__name__}", field="source_json")
    return source


def _npz_trajectory(t: np.ndarray, q: np.ndarray, p: np.ndarray, names: tuple[str, str, str]) -> Trajectory:
    try:
        return Trajectory.from_arrays(t, q, p)
    except DataError as e:
        raise _remap(e, dict(zip(("t", "q", "p"), names, strict=True))) from None


def dataset_from_npz_bytes(data: bytes, *, max_points: int | None = None,
                           max_bytes: int | None = DEFAULT_NPZ_MAX_BYTES) -> TrajectoryDataset:
    """Parse and validate NPZ bytes (see the module docstring); never unpickles.

    Before any array is loaded, its ``.npy`` header is checked: `DataLimitError` (a `DataError`
    naming the array) when the archive declares more than ``max_points`` time points or more than
    ``max_bytes`` uncompressed bytes in the arrays it would read (``None``: no such limit).
    """
    if data[: len(np.lib.format.MAGIC_PREFIX)] == np.lib.format.MAGIC_PREFIX:  # not loaded: it could be huge
        raise DataError("is a single .npy array; expected an NPZ archive with keys t, q, p", field="file")
    _check_npz_limits(_npz_headers(data), max_points, max_bytes)
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"is not a readable NPZ archive: {e}", field="file") from None
    if not hasattr(npz, "files"):  # a bare .npy array, not an archive
        raise DataError("is a single .npy array; expected an NPZ archive with keys t, q, p", field="file")
    with npz:
        stacked = any(k in npz.files for k in ("t", "q", "p"))
        if stacked and any(re.fullmatch(r"[tqp]_\d+", k) for k in npz.files):
            raise DataError("mixes stacked keys (t, q, p) with per-trajectory keys (t_0, ...)", field="t_0")
        trajectories = []
        if stacked:
            q, p = _npz_array(npz, "q", (3,)), _npz_array(npz, "p", (3,))
            t = _npz_array(npz, "t", (1, 2))
            if p.shape != q.shape:
                raise DataError(f"has shape {p.shape} but q has shape {q.shape}; they must match", field="p")
            if t.shape not in (q.shape[:2], q.shape[1:2]):
                raise DataError(
                    f"has shape {t.shape}; with q of shape {q.shape} it must be "
                    f"{q.shape[:2]} or ({q.shape[1]},)",
                    field="t",
                )
            for i in range(q.shape[0]):
                ti, tname = (t[i], f"t[{i}]") if t.ndim == 2 else (t, "t")
                trajectories.append(_npz_trajectory(ti, q[i], p[i], (tname, f"q[{i}]", f"p[{i}]")))
        else:
            if "t_0" not in npz.files:
                ragged = any(re.fullmatch(r"[qp]_\d+", k) for k in npz.files)
                raise DataError(
                    f"missing: expected stacked keys t, q, p or per-trajectory keys t_0, q_0, p_0; "
                    f"found {sorted(npz.files)}",
                    field="t_0" if ragged else "t",
                )
            i = 0
            while f"t_{i}" in npz.files:
                names = (f"t_{i}", f"q_{i}", f"p_{i}")
                arrays = [_npz_array(npz, k, (nd,)) for k, nd in zip(names, (1, 2, 2), strict=True)]
                trajectories.append(_npz_trajectory(*arrays, names))
                i += 1
            stray = sorted(k for k in npz.files if re.fullmatch(r"[qp]_\d+", k) and int(k[2:]) >= i)
            if stray:
                raise DataError(
                    f"missing, but {stray[0]} is present; per-trajectory keys t_i, q_i, p_i must be "
                    "numbered from 0 without gaps",
                    field=f"t_{i}",
                )
        source = _npz_source(npz)
    try:
        return TrajectoryDataset(trajectories, source)
    except DataError as e:  # dof mismatch between trajectories: name the NPZ key
        m = re.fullmatch(r"trajectories\[(\d+)\]\.q", e.field or "")
        raise _remap(e, {e.field or "": f"q_{m.group(1)}" if m else "q"}) from None


# -- files -----------------------------------------------------------------------------------------
def _suffix(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(
            f"unknown file type {suffix or '(none)'!r} of {str(path)!r}; use one of {', '.join(SUFFIXES)}",
            field="path",
        )
    return suffix


def dataset_from_bytes(data: bytes, filename: str, *, max_points: int | None = None,
                       max_bytes: int | None = DEFAULT_NPZ_MAX_BYTES,
                       max_trajectories: int | None = None) -> TrajectoryDataset:
    """Parse an uploaded file's bytes; the format comes from ``filename``'s suffix.

    ``max_points``/``max_bytes`` bound what an NPZ archive may declare (see `dataset_from_npz_bytes`);
    CSV stops reading past ``max_points`` rows or ``max_trajectories`` ids; JSON is bounded by
    ``len(data)`` only (it is parsed whole).
    """
    suffix = _suffix(filename)
    if suffix == ".npz":
        return dataset_from_npz_bytes(data, max_points=max_points, max_bytes=max_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"is not UTF-8 text: {e}", field="file") from None
    if suffix == ".json":
        return _dataset_from_json_text(text)
    return dataset_from_csv_text(text, max_points=max_points, max_trajectories=max_trajectories)


def save_dataset(ds: TrajectoryDataset, path: str | Path) -> Path:
    """Write ``ds`` in the format of ``path``'s suffix (.json, .csv or .npz), atomically; returns the path."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".npz":
        data = dataset_to_npz_bytes(ds)
    elif suffix == ".json":
        data = json.dumps(dataset_to_json(ds), default=_json_default).encode("utf-8")
    else:
        data = dataset_to_csv_text(ds).encode("utf-8")
    return write_bytes_atomically(path, data)


def load_dataset(path: str | Path, *, max_points: int | None = None,
                 max_bytes: int | None = DEFAULT_NPZ_MAX_BYTES) -> TrajectoryDataset:
    """Read and validate a dataset file; the format comes from the suffix (limits: `dataset_from_bytes`)."""
    _suffix(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot be read: {e.strerror or e}", field="path") from None
    return dataset_from_bytes(data, str(path), max_points=max_points, max_bytes=max_bytes)
