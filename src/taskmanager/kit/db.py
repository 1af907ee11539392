"""The database: engines, the request's session, and the named doors outside it.

SQLite gets two engines on the same file: a pooled reader and a single-connection writer
whose transactions start with ``BEGIN IMMEDIATE``. Writers therefore queue for the one
write connection instead of upgrading a read lock mid-transaction, which is what makes
SQLite answer "database is locked"; WAL keeps readers running beside the writer.
PostgreSQL uses one pooled engine for both.

Work belongs in the request's transaction (``kit.deps.SessionDep``), which commits before
the response is sent. Work that must not share its fate goes through one of two named doors:
``Database.side_transaction()`` (its own write transaction, committed on exit) and
``Database.snapshot()`` (its own read-only session). Nothing else opens sessions.

No wait is unbounded: PostgreSQL connections have a connect timeout, a server-side
``statement_timeout`` and a slightly longer client-side command timeout (which is what
catches a silent network partition), idle pooled connections are pinged with a short
timeout, the pool wait is bounded, and a connection that is given up on is closed at once
rather than politely (a polite close waits on the very network that just failed). The
``breaker`` remembers an outage so that, until its back-off ends, requests answer 503 at
once instead of each waiting for a timeout (``kit.availability``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import ColumnElement, Table, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.pool import PoolResetState, StaticPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util.concurrency import await_

from taskmanager.kit.availability import Breaker
from taskmanager.kit.config import Settings
from taskmanager.models.base import utcnow as utcnow

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# A connection idle for longer than this is pinged before use; busier ones are not, which
# keeps the liveness check off the hot path while still catching connections a database
# restart or an idle-timeout killed.
PING_AFTER_IDLE_SECONDS = 10.0


def _configure_sqlite(engine: AsyncEngine, settings: Settings, *, immediate: bool) -> None:
    sync_engine: Engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(settings.sqlite_busy_timeout_ms)}")
        # FULL (the default) syncs the WAL on every commit, so an acknowledged write survives
        # a power loss; NORMAL may lose the last commits then (never on a process crash).
        cursor.execute(f"PRAGMA synchronous={settings.sqlite_synchronous}")
        cursor.close()

    @event.listens_for(sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
        # The engine's reset-on-return is off (``pool_reset_on_return=None``): sqlite3 knows
        # whether a transaction is open, and rolling back when none is would cost a hop to
        # aiosqlite's thread on every return of a driver-path connection (``kit.driver``).
        if state.asyncio_safe and dbapi_connection.driver_connection.in_transaction:
            dbapi_connection.rollback()

    if not immediate:
        # Readers run each statement in autocommit: no BEGIN/ROLLBACK around one SELECT,
        # and WAL gives every statement a consistent snapshot.
        return

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _ping_idle_connections(
    engine: AsyncEngine, idle_seconds: float, timeout: float, breaker: Breaker
) -> None:
    """Pessimistic disconnect handling, for connections that have sat idle only.

    A connection the server closed is replaced (``DisconnectionError``); a ping that gets no
    answer within ``timeout`` means the server is unreachable, so the breaker opens and the
    request fails with the timeout (503) instead of also waiting to connect afresh.
    """
    sync_engine: Engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            await_(dbapi_connection._connection.fetchval("SELECT 1", timeout=timeout))
        except TimeoutError as exc:
            breaker.failed(exc)
            raise  # the pool closes this connection; the request answers 503
        except Exception as exc:
            # The pool discards this connection and retries with a fresh one.
            raise DisconnectionError("stale pooled connection") from exc


def _terminate_at_once(engine: AsyncEngine) -> None:
    """Close connections that are given up on without the 2 s polite goodbye.

    SQLAlchemy's asyncpg adapter first tries a graceful close with a 2 s timeout; over a
    black-holed network that adds 2 s to the request that gave up on the connection.
    """

    def terminate(dbapi_connection: Any) -> None:
        dbapi_connection._terminate_force_close()

    engine.dialect.do_terminate = terminate  # type: ignore[method-assign]


def _postgres_connect_args(settings: Settings) -> dict[str, Any]:
    statement_ms = int(settings.db_statement_timeout_seconds * 1000)
    return {
        "timeout": settings.db_connect_timeout_seconds,
        # Client side, a little longer than the server's own limit: normally the server
        # cancels a slow statement; this one fires only when the server cannot answer.
        "command_timeout": settings.db_statement_timeout_seconds + 0.5,
        "server_settings": {
            "statement_timeout": str(statement_ms),
            # Shorter than the statement's bound, so a statement stuck behind another
            # transaction's row lock ends as a lock wait (55P03: that row is busy, a 503 for
            # this request) rather than a statement timeout, which says the database itself
            # is not answering and opens the outage breaker for every request
            # (kit.availability).
            "lock_timeout": str(max(1, statement_ms * 4 // 5)),
            # A process frozen with an open transaction must not hold locks forever.
            "idle_in_transaction_session_timeout": str(
                int(max(60.0, settings.request_timeout_seconds * 2) * 1000)
            ),
            "application_name": "taskmanager",
        },
    }


class Database:
    """Owns the engines and hands out sessions; one per application."""

    def __init__(self, settings: Settings) -> None:
        url = settings.effective_database_url
        self.dialect = "sqlite" if settings.is_sqlite else "postgresql"
        self.breaker = Breaker("database", backoff_seconds=settings.outage_backoff_seconds)
        if settings.is_sqlite:
            path = settings.sqlite_path
            if path is None:
                # In-memory: one shared connection, so one engine does both jobs.
                self.write_engine = create_async_engine(
                    url, poolclass=StaticPool, pool_reset_on_return=None
                )
                _configure_sqlite(self.write_engine, settings, immediate=True)
                self.read_engine = self.write_engine
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.write_engine = create_async_engine(
                    url,
                    pool_size=1,
                    max_overflow=0,
                    pool_timeout=settings.db_pool_timeout_seconds,
                    pool_reset_on_return=None,  # see _configure_sqlite
                )
                _configure_sqlite(self.write_engine, settings, immediate=True)
                self.read_engine = create_async_engine(
                    url,
                    pool_size=max(2, min(settings.db_pool_size, 8)),
                    max_overflow=0,
                    pool_timeout=settings.db_pool_timeout_seconds,
                    pool_reset_on_return=None,
                )
                _configure_sqlite(self.read_engine, settings, immediate=False)
        else:
            self.write_engine = create_async_engine(
                url,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_max_overflow,
                pool_timeout=settings.db_pool_timeout_seconds,
                pool_recycle=1800,
                connect_args=_postgres_connect_args(settings),
            )
            _terminate_at_once(self.write_engine)
            if settings.db_pool_pre_ping:
                _ping_idle_connections(
                    self.write_engine,
                    PING_AFTER_IDLE_SECONDS,
                    min(1.0, settings.db_statement_timeout_seconds),
                    self.breaker,
                )
            # Same pool; reads skip BEGIN/ROLLBACK, which would triple their round trips.
            self.read_engine = self.write_engine.execution_options(isolation_level="AUTOCOMMIT")
        self._writer = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._reader = async_sessionmaker(self.read_engine, expire_on_commit=False)

    def request_session(self, *, write: bool) -> AsyncSession:
        """The session of one request (``kit.deps.get_session`` owns its commit).

        Raises ServiceUnavailable while the database is known to be down.
        """
        self.breaker.check()
        return (self._writer if write else self._reader)()

    def unavailable(self, exc: BaseException) -> None:
        """Record a failure to reach the database (see ``kit.availability.Breaker``)."""
        self.breaker.failed(exc)

    @asynccontextmanager
    async def side_transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction of its own, committed on exit and rolled back on an error.

        For writes that must persist whatever happens to the request: revoking a refresh
        token family on re-use (the request then answers 401 and rolls back), recording an
        API key's last use on a read request, CLI commands and background work. On SQLite it
        queues for the one writer, so never open it while the request's own write session
        holds that writer.
        """
        self.breaker.check()
        async with self._writer() as session:
            yield session
            await session.commit()
        self.breaker.succeeded()

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncSession]:
        """A read-only session of its own (autocommit reads; never commits).

        For reads that must not hold the request's transaction open or do not have one: a
        login's user lookup (so the slow password check holds no lock), the fast task read,
        streamed exports after the request's session has closed, authentication in middleware.
        """
        self.breaker.check()
        async with self._reader() as session:
            yield session
        self.breaker.succeeded()

    async def ping(self) -> None:
        """One ``SELECT 1``; raises when the database cannot answer (readiness)."""
        try:
            async with self.read_engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            self.breaker.failed(exc)
            raise
        self.breaker.succeeded()

    async def dispose(self, grace_seconds: float = 5.0) -> None:
        """Close every pooled connection; stop waiting politely after ``grace_seconds``.

        A close waits for the server to acknowledge; an unreachable server must not hold
        up the process's exit, so the pools are then dropped without waiting.
        """
        engines = [self.write_engine]
        if self.read_engine.sync_engine.pool is not self.write_engine.sync_engine.pool:
            engines.append(self.read_engine)
        for engine in engines:
            try:
                async with asyncio.timeout(grace_seconds):
                    await engine.dispose()
            except TimeoutError:
                await engine.dispose(close=False)


@compiles(Table, "sqlite")
def _sqlite_table(table: Table, compiler: SQLCompiler, **kw: Any) -> str:
    """A table in a SQLite statement, followed by its ``with_hint(table, text, "sqlite")``.

    SQLAlchemy renders table hints only for dialects it knows a hint syntax of, and not
    SQLite's ``INDEXED BY index`` (https://sqlite.org/lang_indexedby.html): with this, a
    statement can pin a SQLite plan as ``stmt.with_hint(TABLE, "INDEXED BY ix", "sqlite")``
    (a dropped or renamed index then fails the statement instead of slowing it).
    """
    rendered: str = compiler.visit_table(table, **kw)  # type: ignore[no-untyped-call]
    hints = kw.get("fromhints")
    if rendered and hints and table in hints:
        rendered += f" {hints[table]}"
    return rendered


def at_version(
    version: ColumnElement[int] | InstrumentedAttribute[int],
    expected_versions: Collection[int] | None,
) -> list[ColumnElement[bool]]:
    """The ``If-Match`` compare-and-set condition (RFC 9110 §13.1.1) for a statement's WHERE:
    the row is at one of ``expected_versions`` (``kit.etags.expected_versions``); None (no
    header, or ``*``) adds nothing. Empty means no ETag of the header can match: no row."""
    return [] if expected_versions is None else [version.in_(expected_versions)]
