"""Reject a NUL character (U+0000) in any text input with a 422 that names where it is.

PostgreSQL text cannot hold NUL (psycopg refuses it with a DataError) while SQLite stores it, so
without this check the same request is a 500 on one database and a success on the other. The
check runs as an app-wide dependency, after FastAPI has read the body and before any other
dependency or the handler touches the database, and covers path parameters, the query parameters
and headers the route declares (``Idempotency-Key``, ``If-None-Match``; others are never read),
JSON body strings and keys at any depth, and the text fields and file names of forms. File
contents are not inspected: NPZ files legitimately hold 0x00. A JSON body is walked only when its
raw bytes contain ``\\u0000`` or a 0x00 byte, so a large body costs one scan.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request, params
from starlette.datastructures import UploadFile

from app.errors import Unprocessable
from app.problems import field_from_loc

NUL = "\x00"
#: what can decode to NUL in raw JSON: the escape (any case of hex digits) or a raw 0x00 byte
_RAW_NUL = re.compile(rb"\\u0000|\x00", re.IGNORECASE)
MESSAGE = "contains a NUL character (U+0000, \\u0000), which no text input may hold; remove it"


class NulCharacter(Unprocessable):
    """A NUL character in a text input: a validation error like any other, its detail says where."""


def _shown(text: str) -> str:
    """``text`` with its NULs written as ``\\u0000`` (a key that holds one names itself readably)."""
    return text.replace(NUL, "\\u0000")


def _reject(field: str, what: str = "") -> None:
    raise NulCharacter(f"{what}{MESSAGE}", field=field)


def json_nul_loc(value: Any, loc: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], bool] | None:
    """Where the first NUL in parsed JSON ``value`` is: its location, and whether it is in a member name."""
    if isinstance(value, str):
        return (loc, False) if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if NUL in key:
                return loc + (_shown(key),), True
            found = json_nul_loc(item, loc + (key,))
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = json_nul_loc(item, loc + (i,))
            if found:
                return found
    return None


def _declared(route: Any) -> tuple[set[str], set[str]]:
    """The query parameter names and (lower-case) header names that ``route`` and its dependencies read."""
    queries: set[str] = set()
    headers: set[str] = set()
    stack = [route.dependant] if getattr(route, "dependant", None) is not None else []
    while stack:
        dependant = stack.pop()
        queries.update(param.alias for param in dependant.query_params)
        headers.update(param.alias.lower() for param in dependant.header_params)
        stack.extend(dependant.dependencies)
    return queries, headers


async def _check_body(request: Request, route: Any) -> None:
    body_field = getattr(route, "body_field", None)
    if body_field is None:
        return  # the route reads no body (and a streaming route's receive is left alone)
    if isinstance(body_field.field_info, params.Form):  # as FastAPI decides whether to parse a form
        for key, value in (await request.form()).multi_items():  # already parsed by FastAPI: cached
            if isinstance(value, UploadFile):
                if value.filename and NUL in value.filename:
                    _reject(_shown(key), "the file name ")
            elif NUL in value or NUL in key:
                _reject(_shown(key))
        return
    raw = await request.body()  # cached by FastAPI
    if not _RAW_NUL.search(raw):
        return
    try:
        parsed = await request.json()
    except ValueError:
        return  # not JSON: FastAPI reports the body itself
    found = json_nul_loc(parsed)
    if found:
        loc, in_key = found
        _reject(field_from_loc(("body", *loc)), "a member name " if in_key else "")


async def reject_nul(request: Request) -> None:
    """App-wide dependency: a 422 problem naming the first input that holds a NUL character."""
    route = request.scope.get("route")
    for name, value in request.path_params.items():
        if isinstance(value, str) and NUL in value:
            _reject(name)
    queries, headers = _declared(route)
    for name, value in request.query_params.multi_items():
        if name in queries and NUL in value:
            _reject(name)
    for name, value in request.headers.items():
        if name in headers and NUL in value:
            _reject(field_from_loc(("header", name)))
    await _check_body(request, route)
