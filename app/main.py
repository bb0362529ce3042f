"""The FastAPI application: `create_app(settings)` wires routers, problems, middleware and the lifespan.

Nothing is built at import time. The lifespan opens the database, migrates it (or refuses to start
when ``auto_migrate`` is off and the schema is not at head), puts the database, settings and the
model cache on ``app.state``, starts the in-process workers and stops them on shutdown. Each app
has its own metrics registry (`app.metrics`); the outermost middleware gives every request an id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import hinn_core
from app import metrics, nul_check, problems
from app.api import datasets, health, jobs, models, predict, systems
from app.db import migrate
from app.db.session import Database
from app.registry import ModelCache
from app.settings import Settings, get_settings
from app.worker import WorkerPool

DESCRIPTION = """\
Learn Hamiltonian dynamics from trajectories and serve the learned models.

**Walk-through** (each request body below has a ready example):

1. `POST /datasets` — generate trajectories of a built-in system (`GET /systems`) or upload your own
   (`POST /datasets/upload` for CSV/NPZ/JSON files).
2. `POST /train` — queue a training job (202); follow it with `GET /jobs/{id}` or `GET /jobs/{id}/events`.
3. `POST /predict` — roll the trained model out from initial conditions (`/predict/plot` for a PNG).

Errors are RFC 9457 `application/problem+json` documents; `errors[].field` names the offending input.
When `HINN_API_KEYS` is set, POST and DELETE need `Authorization: Bearer <key>`.
"""


class SchemaNotAtHead(RuntimeError):
    """The database schema is behind (or ahead of) this code and migrating was not allowed."""


def is_json_media_type(content_type: bytes) -> bool:
    """``application/json`` or a ``+json`` type (parameters such as ``charset`` ignored)."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


class BodySizeLimit:
    """Pure ASGI: reject bodies over ``max_bytes`` (JSON bodies: over ``max_json_bytes``) with a 413
    problem, by Content-Length or while streaming.

    A declared length over the limit is refused before a byte is read; a chunked or lying client is
    stopped when the running total passes the limit (raised as an `HTTPProblem`, which FastAPI's body
    parsing re-raises unchanged, so the normal problem handler answers).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_json_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_bytes = min(max_bytes, max_json_bytes if max_json_bytes is not None else max_bytes)

    def _too_large(self, size: int | None, json_body: bool) -> problems.HTTPProblem:
        got = f"{size} bytes" if size is not None else "more bytes"
        if json_body and self.max_json_bytes < self.max_bytes:
            return problems.HTTPProblem(
                413, f"the JSON request body ({got}) exceeds the limit of {self.max_json_bytes} bytes for JSON "
                     "(HINN_MAX_JSON_BODY_BYTES; parsed JSON takes ~10× its size in memory): send large datasets "
                     "as an NPZ or CSV file to POST /datasets/upload", field="body")
        return problems.HTTPProblem(413, f"the request body ({got}) exceeds the limit of {self.max_bytes} bytes "
                                         "(HINN_MAX_BODY_BYTES)", field="body")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        json_body = is_json_media_type(headers.get(b"content-type", b""))
        limit = self.max_json_bytes if json_body else self.max_bytes
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size: int | None = int(declared)
            except ValueError:
                size = None
            if size is not None and size > limit:
                exc = self._too_large(size, json_body)
                response = problems.problem(413, exc.detail, instance=scope.get("path", ""), field="body",
                                            headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        total = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    raise self._too_large(None, json_body)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except problems.HTTPProblem as exc:  # read outside FastAPI's body parsing (e.g. a streaming route)
            if started or exc.status_code != 413:
                raise
            response = problems.problem(413, exc.detail, instance=scope.get("path", ""), field="body")
            await response(scope, receive, send)


def create_app(settings: Settings | None = None, *, start_workers: bool | None = None) -> FastAPI:
    """The API for ``settings`` (default: from HINN_* variables); workers start when ``settings.workers`` > 0."""
    settings = settings or get_settings()
    run_workers = settings.workers > 0 if start_workers is None else start_workers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url)
        pool: WorkerPool | None = None
        try:
            if settings.auto_migrate:
                migrate.upgrade(db.engine)
            elif not migrate.is_at_head(db.engine):
                raise SchemaNotAtHead(
                    f"database schema is at {migrate.current_revision(db.engine)}, not at {migrate.head_revision()}; "
                    "run 'hinn db upgrade' (or set HINN_AUTO_MIGRATE=true)")
            app.state.db = db
            app.state.model_cache = ModelCache(settings.model_cache_size)
            if run_workers and settings.workers > 0:
                pool = WorkerPool(db, settings, settings.workers)
                pool.start()
            yield
        finally:
            if pool is not None:
                pool.shutdown()
            db.dispose()

    app = FastAPI(title="hinn", description=DESCRIPTION, version=hinn_core.__version__, lifespan=lifespan,
                  docs_url="/docs", redoc_url="/redoc", openapi_tags=_TAGS,
                  generate_unique_id_function=_operation_id,
                  dependencies=[Depends(nul_check.reject_nul)])  # first of every route's dependencies
    app.state.settings = settings
    app.state.metrics = metrics.Metrics(lambda: getattr(app.state, "db", None))
    problems.install(app)
    _document_problems(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, max_json_bytes=settings.max_json_body_bytes)
    if settings.cors_origins:  # added last: outermost, so even 413s carry CORS headers
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "If-None-Match"],
                           expose_headers=["Location", "ETag", "Idempotent-Replayed", metrics.REQUEST_ID_HEADER])
    # outermost of all: its latency and status cover the 413s and CORS answers too
    app.add_middleware(metrics.ObservabilityMiddleware, metrics=app.state.metrics)
    for module in (health, systems, datasets, jobs, models, predict, metrics):
        app.include_router(module.router)
    return app


def _document_problems(app: FastAPI) -> None:
    """Build the OpenAPI schema once, with error responses documented as problems."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.document_problems(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operation_id(route: APIRoute) -> str:
    """OpenAPI operationId = the route's name (``predict``, ``get_job``): stable for generated clients."""
    return route.name


_TAGS: list[dict[str, Any]] = [
    {"name": "datasets", "description": "Trajectory data: generate from a built-in system or upload."},
    {"name": "jobs", "description": "Training jobs: queue, follow, cancel."},
    {"name": "models", "description": "Registered model versions and their files."},
    {"name": "predict", "description": "Roll a model out from initial conditions."},
    {"name": "systems", "description": "Built-in Hamiltonian systems."},
    {"name": "health", "description": "Liveness and readiness probes."},
]
