"""Datasets: generate from a built-in system or upload (JSON body, CSV/NPZ/JSON file); list and read.

Validation and simulation happen before the write transaction opens (so the writer lock is never
held during minutes of simulation), and the row is inserted in one transaction: a rejected upload
leaves nothing behind.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Form, Query, Request, Response, UploadFile
from sqlalchemy import select

from app import datasets
from app.api.deps import READ_AUTH, WRITE_AUTH, DbDep, PageDep, SessionDep, SettingsDep, paginate
from app.db.models import Dataset
from app.errors import TooLarge, Unprocessable
from app.schemas import (
    DATASET_EXAMPLES,
    DatasetCreate,
    DatasetGenerate,
    DatasetPublic,
    DatasetUpload,
    Page,
    TrajectoriesPublic,
)
from app.settings import Settings
from hinn_core import ConfigError, DataError, TrajectoryDataset, make_system

router = APIRouter(prefix="/datasets", tags=["datasets"])

ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "over a size limit (the problem names it)"},
    422: {"description": "invalid data or options (the problem names the field)"},
}


def check_generate_limits(spec: DatasetGenerate, settings: Settings, prefix: str = "") -> None:
    """413 before simulating anything when a generation spec would exceed the dataset limits."""
    if spec.n_trajectories > settings.max_trajectories:
        raise TooLarge(f"{spec.n_trajectories} trajectories exceed the limit of {settings.max_trajectories} "
                       "per dataset (HINN_MAX_TRAJECTORIES)", field=f"{prefix}n_trajectories")
    steps = spec.t_end / spec.dt
    # float arithmetic: round() of a huge ratio is an int too large for '.6g' formatting (a 500 before)
    points = spec.n_trajectories * (max(1.0, float(round(steps))) + 1.0) if math.isfinite(steps) else math.inf
    if points > settings.max_dataset_points:
        raise TooLarge(f"n_trajectories × (t_end/dt + 1) = {points:.6g} time points exceed the limit of "
                       f"{settings.max_dataset_points} per dataset (HINN_MAX_DATASET_POINTS); raise dt or "
                       "lower t_end or n_trajectories", field=f"{prefix}dt")


def generate(spec: DatasetGenerate, settings: Settings, prefix: str = "") -> TrajectoryDataset:
    """Simulate a dataset from a validated spec; errors name fields under ``prefix`` (``dataset.``)."""
    check_generate_limits(spec, settings, prefix)
    try:
        make_system(spec.system, spec.parameters)  # bad parameters: 422 before any simulation
        return datasets.generate(spec.model_dump(exclude={"name"}), settings)
    except (DataError, ConfigError) as exc:
        raise type(exc)(exc.problem, field=f"{prefix}{exc.field}" if exc.field else None) from None


def _public(row: Dataset) -> DatasetPublic:
    return DatasetPublic.model_validate(row)


def _created(request: Request, response: Response, row: Dataset) -> DatasetPublic:
    response.headers["Location"] = request.app.url_path_for("get_dataset", dataset_id=row.id)
    return _public(row)


@router.post("", name="create_dataset", status_code=201, response_model=DatasetPublic, dependencies=WRITE_AUTH,
             responses=ERRORS, summary="Generate a dataset from a built-in system, or upload trajectories as JSON")
def create_dataset(body: Annotated[DatasetCreate, Body(openapi_examples=DATASET_EXAMPLES)], request: Request,
                   response: Response, db: DbDep, settings: SettingsDep) -> DatasetPublic:
    """Presence of ``trajectories`` makes the body an upload; otherwise it is a generation spec."""
    if isinstance(body, DatasetUpload):
        n_points = sum(len(tr.t) for tr in body.trajectories)
        datasets.check_limits(len(body.trajectories), n_points, settings)
        # the validated lists themselves, not a model_dump() copy of them (a third tree of Python floats)
        ds = TrajectoryDataset.from_lists([{"t": tr.t, "q": tr.q, "p": tr.p} for tr in body.trajectories],
                                          source={"kind": "upload", "format": "json-body"})
    else:
        ds = generate(body, settings)  # its source is the lineage: system, parameters, seed, ...
    with db.session(write=True) as s:
        row = datasets.store(s, body.name, ds, settings)
        return _created(request, response, row)


@router.post("/upload", name="upload_dataset", status_code=201, response_model=DatasetPublic,
             dependencies=WRITE_AUTH, responses=ERRORS,
             summary="Upload a trajectory file (.csv, .npz or .json; the format comes from the file name)")
def upload_dataset(request: Request, response: Response, db: DbDep, settings: SettingsDep,
                   file: Annotated[UploadFile, File(description="trajectories as .csv, .npz or .json")],
                   name: Annotated[str | None, Form(max_length=200, description="default: the file name")] = None,
                   ) -> DatasetPublic:
    filename = file.filename or ""
    if not filename:
        raise Unprocessable("needs a file name ending in .csv, .npz or .json", field="file")
    data = file.file.read()
    try:
        ds = datasets.parse_upload(data, filename, settings)  # 413 when an NPZ declares too much
    except DataError as exc:
        if exc.field == "path":  # the suffix: the client's name for it is the file
            raise DataError(exc.problem, field="file") from None
        raise
    # a file may declare where it came from; that claim is kept but not trusted as lineage (no H_true)
    ds.source = {"kind": "upload", "format": Path(filename).suffix.lower().lstrip("."), "filename": filename[:200],
                 "declared": dict(ds.source)}  # (datasets.store takes the system column from ds.source)
    with db.session(write=True) as s:
        row = datasets.store(s, name or Path(filename).stem[:200] or "upload", ds, settings)
        return _created(request, response, row)


@router.get("", name="list_datasets", response_model=Page[DatasetPublic], dependencies=READ_AUTH,
            summary="Datasets, newest first")
def list_datasets(s: SessionDep, page: PageDep,
                  name: Annotated[str | None, Query(max_length=200, description="only this name")] = None,
                  ) -> Page[DatasetPublic]:
    stmt = select(Dataset)
    if name is not None:
        stmt = stmt.where(Dataset.name == name)
    rows, next_cursor = paginate(s, stmt, Dataset, page)
    return Page[DatasetPublic](items=[_public(r) for r in rows], next_cursor=next_cursor)


@router.get("/{dataset_id}", name="get_dataset", response_model=DatasetPublic, dependencies=READ_AUTH,
            responses={404: {"description": "no such dataset"}})
def get_dataset(dataset_id: str, s: SessionDep) -> DatasetPublic:
    return _public(datasets.get(s, dataset_id))


@router.get("/{dataset_id}/trajectories", name="get_dataset_trajectories", response_model=TrajectoriesPublic,
            dependencies=READ_AUTH, responses={404: {"description": "no such dataset"}},
            summary="The stored trajectories themselves, for inspection")
def get_dataset_trajectories(dataset_id: str, s: SessionDep) -> Response:
    ds = datasets.load(s, dataset_id)
    body = {"dataset_id": dataset_id, "trajectories": ds.to_lists()}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")
