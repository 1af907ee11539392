"""Engines, sessions and column types shared by every domain.

SQLite gets two engines on the same file: a pooled reader and a single-connection writer
whose transactions start with ``BEGIN IMMEDIATE``. Writers therefore queue for the one
write connection instead of upgrading a read lock mid-transaction, which is what makes
SQLite answer "database is locked"; WAL keeps readers running beside the writer.
PostgreSQL uses one pooled engine for both.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Integer, MetaData, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

from taskmanager.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# A connection idle for longer than this is pinged before use; busier ones are not, which
# keeps the liveness check off the hot path while still catching connections a database
# restart or an idle-timeout killed.
PING_AFTER_IDLE_SECONDS = 10.0

# SQLite only aliases INTEGER PRIMARY KEY to the rowid; PostgreSQL gets 64-bit ids.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")
JSONList = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime bound to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


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
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    if not immediate:
        # Readers run each statement in autocommit: no BEGIN/ROLLBACK around one SELECT,
        # and WAL gives every statement a consistent snapshot.
        return

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _ping_idle_connections(engine: AsyncEngine, idle_seconds: float) -> None:
    """Pessimistic disconnect handling, for connections that have sat idle only."""
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
            dbapi_connection.ping()
        except Exception as exc:
            # The pool discards this connection and retries with a fresh one.
            raise DisconnectionError("stale pooled connection") from exc


class Database:
    """Owns the engines and hands out sessions; one per application."""

    def __init__(self, settings: Settings) -> None:
        url = settings.effective_database_url
        self.dialect = "sqlite" if settings.is_sqlite else "postgresql"
        if settings.is_sqlite:
            path = settings.sqlite_path
            if path is None:
                # In-memory: one shared connection, so one engine does both jobs.
                self.write_engine = create_async_engine(url, poolclass=StaticPool)
                _configure_sqlite(self.write_engine, settings, immediate=True)
                self.read_engine = self.write_engine
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.write_engine = create_async_engine(
                    url,
                    pool_size=1,
                    max_overflow=0,
                    pool_timeout=settings.db_pool_timeout_seconds,
                )
                _configure_sqlite(self.write_engine, settings, immediate=True)
                self.read_engine = create_async_engine(
                    url,
                    pool_size=max(2, min(settings.db_pool_size, 8)),
                    max_overflow=0,
                    pool_timeout=settings.db_pool_timeout_seconds,
                )
                _configure_sqlite(self.read_engine, settings, immediate=False)
        else:
            self.write_engine = create_async_engine(
                url,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_max_overflow,
                pool_timeout=settings.db_pool_timeout_seconds,
                pool_recycle=1800,
            )
            if settings.db_pool_pre_ping:
                _ping_idle_connections(self.write_engine, PING_AFTER_IDLE_SECONDS)
            # Same pool; reads skip BEGIN/ROLLBACK, which would triple their round trips.
            self.read_engine = self.write_engine.execution_options(isolation_level="AUTOCOMMIT")
        self._writer = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._reader = async_sessionmaker(self.read_engine, expire_on_commit=False)

    def session(self, *, write: bool) -> AsyncSession:
        return (self._writer if write else self._reader)()

    async def ping(self) -> None:
        async with self.read_engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.write_engine.dispose()
        if self.read_engine.sync_engine.pool is not self.write_engine.sync_engine.pool:
            await self.read_engine.dispose()


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request; writes commit before the response is sent.

    Used with ``scope="function"`` so the commit runs when the endpoint returns, before
    FastAPI sends anything: a client never sees 2xx for a write that failed to commit.
    """
    database = get_database(request)
    write = request.method not in SAFE_METHODS
    async with database.session(write=write) as session:
        yield session
        if write:
            await session.commit()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
DatabaseDep = Annotated[Database, Depends(get_database)]
