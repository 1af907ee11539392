"""Which failures are outages (503), and the breaker that remembers them."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from taskmanager.kit.availability import MAX_BACKOFF_SECONDS, Breaker, is_outage, is_unavailable
from taskmanager.kit.db import Database
from taskmanager.kit.errors import ServiceUnavailable
from tests.conftest import TestDatabase, make_settings


def wrapped(orig: BaseException) -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        socket.gaierror(-2, "Name or service not known"),
        TimeoutError(),
        ConnectionResetError(104, "reset"),
        asyncpg.InvalidCatalogNameError("database does not exist"),
        asyncpg.InvalidPasswordError("password authentication failed"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.TooManyConnectionsError("too many clients"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.InterfaceError("connection is closed"),
        sqlite3.OperationalError("database is locked"),
        sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
        sa_exc.TimeoutError("QueuePool limit reached"),
        wrapped(asyncpg.PostgresConnectionError("lost")),
        RedisConnectionError("Connection refused"),
        # Busy rather than unreachable: a row lock held past lock_timeout, a deadlock, a
        # serialization failure; as SQLAlchemy's asyncpg dialect wraps them (a plain Error).
        wrapped(asyncpg.LockNotAvailableError("canceling statement due to lock timeout")),
        wrapped(asyncpg.DeadlockDetectedError("deadlock detected")),
        wrapped(asyncpg.SerializationError("could not serialize access")),
    ],
    ids=repr,
)
def test_unreachable_dependencies_are_unavailable(error: BaseException) -> None:
    assert is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bug"),
        KeyError("bug"),
        sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
        sa_exc.ProgrammingError("SELEC", {}, Exception("syntax error")),
        asyncpg.UniqueViolationError("duplicate key"),
    ],
    ids=repr,
)
def test_bugs_and_conflicts_are_not_outages(error: BaseException) -> None:
    assert not is_unavailable(error)


def test_only_unreachable_servers_open_the_breaker() -> None:
    assert is_outage(ConnectionRefusedError())
    assert is_outage(TimeoutError())
    assert is_outage(asyncpg.InvalidCatalogNameError("gone"))
    assert not is_outage(ConnectionResetError())  # one connection lost, not the server
    assert not is_outage(sa_exc.TimeoutError("pool"))  # overload, not an outage
    # One statement lost to another transaction: the database is answering.
    assert not is_outage(wrapped(asyncpg.LockNotAvailableError("lock timeout")))
    assert not is_outage(wrapped(asyncpg.DeadlockDetectedError("deadlock detected")))


def test_breaker_fails_fast_with_retry_after_then_recovers() -> None:
    breaker = Breaker("database", backoff_seconds=60)
    breaker.check()  # closed: nothing happens
    breaker.failed(ConnectionResetError())
    breaker.check()  # not an outage: still closed
    breaker.failed(ConnectionRefusedError())
    assert breaker.is_open
    with pytest.raises(ServiceUnavailable) as raised:
        breaker.check()
    assert 1 <= int(raised.value.headers["Retry-After"]) <= MAX_BACKOFF_SECONDS
    breaker.succeeded()
    assert not breaker.is_open
    breaker.check()


def test_backoff_doubles_and_is_capped() -> None:
    breaker = Breaker("redis", backoff_seconds=1)
    seen = []
    for _ in range(6):
        breaker.failed(TimeoutError())
        seen.append(breaker._backoff)
    assert seen == [1, 2, 4, MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS]


@pytest.mark.sqlite_only
@pytest.mark.parametrize("mode", ["FULL", "NORMAL"])
async def test_sqlite_synchronous_is_the_configured_promise(
    database: TestDatabase, tmp_path: Path, mode: str
) -> None:
    db = Database(make_settings(database, tmp_path, sqlite_synchronous=mode.lower()))
    try:
        async with db.side_transaction() as session:
            level = (await session.execute(text("PRAGMA synchronous"))).scalar_one()
    finally:
        await db.dispose()
    assert level == {"FULL": 2, "NORMAL": 1}[mode]
