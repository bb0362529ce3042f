"""Declarative base with a constraint naming convention, and the database-clock expressions.

All lease arithmetic uses the *database's* clock (`db_now`, `db_now_plus`) so that workers on
different hosts with skewed clocks still agree on who holds a job.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime, MetaData
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.expression import FunctionElement

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class db_now(FunctionElement):  # noqa: N801 - reads like the SQL function it is
    """The database's current UTC time (statement time on PostgreSQL, millisecond precision on SQLite)."""

    type = DateTime(timezone=True)
    inherit_cache = True


class db_now_plus(FunctionElement):  # noqa: N801
    """``db_now() + seconds`` (one bound float argument)."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(db_now, "postgresql")
def _pg_now(element: Any, compiler: Any, **kw: Any) -> str:
    return "statement_timestamp()"


@compiles(db_now)
def _sqlite_now(element: Any, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy's SQLite DateTime stores "YYYY-MM-DD HH:MM:SS.ffffff" strings; %f gives SS.SSS
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


@compiles(db_now_plus, "postgresql")
def _pg_now_plus(element: Any, compiler: Any, **kw: Any) -> str:
    (seconds,) = list(element.clauses)
    return f"statement_timestamp() + make_interval(secs => {compiler.process(seconds, **kw)})"


@compiles(db_now_plus)
def _sqlite_now_plus(element: Any, compiler: Any, **kw: Any) -> str:
    (seconds,) = list(element.clauses)
    modifier = f"printf('%+.3f seconds', {compiler.process(seconds, **kw)})"
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', {modifier})"
