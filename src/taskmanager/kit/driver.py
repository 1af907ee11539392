"""Statements run on the database driver itself: built once, compiled once, no Session.

For the hottest routes only (``tasks.fast_read``, ``tasks.fast_write``). A request through a
``Session`` builds its statement, derives its cache key, finds the compiled form and wraps
the driver in SQLAlchemy's cursor, result and unit-of-work objects: about half the CPU of a
task create (profiled with py-spy, README § Performance). Here a statement is a SQLAlchemy
Core construct with named ``bindparam()``s, built at import, compiled once per dialect with
its bind and result processors (``DriverStatement``), and run on a pooled driver connection
(``driver_connection``):

- PostgreSQL: asyncpg's ``fetchrow``; asyncpg prepares each statement once per connection
  and caches it.
- SQLite (a database file): aiosqlite's ``execute_fetchall``, one hop to the connection's
  thread per statement (SQLAlchemy's cursor makes three or more); a write takes the one
  writer connection and its transaction is ``BEGIN IMMEDIATE`` … ``COMMIT``, as a
  ``Session``'s is (``kit.db``). An in-memory database (one shared connection) never takes
  this path: a block here could interleave with a ``Session`` on that same connection.

A write transaction is best written as a ``Script`` (a generator of statements, each sent
back its row) and run by ``run_transaction``: on SQLite the whole transaction — ``BEGIN
IMMEDIATE``, every statement, the Python between them, ``COMMIT`` — is then one call in the
connection's thread. Statement by statement, SQLite's one writer would be held across a
round trip through the event loop per statement, behind every other request's work queued
there, and every other write waits for it.

What still applies: the pool (its size, timeout, checkout ping and recycling), the
connection's settings (statement, lock and idle-in-transaction timeouts; SQLite's pragmas
and busy timeout) and the breaker (a database known to be down answers 503 at once; one that
cannot be reached opens it). A connection whose state is unknown (an error or a
cancellation mid-statement) is invalidated, never handed out again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Generator, Mapping, Sequence
from contextlib import asynccontextmanager, closing, suppress
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.selectable import ReturnsRows
from sqlalchemy.util import greenlet_spawn

from taskmanager.kit.availability import is_contention, is_unavailable
from taskmanager.kit.db import Database
from taskmanager.kit.errors import ServiceUnavailable

_REQUIRED = object()  # a bindparam() without a value: the caller must give one

Processor = Callable[[Any], Any]
T = TypeVar("T")

Step = tuple["DriverStatement", Mapping[str, Any]]
"""One statement of a ``Script`` and its parameters."""

Script = Generator[Step, Sequence[Any] | None, T]
"""A write transaction as a generator: it yields each statement with its parameters, is sent
back the statement's first row (``DriverStatement.row``; None when it returned none) and
returns its result. Pure Python between statements — no ``await``, no I/O — since on SQLite it
runs in the connection's thread (``run_transaction``). Raising rolls the transaction back."""


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Processor | None, ...]
    defaults: tuple[Any, ...]  # the value of a literal() bound by the statement itself
    results: tuple[Processor | None, ...] | None  # None: every value is used as it comes


class DriverStatement:
    """A Core statement with named ``bindparam()``s, compiled once per dialect.

    ``statement``: the construct, or a function of the dialect's name that builds it (for a
    statement whose SQL differs by database, such as a JSON aggregate).
    ``args(dialect, params)``: the positional arguments for the driver, each value passed
    through its column type's bind processor (JSON serialised, times made UTC…) exactly as
    SQLAlchemy would; ``row(dialect, values)``: a returned row through its columns' result
    processors (on SQLite, text back to times and JSON; asyncpg decodes its own). A
    ``literal()`` in the statement keeps its own value. Refused (``ValueError``) at the first
    compile: an expanding ``IN`` list (it cannot be compiled once) and a write that leaves a
    column with a Python-side default (``default=``/``onupdate=`` a value or function) to
    SQLAlchemy, which computes it only when it executes the statement itself.
    """

    def __init__(self, statement: ClauseElement | Callable[[str], ClauseElement]) -> None:
        self._build = statement if callable(statement) else (lambda _dialect: statement)
        self._compiled: dict[str, _Compiled] = {}

    def statement(self, dialect_name: str) -> ClauseElement:
        """The Core construct for this database, to run through a ``Session`` instead."""
        return self._build(dialect_name)

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            statement = self._build(dialect.name)
            compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
            if "POSTCOMPILE" in compiled.string:
                raise ValueError("an expanding IN list cannot be compiled once")
            if compiled.insert_prefetch or compiled.update_prefetch:
                # A Python-side column default is computed per execution by SQLAlchemy's
                # execution context, which the driver path does not have: it would be NULL.
                raise ValueError("a driver statement must give every Python-defaulted column")
            names = tuple(compiled.positiontup or ())
            binds = [compiled.binds[name] for name in names]
            found = self._compiled[dialect.name] = _Compiled(
                compiled.string,
                names,
                tuple(bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds),
                tuple(_REQUIRED if bind.required else bind.effective_value for bind in binds),
                _result_processors(statement, dialect),
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

    def row(self, dialect: Dialect, values: Sequence[Any]) -> tuple[Any, ...]:
        """A row as the driver returned it, with each column's result processor applied."""
        results = self.compiled(dialect).results
        if results is None:
            return tuple(values)
        return tuple(
            value if process is None or value is None else process(value)
            for process, value in zip(results, values, strict=True)
        )


def _result_processors(
    statement: ClauseElement, dialect: Dialect
) -> tuple[Processor | None, ...] | None:
    if not isinstance(statement, ReturnsRows):
        return None
    processors = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in statement.exported_columns
    )
    return processors if any(processors) else None


class DriverConnection:
    """One pooled driver connection, lent for a ``driver_connection`` block."""

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        self.connection = connection
        self.dialect = dialect

    async def fetchrow(
        self, statement: DriverStatement, params: Mapping[str, Any]
    ) -> Sequence[Any] | None:
        """The statement's first row (values by position, through the columns' result
        processors), or None."""
        sql, args = statement.args(self.dialect, params)
        row = await self.connection.fetchrow(sql, *args)
        return None if row is None else statement.row(self.dialect, row)

    async def execute(self, sql: str) -> None:
        """Run one SQL string with no parameters (transaction control)."""
        await self.connection.execute(sql)

    async def run(self, script: Script[T]) -> T:
        """Run ``script``'s statements in order, in the block's transaction; its result."""
        row: Sequence[Any] | None = None
        try:
            while True:
                statement, params = script.send(row)
                row = await self.fetchrow(statement, params)
        except StopIteration as done:
            return cast(T, done.value)
        finally:
            script.close()


class _SQLiteConnection(DriverConnection):
    async def fetchrow(
        self, statement: DriverStatement, params: Mapping[str, Any]
    ) -> Sequence[Any] | None:
        sql, args = statement.args(self.dialect, params)
        # One hop to aiosqlite's thread: execute, fetch every row, close the cursor.
        rows = await self.connection.execute_fetchall(sql, args)
        return statement.row(self.dialect, rows[0]) if rows else None

    async def execute(self, sql: str) -> None:
        await self.connection.execute_fetchall(sql)

    async def transaction(self, script: Script[T]) -> T:
        """``script`` in a write transaction of its own, all of it one call in the
        connection's thread. Only outside a ``transaction=True`` block.

        aiosqlite runs each of its calls as a function queued to that thread; this queues one
        function for the whole transaction (``Connection._execute``: aiosqlite's own door to
        its thread, which has no public name). Cancelled while it runs, the transaction still
        ends in the thread, committed or rolled back as a whole, before the connection is
        used again (aiosqlite runs its calls in order).
        """
        runner: Any = self.connection
        return cast(
            T, await runner._execute(_sqlite_transaction, runner._conn, self.dialect, script)
        )


class DriverFailed(Exception):
    """The database refused a statement for a reason other than being unreachable (a
    constraint, a deadlock, a conflict…). Nothing was written: the caller may take the
    ``Session`` path, which explains the error as every other route does."""


def on_driver(database: Database) -> bool:
    """Whether ``driver_connection`` serves ``database`` (PostgreSQL, or an SQLite file)."""
    return database.dialect == "postgresql" or (
        database.read_engine.sync_engine.pool is not database.write_engine.sync_engine.pool
    )


@asynccontextmanager
async def driver_connection(
    database: Database, *, write: bool, transaction: bool = False
) -> AsyncIterator[DriverConnection]:
    """A pooled connection of ``database``, optionally in a transaction (``on_driver``).

    ``write``: the block writes (on SQLite it takes the one writer connection; readers
    otherwise). Autocommit without ``transaction`` (one statement is its own transaction).
    With it, ``BEGIN`` (SQLite: ``BEGIN IMMEDIATE``) … ``COMMIT`` around the block, rolled
    back if the block raises. Raises ServiceUnavailable when the database is known down or
    cannot be reached (the breaker records it), DriverFailed when it refused a statement;
    anything the block raises otherwise passes through (after a rollback).
    """
    database.breaker.check()
    engine = database.write_engine if write or transaction else database.read_engine
    sqlite = database.dialect == "sqlite"
    try:
        raw = await engine.raw_connection()
    except Exception as exc:
        _raise_unavailable(database, exc)
        raise
    driver: Any = raw.driver_connection
    try:
        if sqlite:
            async with _sqlite_block(driver, engine, transaction=transaction) as connection:
                yield connection
        elif transaction:
            async with driver.transaction():
                yield DriverConnection(driver, engine.dialect)
        else:
            yield DriverConnection(driver, engine.dialect)
    except BaseException as exc:
        # Failed or cancelled mid-statement: the connection's state is unknown, so it is
        # dropped rather than pooled (a domain error raised between statements would
        # allow reuse, but is rare enough not to be worth telling apart).
        await _release(raw, sqlite, invalidate=exc)
        if isinstance(exc, Exception) and not isinstance(exc, ServiceUnavailable):
            if is_contention(exc):
                # Lost to another transaction (a lock wait, a deadlock): nothing was
                # written, and the Session path may succeed now; it answers 503 if not.
                raise DriverFailed(str(exc)) from exc
            _raise_unavailable(database, exc)
            if _is_driver_error(exc):
                raise DriverFailed(str(exc)) from exc
        raise
    await _release(raw, sqlite)
    database.breaker.succeeded()


@asynccontextmanager
async def _sqlite_block(
    driver: Any, engine: AsyncEngine, *, transaction: bool
) -> AsyncIterator[DriverConnection]:
    connection = _SQLiteConnection(driver, engine.dialect)
    if not transaction:
        yield connection
        return
    await connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        # Cancelled mid-statement, this waits for the statement (aiosqlite runs its calls
        # in order). If it fails too, closing the connection (it is invalidated after in
        # any case) rolls back.
        with suppress(Exception):
            await connection.execute("ROLLBACK")
        raise
    await connection.execute("COMMIT")


def _sqlite_transaction(connection: sqlite3.Connection, dialect: Dialect, script: Script[T]) -> T:
    """Run in the connection's thread: ``BEGIN IMMEDIATE``, the script, ``COMMIT``; on any
    error ``ROLLBACK`` (suppressed if it fails too: the connection is invalidated after an
    error in any case) and the error passes through."""
    try:
        connection.execute("BEGIN IMMEDIATE")
        row: Sequence[Any] | None = None
        while True:
            try:
                statement, params = script.send(row)
            except StopIteration as done:
                result = cast(T, done.value)
                break
            sql, args = statement.args(dialect, params)
            # Closed at once: an unfinalized statement would keep the connection (and its
            # lock) alive past a close until the garbage collector runs (README § Testing).
            with closing(connection.execute(sql, args)) as cursor:
                rows = cursor.fetchall()
            row = statement.row(dialect, rows[0]) if rows else None
        connection.execute("COMMIT")
    except BaseException:
        with suppress(Exception):
            connection.execute("ROLLBACK")
        raise
    finally:
        script.close()
    return result


async def run_transaction(database: Database, script: Script[T]) -> T:
    """Run ``script`` (see ``Script``) in one write transaction on the driver; its result.

    PostgreSQL: ``BEGIN``, each statement a round trip, ``COMMIT``. SQLite: all of it in one
    call to the writer connection's thread (``_SQLiteConnection.transaction``). Raises what
    ``driver_connection`` raises (ServiceUnavailable, DriverFailed) and what the script
    raises; nothing is committed then.
    """
    if database.dialect == "sqlite":
        async with driver_connection(database, write=True) as connection:
            return await cast(_SQLiteConnection, connection).transaction(script)
    async with driver_connection(database, write=True, transaction=True) as connection:
        return await connection.run(script)


async def _release(raw: Any, sqlite: bool, invalidate: BaseException | None = None) -> None:
    """Back to the pool (or invalidated). SQLAlchemy's aiosqlite adapter rolls back and
    closes through its greenlet bridge, so on SQLite both run inside one."""
    if not sqlite:
        if invalidate is not None:
            raw.invalidate(invalidate)
        else:
            raw.close()
    elif invalidate is not None:
        await greenlet_spawn(raw.invalidate, invalidate)
    else:
        await greenlet_spawn(raw.close)


def _raise_unavailable(database: Database, exc: Exception) -> None:
    if is_unavailable(exc):
        database.unavailable(exc)
        raise database.breaker.error() from exc


def _is_driver_error(exc: Exception) -> bool:
    module = type(exc).__module__
    return module.startswith(("asyncpg", "sqlite3"))
