"""Liveness (`GET /health`) and readiness (`GET /ready`: database reachable, schema at head)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import DbDep
from app.db import migrate
from app.problems import problem
from app.schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/health", name="health", response_model=Health, summary="Liveness: the process answers")
def health() -> Health:
    return Health(status="ok")


@router.get("/ready", name="ready", response_model=Ready,
            responses={503: {"description": "database unreachable or schema not at head"}},
            summary="Readiness: the database answers and its schema is at the newest migration")
def ready(request: Request, db: DbDep) -> Ready | JSONResponse:
    path = request.url.path
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        revision = migrate.current_revision(db.engine)
    except Exception as exc:  # any driver error: not ready, and say so without internals
        return problem(503, f"the database does not answer ({type(exc).__name__})", instance=path,
                       field="database")
    head = migrate.head_revision()
    if revision != head:
        return problem(503, f"the schema is at {revision or 'no revision'}, not at {head}; run 'hinn db upgrade'",
                       instance=path, field="revision")
    return Ready(status="ready", database="ok", revision=revision, head=head, fast_path=fast_path_state())


def fast_path_state() -> str:
    from hinn_core import fastpath

    if not fastpath.available():
        return "unavailable"
    return "ready" if fastpath.is_warm() else "warming" if fastpath.is_warming() else "cold"
