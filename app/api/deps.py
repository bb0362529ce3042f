"""Dependencies shared by the routers: database, settings, model cache, auth and pagination.

Read-only routes take a `SessionDep` (one read transaction per request). Mutating routes open
``db.session(write=True)`` themselves inside the handler, so their transaction is committed
*before* the response is sent on every FastAPI version (the exit of a ``yield`` dependency runs
after the response on some versions — a client could otherwise see 201 for a row not yet visible).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from app.db.session import Database
from app.errors import ServiceError, Unprocessable
from app.registry import ModelCache
from app.settings import Settings


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache


def read_session(db: Annotated[Database, Depends(get_db)]) -> Iterator[Session]:
    with db.session() as s:
        yield s


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CacheDep = Annotated[ModelCache, Depends(get_cache)]
SessionDep = Annotated[Session, Depends(read_session)]


# -- auth --------------------------------------------------------------------------------------------
class Unauthorized(ServiceError):
    status = 401
    headers = {"WWW-Authenticate": "Bearer"}


bearer = HTTPBearer(auto_error=False, description="an API key from HINN_API_KEYS")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _check_key(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    if not settings.api_keys:
        return
    if credentials is None:
        raise Unauthorized("this endpoint needs 'Authorization: Bearer <api key>'", field="Authorization")
    given = credentials.credentials.encode()
    # compare with every key (no early exit), in constant time per key
    matches = [hmac.compare_digest(given, key.encode()) for key in settings.api_keys]
    if not any(matches):
        raise Unauthorized("the API key is not valid", field="Authorization")


def require_key(settings: SettingsDep, credentials: BearerDep) -> None:
    """Mutating routes (POST/DELETE): a valid key whenever HINN_API_KEYS is set."""
    _check_key(settings, credentials)


def require_read_key(settings: SettingsDep, credentials: BearerDep) -> None:
    """Reading routes: a valid key only when HINN_AUTH_READS is also set."""
    if settings.auth_reads:
        _check_key(settings, credentials)


WRITE_AUTH = [Depends(require_key)]
READ_AUTH = [Depends(require_read_key)]


# -- pagination --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: str


def encode_cursor(created_at: datetime, id_: str) -> str:
    raw = f"{created_at.isoformat()}|{id_}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> Cursor:
    """The cursor's position; anything malformed is a 422 naming ``cursor``."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        stamp, id_ = raw.split("|")
        created_at = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unprocessable("is not a cursor this API issued; pass next_cursor from the previous page unchanged",
                            field="cursor") from None
    if not id_ or len(id_) > 32 or not id_.isalnum():
        raise Unprocessable("is not a cursor this API issued; pass next_cursor from the previous page unchanged",
                            field="cursor")
    return Cursor(created_at, id_)


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: Cursor | None


def page_params(
    limit: Annotated[int, Query(ge=1, le=200, description="items per page")] = 50,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> PageParams:
    return PageParams(limit, decode_cursor(cursor) if cursor else None)


PageDep = Annotated[PageParams, Depends(page_params)]


def paginate(s: Session, stmt: Select[Any], entity: Any, page: PageParams) -> tuple[list[Any], str | None]:
    """Rows of ``stmt`` newest first by (created_at, id), after ``page.cursor``; and the next cursor."""
    if page.cursor is not None:
        c = page.cursor
        stmt = stmt.where(or_(entity.created_at < c.created_at,
                              and_(entity.created_at == c.created_at, entity.id < c.id)))
    rows = list(s.scalars(stmt.order_by(entity.created_at.desc(), entity.id.desc()).limit(page.limit + 1)))
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[: page.limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)
