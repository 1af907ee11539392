"""Statements run on the PostgreSQL driver itself: built once, compiled once, no Session.

For the hottest routes only (``tasks.fast_read``, ``tasks.fast_write``). A request through a
``Session`` builds its statement, derives its cache key, finds the compiled form and wraps
the driver in SQLAlchemy's cursor, result and unit-of-work objects: about half the CPU of a
task create (profiled with py-spy, README § Performance). Here a statement is a SQLAlchemy
Core construct with named ``bindparam()``s, built at import, compiled once per dialect with
its bind processors (``DriverStatement``), and run with ``fetchrow`` on a pooled asyncpg
connection (``driver_connection``): asyncpg prepares it once per connection and caches it.

What still applies: the pool (its size, timeout, checkout ping and recycling), the
connection's server settings (statement, lock and idle-in-transaction timeouts) and the
breaker (a database known to be down answers 503 at once; one that cannot be reached opens
it). A connection whose state is unknown (an error or a cancellation mid-statement) is
invalidated, never handed out again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from taskmanager.kit.availability import is_unavailable
from taskmanager.kit.db import Database
from taskmanager.kit.errors import ServiceUnavailable

_REQUIRED = object()  # a bindparam() without a value: the caller must give one


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    defaults: tuple[Any, ...]  # the value of a literal() bound by the statement itself


class DriverStatement:
    """A Core statement with named ``bindparam()``s, compiled once per dialect.

    ``args(dialect, params)``: the positional arguments for the driver, each value passed
    through its column type's bind processor (JSON serialised, times made UTC…) exactly as
    SQLAlchemy would. A ``literal()`` in the statement keeps its own value; an expanding
    ``IN`` list cannot be compiled once, and is refused (``ValueError``).
    """

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = cast(SQLCompiler, self.statement.compile(dialect=dialect))
            if "POSTCOMPILE" in compiled.string:
                raise ValueError("an expanding IN list cannot be compiled once")
            names = tuple(compiled.positiontup or ())
            binds = [compiled.binds[name] for name in names]
            found = self._compiled[dialect.name] = _Compiled(
                compiled.string,
                names,
                tuple(bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds),
                tuple(_REQUIRED if bind.required else bind.effective_value for bind in binds),
            )
        return found

    def args(self, dialect: Dialect, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL and its positional arguments for ``params`` (every bindparam named)."""
        compiled = self.compiled(dialect)
        values = []
        for name, process, default in zip(
            compiled.names, compiled.processors, compiled.defaults, strict=True
        ):
            value = params[name] if default is _REQUIRED else params.get(name, default)
            values.append(value if process is None or value is None else process(value))
        return compiled.sql, values


class DriverConnection:
    """One pooled asyncpg connection, lent for a ``driver_connection`` block."""

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self.connection = connection
        self.dialect = dialect

    async def fetchrow(self, statement: DriverStatement, params: Mapping[str, Any]) -> Any:
        """The statement's first row (an asyncpg ``Record``), or None."""
        sql, args = statement.args(self.dialect, params)
        return await self.connection.fetchrow(sql, *args)


class DriverFailed(Exception):
    """The database refused a statement for a reason other than being unreachable (a
    constraint, a deadlock, a conflict…). Nothing was written: the caller may take the
    ``Session`` path, which explains the error as every other route does."""


@asynccontextmanager
async def driver_connection(
    database: Database, *, transaction: bool = False
) -> AsyncIterator[DriverConnection]:
    """A pooled connection of ``database`` (PostgreSQL), optionally in a transaction.

    Autocommit without ``transaction`` (one statement is its own transaction). With it,
    ``BEGIN`` … ``COMMIT`` around the block, rolled back if the block raises. Raises
    ServiceUnavailable when the database is known down or cannot be reached (the breaker
    records it), DriverFailed when it refused a statement; anything the block raises
    otherwise passes through (after a rollback).
    """
    database.breaker.check()
    engine = database.write_engine
    try:
        raw = await engine.raw_connection()
    except Exception as exc:
        _raise_unavailable(database, exc)
        raise
    driver: Any = raw.driver_connection
    try:
        if transaction:
            async with driver.transaction():
                yield DriverConnection(driver, engine.dialect)
        else:
            yield DriverConnection(driver, engine.dialect)
    except BaseException as exc:
        # Failed or cancelled mid-statement: the connection's state is unknown, so it is
        # dropped rather than pooled (a domain error raised between statements would
        # allow reuse, but is rare enough not to be worth telling apart).
        raw.invalidate(exc)
        if isinstance(exc, Exception) and not isinstance(exc, ServiceUnavailable):
            _raise_unavailable(database, exc)
            if _is_driver_error(exc):
                raise DriverFailed(str(exc)) from exc
        raise
    raw.close()
    database.breaker.succeeded()


def _raise_unavailable(database: Database, exc: Exception) -> None:
    if is_unavailable(exc):
        database.unavailable(exc)
        raise database.breaker.error() from exc


def _is_driver_error(exc: Exception) -> bool:
    module = type(exc).__module__
    return module.startswith("asyncpg")
