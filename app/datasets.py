"""Dataset storage: generate from a built-in system or accept uploads; one compressed NPZ blob each.

Validation happens entirely before anything is written (hinn_core validates the arrays), and the
row is inserted in one transaction, so a failed upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Dataset
from app.errors import NotFound, TooLarge
from app.ids import new_id
from app.settings import Settings
from hinn_core.data import TrajectoryDataset, generate_dataset
from hinn_core.dataio import dataset_from_bytes, dataset_from_npz_bytes, dataset_to_npz_bytes
from hinn_core.errors import DataLimitError

#: uncompressed array bytes an uploaded NPZ may declare, per byte of HINN_MAX_BODY_BYTES (the body
#: limit counts compressed bytes; zeros deflate ~1000:1, real float data barely compress)
NPZ_BYTES_PER_BODY_BYTE = 16


def check_limits(ds_n_trajectories: int, n_points: int, settings: Settings) -> None:
    """413 naming the bound when a dataset exceeds the configured size limits."""
    if ds_n_trajectories > settings.max_trajectories:
        raise TooLarge(f"{ds_n_trajectories} trajectories exceed the limit of {settings.max_trajectories} "
                       "per dataset (HINN_MAX_TRAJECTORIES)", field="trajectories")
    if n_points > settings.max_dataset_points:
        raise TooLarge(f"{n_points} time points exceed the limit of {settings.max_dataset_points} per dataset "
                       "(HINN_MAX_DATASET_POINTS)", field="trajectories")


def parse_upload(data: bytes, filename: str, settings: Settings) -> TrajectoryDataset:
    """Parse an uploaded file; an NPZ that declares more than the limits is refused (413 naming the
    bound and the array) before any of its arrays is decompressed, a CSV as soon as it has read
    more rows or trajectory ids than the limits allow, a JSON file over HINN_MAX_JSON_BODY_BYTES
    before it is parsed (parsed JSON takes ~10× its size)."""
    if filename.lower().endswith(".json") and len(data) > settings.max_json_body_bytes:
        raise TooLarge(f"the JSON file ({len(data)} bytes) exceeds the limit of {settings.max_json_body_bytes} bytes "
                       "for JSON (HINN_MAX_JSON_BODY_BYTES; parsed JSON takes ~10× its size in memory): send large "
                       "datasets as NPZ or CSV", field="file")
    try:
        return dataset_from_bytes(data, filename, max_points=settings.max_dataset_points,
                                  max_bytes=NPZ_BYTES_PER_BODY_BYTE * settings.max_body_bytes,
                                  max_trajectories=settings.max_trajectories)
    except DataLimitError as exc:  # hinn_core's message names the limit; add the setting behind it
        if exc.bound == "max_trajectories":  # a CSV, at the row that brings in one id too many
            raise TooLarge(f"{exc.field} {exc.problem} per dataset ({_LIMIT_SETTINGS[exc.bound]})",
                           field="trajectories") from None
        raise TooLarge(f"{exc.problem} ({_LIMIT_SETTINGS[exc.bound]})", field=exc.field) from None


#: the setting behind each `DataLimitError.bound` that `parse_upload` passes
_LIMIT_SETTINGS = {"max_points": "HINN_MAX_DATASET_POINTS", "max_trajectories": "HINN_MAX_TRAJECTORIES",
                   "max_bytes": f"{NPZ_BYTES_PER_BODY_BYTE} × HINN_MAX_BODY_BYTES"}


def generate(spec: dict[str, Any], settings: Settings) -> TrajectoryDataset:
    """Simulate a dataset from a generation spec (system, n_trajectories, t_end, dt, ...)."""
    n = int(spec["n_trajectories"])
    ratio = float(spec["t_end"]) / float(spec["dt"])
    if not math.isfinite(ratio) or ratio > settings.max_dataset_points:
        raise TooLarge(f"t_end/dt = {ratio:g} steps per trajectory exceeds the limit of {settings.max_dataset_points} "
                       "points per dataset (HINN_MAX_DATASET_POINTS)", field="dt")
    steps = max(1, round(ratio))
    check_limits(n, n * (steps + 1), settings)
    return generate_dataset(
        spec["system"], n, float(spec["t_end"]), float(spec["dt"]), dt_jitter=float(spec.get("dt_jitter", 0.0)),
        noise_std=float(spec.get("noise_std", 0.0)), seed=int(spec.get("seed", 0)),
        parameters=spec.get("parameters") or None,
    )


def store(s: Session, name: str, ds: TrajectoryDataset, settings: Settings, source: dict[str, Any] | None = None
          ) -> Dataset:
    """Insert a validated dataset (the caller's transaction commits it)."""
    check_limits(len(ds), ds.n_points, settings)
    blob = dataset_to_npz_bytes(ds)
    source = source if source is not None else dict(ds.source)
    row = Dataset(
        id=new_id(), name=name, source=source,
        system=source.get("system"), n_trajectories=len(ds), n_points=ds.n_points, dof=ds.dof,
        time_stats=ds.time_stats(), data=blob, data_sha256=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob),
    )
    s.add(row)
    s.flush()
    return row


def get(s: Session, dataset_id: str) -> Dataset:
    row = s.get(Dataset, dataset_id)
    if row is None:
        raise NotFound(f"no dataset with id '{dataset_id}'", field="dataset_id")
    return row


def load(s: Session, dataset_id: str) -> TrajectoryDataset:
    """The stored trajectories (blob read and validated again: storage is never trusted blindly)."""
    row = get(s, dataset_id)
    blob = s.scalar(select(Dataset.data).where(Dataset.id == dataset_id))
    assert blob is not None
    ds = dataset_from_npz_bytes(blob, max_bytes=None)  # written by `store`, within the limits then
    ds.source = dict(row.source)
    return ds
