"""Training jobs: `POST /train` queues one; list, read, follow (SSE), cancel, plot the loss curve.

The stored ``request`` is the fully resolved request — every default filled in, the integrator
concrete, an inline dataset replaced by the id of the dataset stored for it (its spec is kept as
``dataset_spec``) — so the worker and anyone reading the job see exactly what is trained, and an
``Idempotency-Key`` replay is compared on that.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from app import datasets, jobs
from app.api.datasets import generate
from app.api.deps import READ_AUTH, WRITE_AUTH, DbDep, PageDep, SessionDep, SettingsDep, paginate
from app.db.models import Job, JobStatus
from app.db.session import Database
from app.errors import Unprocessable
from app.schemas import TRAIN_EXAMPLES, JobPublic, JobStatusName, Page, TrainRequest
from app.settings import Settings
from hinn_core import ModelSpec, TrainConfig, TrajectoryDataset
from hinn_core.plotting import loss_curve_png
from hinn_core.training import check_options

router = APIRouter(tags=["jobs"])

EVENTS_POLL_SECONDS = 0.5
EVENTS_KEEPALIVE_SECONDS = 15.0
PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}


def resolve_request(body: TrainRequest, settings: Settings, dataset_id: str | None) -> dict[str, Any]:
    """The request with every default filled in, validated by hinn_core's own ModelSpec/TrainConfig."""
    if body.training.epochs > settings.max_epochs:
        raise Unprocessable(f"{body.training.epochs} epochs exceed the limit of {settings.max_epochs} "
                            "(HINN_MAX_EPOCHS)", field="training.epochs")
    model = body.model.model_dump()
    spec = ModelSpec(dof=1, integrator=body.integrator, **model)  # dof comes from the data at training time
    model["activation"] = spec.activation  # resolved like the integrator: the stored request is complete
    config = TrainConfig(**body.training.model_dump())
    check_options(spec, config)  # before anything is stored: a job that could only fail is not queued
    training = config.to_dict()
    request: dict[str, Any] = {"name": body.name, "dataset_id": dataset_id, "model": model,
                               "integrator": spec.integrator, "training": training,
                               "test_fraction": body.test_fraction}
    if body.dataset is not None:
        request["dataset_spec"] = body.dataset.model_dump()
    return request


def public(job: Job) -> JobPublic:
    return JobPublic.model_validate(job)


def _job_by_key(db: Database, key: str | None) -> Job | None:
    if key is None:
        return None
    with db.session() as s:
        return s.scalar(select(Job).where(Job.idempotency_key == key))


@router.post("/train", name="train", status_code=202, response_model=JobPublic, dependencies=WRITE_AUTH,
             responses={404: {"description": "unknown dataset_id"},
                        413: {"description": "the inline dataset is over a size limit"},
                        422: {"description": "invalid options, or an Idempotency-Key reused with another body"}},
             summary="Queue a training job (202; follow it at Location)")
def train(
    body: Annotated[TrainRequest, Body(openapi_examples=TRAIN_EXAMPLES)], request: Request, response: Response,
    db: DbDep, settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=200,
        description="retries with the same key and body return the same job")] = None,
) -> JobPublic:
    if (body.dataset_id is None) == (body.dataset is None):
        raise Unprocessable("give exactly one of dataset_id (a stored dataset) or dataset (a generation spec)",
                            field="dataset_id")
    resolve_request(body, settings, body.dataset_id)  # fail fast, before simulating a dataset
    dataset_id = body.dataset_id
    generated: TrajectoryDataset | None = None
    if body.dataset is not None:
        replayed = _job_by_key(db, idempotency_key)
        if replayed is not None:  # a retry: compare against the job's own dataset, simulate nothing
            dataset_id = replayed.dataset_id
        else:
            generated = generate(body.dataset, settings, prefix="dataset.")
    for attempt in range(2):
        try:
            with db.session(write=True) as s:
                if generated is not None and body.dataset is not None:
                    dataset_id = datasets.store(s, body.dataset.name, generated, settings).id
                else:
                    assert dataset_id is not None
                    datasets.get(s, dataset_id)
                job, created = jobs.submit(s, name=body.name, request=resolve_request(body, settings, dataset_id),
                                           dataset_id=dataset_id, max_attempts=settings.max_attempts,
                                           idempotency_key=idempotency_key)
                out = public(job)
            break
        except IntegrityError:
            # a concurrent request with the same key inserted first: replay against its job
            replayed = _job_by_key(db, idempotency_key)
            if attempt or replayed is None:
                raise
            if generated is not None:
                dataset_id, generated = replayed.dataset_id, None
    response.headers["Location"] = request.app.url_path_for("get_job", job_id=out.id)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return out


@router.get("/jobs", name="list_jobs", response_model=Page[JobPublic], dependencies=READ_AUTH,
            summary="Jobs, newest first")
def list_jobs(s: SessionDep, page: PageDep,
              status: Annotated[JobStatusName | None, Query(description="only jobs in this state")] = None,
              ) -> Page[JobPublic]:
    stmt = select(Job)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    rows, next_cursor = paginate(s, stmt, Job, page)
    return Page[JobPublic](items=[public(j) for j in rows], next_cursor=next_cursor)


@router.get("/jobs/{job_id}", name="get_job", response_model=JobPublic, dependencies=READ_AUTH,
            responses={404: {"description": "no such job"}})
def get_job(job_id: str, s: SessionDep) -> JobPublic:
    return public(jobs.get(s, job_id))


def _snapshot(db: Database, job_id: str) -> JobPublic:
    with db.session() as s:
        return public(jobs.get(s, job_id))


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


async def _job_events(request: Request, db: Database, job: JobPublic) -> AsyncIterator[str]:
    """``progress`` whenever the job changed, ``end`` once it is terminal; comments keep proxies awake."""
    last, quiet = "", 0.0
    while True:
        text = job.model_dump_json()
        if text != last:
            yield _sse("progress", text)
            last, quiet = text, 0.0
        if JobStatus(job.status).terminal:
            yield _sse("end", json.dumps({"id": job.id, "status": job.status, "model_id": job.model_id}))
            return
        await anyio.sleep(EVENTS_POLL_SECONDS)
        quiet += EVENTS_POLL_SECONDS
        if quiet >= EVENTS_KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            quiet = 0.0
        if await request.is_disconnected():
            return
        job = await run_in_threadpool(_snapshot, db, job.id)


@router.get("/jobs/{job_id}/events", name="job_events", dependencies=READ_AUTH, response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: progress` (the job as JSON) on each change, then `event: end`"},
                       404: {"description": "no such job"}},
            summary="Follow a job as Server-Sent Events")
async def job_events(job_id: str, request: Request, db: DbDep) -> StreamingResponse:
    first = await run_in_threadpool(_snapshot, db, job_id)  # a 404 problem, not an empty stream
    return StreamingResponse(_job_events(request, db, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/jobs/{job_id}/cancel", name="cancel_job", status_code=202, response_model=JobPublic,
             dependencies=WRITE_AUTH,
             responses={404: {"description": "no such job"}, 409: {"description": "the job already finished"}},
             summary="Cancel a queued job now, or ask the worker to stop a running one")
def cancel_job(job_id: str, db: DbDep) -> JobPublic:
    with db.session(write=True) as s:
        return public(jobs.request_cancel(s, job_id))


@router.get("/jobs/{job_id}/plot", name="job_plot", dependencies=READ_AUTH, response_class=Response,
            responses={**PNG, 404: {"description": "no such job"}}, summary="Loss curve (PNG)")
def job_plot(job_id: str, s: SessionDep) -> Response:
    job = jobs.get(s, job_id)
    history = s.scalar(select(Job.history).where(Job.id == job_id)) or []
    png = loss_curve_png(history, title=f"{job.name} — job {job.id[:8]} ({job.status})")
    return Response(png, media_type="image/png")
