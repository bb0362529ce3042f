"""RFC 9457 problem details (``application/problem+json``) for every error the API returns.

Body: ``{"type", "title", "status", "detail", "instance", "errors": [{"field", "message"}]}``.
``type`` is ``https://hinn.dev/problems/<slug>`` for the service's own problems and ``about:blank``
for plain HTTP errors (unknown route, wrong method). Whenever one input is to blame, its name is in
``errors[].field`` *and* in ``detail``, so both a program and a person reading the message find it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError as DatabaseDataError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import ServiceError
from app.schemas import UNION_TAGS, Problem
from hinn_core.errors import ArtifactError, ConfigError, DataError, HinnError, IntegrationError

log = logging.getLogger("hinn.api")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://hinn.dev/problems/"

SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    406: "not-acceptable",
    409: "conflict",
    410: "gone",
    413: "request-too-large",
    422: "validation-error",
    500: "internal-error",
    503: "not-ready",
    507: "storage-full",
}
#: how SQLite (SQLITE_FULL) and PostgreSQL (SQLSTATE 53100, ENOSPC) say that a write found no space
DISK_FULL_MARKERS = ("database or disk is full", "no space left on device", "could not extend file", "disk full")


class HTTPProblem(StarletteHTTPException):
    """An HTTP error raised below the routing layer (middleware, body parsing) that names a field.

    FastAPI re-raises `HTTPException` subclasses from body parsing unchanged, so a size limit hit
    while the body is read reaches the handler as itself instead of a generic 400.
    """

    def __init__(self, status: int, detail: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, detail, headers)
        self.field = field


#: one title per problem type (RFC 9457 §3.1.3: a title does not change from occurrence to occurrence;
#: what differs goes into ``detail``)
TITLES = {
    "bad-request": "Bad request",
    "unauthorized": "Unauthorized",
    "forbidden": "Forbidden",
    "not-found": "Not found",
    "not-acceptable": "Not acceptable",
    "conflict": "Conflict",
    "gone": "Gone",
    "request-too-large": "Request too large",
    "validation-error": "Validation error",
    "internal-error": "Internal server error",
    "not-ready": "Service unavailable",
    "storage-full": "Insufficient storage",
    "artifact-integrity": "Artifact integrity error",
    "integration-failed": "Integration failed",
    "error": "Error",
}


def problem_type(status: int) -> str:
    return PROBLEM_BASE + SLUGS.get(status, "error")


def title_of(type_: str, status: int) -> str:
    """The title of a problem type: ours from `TITLES`; ``about:blank``'s is the status phrase (RFC 9457 §4.2.1)."""
    if type_.startswith(PROBLEM_BASE):
        return TITLES[type_.removeprefix(PROBLEM_BASE)]
    return title_for(status)


def title_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def with_field(field: str | None, detail: str) -> str:
    """``detail`` prefixed by ``field`` unless it already starts with it."""
    if not field or detail.startswith(field):
        return detail
    return f"{field}: {detail}"


def problem_body(status: int, detail: str, *, instance: str, errors: Sequence[dict[str, Any]] = (),
                 type_: str | None = None) -> dict[str, Any]:
    kind = type_ or problem_type(status)
    return {
        "type": kind,
        "title": title_of(kind, status),
        "status": status,
        "detail": detail,
        "instance": instance,
        "errors": list(errors),
    }


def problem(status: int, detail: str, *, instance: str, field: str | None = None,
            type_: str | None = None, errors: Sequence[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    """A problem response; with ``field`` (and no ``errors``) one error entry names it."""
    if errors is None:
        errors = [{"field": field, "message": detail}] if field else []
    body = problem_body(status, with_field(field, detail), instance=instance, errors=errors, type_=type_)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# -- validation error locations ----------------------------------------------------------------------
def _header_name(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def field_from_loc(loc: Iterable[Any]) -> str:
    """``('body', 'training', 'epochs')`` → ``training.epochs``; ``('body', 'ics', 2, 'q')`` → ``ics[2].q``.

    The source prefix (body/query/path/header/cookie) is dropped; header names come back in their
    canonical spelling (``Idempotency-Key``).
    """
    parts = list(loc)
    source = parts.pop(0) if parts and parts[0] in ("body", "query", "path", "header", "cookie") else None
    parts = [p for p in parts if not (isinstance(p, str) and p in UNION_TAGS)]
    if source == "header" and parts:
        return _header_name(str(parts[0]))
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or (source or "body")


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":  # loc is ('body', <char offset>)
            errors.append({"field": "body", "message": f"{err.get('msg', 'invalid JSON')}"
                           f" ({err.get('ctx', {}).get('error', 'parse error')})", "type": "json_invalid"})
            continue
        errors.append({"field": field_from_loc(loc), "message": str(err.get("msg", "invalid value")),
                       "type": str(err.get("type", "value_error"))})
    return errors


# -- handlers ------------------------------------------------------------------------------------------
def _instance(request: Request) -> str:
    return request.url.path


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return problem(exc.status, exc.detail, instance=_instance(request), field=exc.field,
                   headers=getattr(exc, "headers", None))


async def _hinn_error(request: Request, exc: Exception) -> JSONResponse:
    """hinn_core's own errors: bad data/config are the caller's (422); a bad stored artifact is ours (500)."""
    if isinstance(exc, ArtifactError):
        log.error("artifact integrity problem at %s: %s", request.url.path, exc)
        return problem(500, f"a stored model artifact failed its integrity check: {exc}",
                       instance=_instance(request), type_=PROBLEM_BASE + "artifact-integrity")
    if isinstance(exc, (DataError, ConfigError)):
        return problem(422, exc.problem, instance=_instance(request), field=exc.field)
    if isinstance(exc, IntegrationError):
        return problem(422, f"the rollout failed: {exc}", instance=_instance(request),
                       type_=PROBLEM_BASE + "integration-failed")
    return problem(422, str(exc), instance=_instance(request))


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """The database had no space for a write (507) or did not answer (503). Either way the request's
    transaction was rolled back, so nothing was half-written, and the problem says so."""
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) == "53100" or any(m in str(orig).lower() for m in DISK_FULL_MARKERS):
        log.error("database out of space at %s: %s", request.url.path, orig)
        return problem(507, "the database is out of storage space (database or disk is full); nothing was "
                       "stored. Free disk space (or raise the database's size limit) and retry",
                       instance=_instance(request), field="database")
    log.error("database unavailable at %s: %s: %s", request.url.path, type(orig).__name__, orig)
    return problem(503, f"the database is unavailable ({type(orig).__name__}); nothing was changed. Retry shortly",
                   instance=_instance(request), field="database",
                   headers={"Retry-After": "5"})


async def _database_data_error(request: Request, exc: Exception) -> JSONResponse:
    """Safety net: the database refused a value (NUL in text, out of range, ...). That value came from
    the request, so it is a 422, not a 500; the transaction was rolled back, so nothing was stored."""
    orig = getattr(exc, "orig", None) or exc
    log.warning("database refused a value at %s: %s: %s", request.url.path, type(orig).__name__, orig)
    return problem(422, f"the database refused a value of this request ({type(orig).__name__}); nothing was "
                   "stored. Check the request's text and numbers (e.g. no NUL characters)",
                   instance=_instance(request))


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    shown = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return problem(422, f"{shown}{more}" or "the request is invalid", instance=_instance(request),
                   errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    field = getattr(exc, "field", None)
    detail = exc.detail if isinstance(exc.detail, str) else title_for(status)
    if status == 400 and detail == FASTAPI_BODY_PARSE_ERROR:  # bytes that are not UTF-8 JSON / form data
        detail, field = ("the request body could not be parsed: send UTF-8 JSON (Content-Type: application/json), "
                         "or multipart/form-data for file uploads"), "body"
    elif status == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}"
    elif status == 405 and detail == "Method Not Allowed":
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem(status, detail, instance=_instance(request), field=field,
                   type_=None if field else "about:blank", headers=getattr(exc, "headers", None))


FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    """Anything unexpected: a 500 problem that reveals nothing of the internals (the server logs it)."""
    return problem(500, "an unexpected error occurred; it has been logged", instance=_instance(request))


# -- OpenAPI ---------------------------------------------------------------------------------------------
def document_problems(schema: dict[str, Any], write_methods: Iterable[str] = ("post", "put", "patch", "delete"),
                      ) -> dict[str, Any]:
    """Every 4xx/5xx response in ``schema`` documented as a `Problem` (``application/problem+json``).

    FastAPI documents its default 422 as ``HTTPValidationError``, which is not what this API sends;
    mutating operations also get the 401 (API key) and 413 (body size) they can answer.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in components["Problem"].pop("$defs", {}).items():
        components.setdefault(name, sub)
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for ops in schema.get("paths", {}).values():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            if method in write_methods:
                responses.setdefault("401", {"description": "missing or invalid API key (when HINN_API_KEYS is set)"})
                responses.setdefault("413", {"description": "request body over HINN_MAX_BODY_BYTES "
                                                            "(JSON: over HINN_MAX_JSON_BODY_BYTES)"})
            if "requestBody" in op:
                responses.setdefault("400", {"description": "the body could not be parsed (not JSON or form data)"})
            for code, response in responses.items():
                if code[0] in "45":
                    response["content"] = content
                    if response.get("description") == "Validation Error":
                        response["description"] = "invalid input; errors[].field names it"
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install(app: FastAPI) -> None:
    """Register the handlers on ``app`` (the catch-all ends up in Starlette's ServerErrorMiddleware)."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(HinnError, _hinn_error)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(InterfaceError, _database_error)
    app.add_exception_handler(DatabaseDataError, _database_data_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
