"""``kit.driver`` on both backends: rows read as a ``Session`` reads them, and a block or a
transaction script that fails, is refused or is cancelled writes nothing (or, a script
cancelled while SQLite's thread runs it, all of it) and leaves the pool serving.

On SQLite the writes take the one writer connection (a pool of one): a block that left it
checked out, or in an open transaction, would make the next write wait out the pool
timeout and answer 503, so each test ends with a write that must succeed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, bindparam, func, insert, literal, select, text

from taskmanager.kit.db import Database
from taskmanager.kit.driver import (
    DriverFailed,
    DriverStatement,
    Script,
    driver_connection,
    on_driver,
    run_transaction,
)
from taskmanager.models.base import JSONList, UTCDateTime
from taskmanager.models.users import User
from tests.conftest import TestDatabase, make_settings

_USERS: Table = User.__table__  # type: ignore[assignment]

_INSERT = DriverStatement(
    insert(_USERS)
    .values(
        email=bindparam("email"),
        username=bindparam("username"),
        password_hash=bindparam("password_hash"),
        created_at=bindparam("created_at", type_=UTCDateTime()),
        updated_at=bindparam("created_at", type_=UTCDateTime()),
        role="user",
        is_active=True,
        session_generation=0,
        version=1,
    )
    .returning(_USERS.c.id, _USERS.c.created_at, _USERS.c.is_active)
)
_READ_STATEMENT = select(
    _USERS.c.created_at,
    _USERS.c.is_active,
    literal(["b", "a"], JSONList).label("tags"),
).where(_USERS.c.id == bindparam("id"))
_READ = DriverStatement(_READ_STATEMENT)
_COUNT = DriverStatement(select(func.count()).select_from(_USERS))


@pytest.fixture
async def db(database: TestDatabase, tmp_path: Path) -> AsyncIterator[Database]:
    database_ = Database(make_settings(database, tmp_path, db_pool_timeout_seconds=1))
    try:
        yield database_
    finally:
        async with database_.side_transaction() as session:
            await session.execute(text("DELETE FROM users"))
        await database_.dispose()


def _user(n: int, created_at: datetime | None = None) -> dict[str, Any]:
    return {
        "email": f"u{n}@example.com",
        "username": f"u{n}",
        "password_hash": "x",
        "created_at": created_at or datetime.now(UTC),
    }


async def _count(db: Database) -> int:
    async with driver_connection(db, write=False) as connection:
        row = await connection.fetchrow(_COUNT, {})
    assert row is not None
    return int(row[0])


async def _writes_again(db: Database, n: int) -> None:
    """A write that must succeed at once: the writer is free and usable."""
    before = await _count(db)
    async with driver_connection(db, write=True, transaction=True) as connection:
        assert await connection.fetchrow(_INSERT, _user(n)) is not None
    assert await _count(db) == before + 1


async def test_every_file_backed_database_is_served_on_the_driver(db: Database) -> None:
    assert on_driver(db)


async def test_a_write_that_leaves_a_python_default_to_sqlalchemy_is_refused(
    db: Database,
) -> None:
    # users.role has default="user": SQLAlchemy computes it when it executes the statement
    # itself; on the driver it would silently be NULL.
    statement = DriverStatement(insert(_USERS).values(email=bindparam("email")))
    with pytest.raises(ValueError, match="Python-defaulted"):
        statement.compiled(db.write_engine.dialect)


async def test_a_row_reads_as_a_session_reads_it(db: Database) -> None:
    plus_two = timezone(timedelta(hours=2))
    async with driver_connection(db, write=True) as connection:
        inserted = await connection.fetchrow(
            _INSERT, _user(1, datetime(2026, 1, 1, 12, 0, tzinfo=plus_two))
        )
    assert inserted is not None
    user_id, created_at, is_active = inserted
    assert created_at == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert created_at.utcoffset() == timedelta(0)
    assert is_active is True
    async with driver_connection(db, write=False) as connection:
        row = await connection.fetchrow(_READ, {"id": user_id})
        missing = await connection.fetchrow(_READ, {"id": user_id + 1000})
    async with db.snapshot() as session:
        expected = (await session.execute(_READ_STATEMENT, {"id": user_id})).one()
    assert row == tuple(expected)
    assert row == (datetime(2026, 1, 1, 10, 0, tzinfo=UTC), True, ["b", "a"])
    assert missing is None


async def test_a_block_that_raises_commits_nothing_and_the_writer_serves_on(
    db: Database,
) -> None:
    async def insert_then_fail() -> None:
        async with driver_connection(db, write=True, transaction=True) as connection:
            assert await connection.fetchrow(_INSERT, _user(1)) is not None
            raise RuntimeError("after the insert")

    with pytest.raises(RuntimeError, match="after the insert"):
        await insert_then_fail()
    assert await _count(db) == 0
    await _writes_again(db, 2)


async def test_a_refused_statement_is_driver_failed_and_rolls_back_the_block(
    db: Database,
) -> None:
    await _writes_again(db, 1)

    async def insert_then_duplicate() -> None:
        async with driver_connection(db, write=True, transaction=True) as connection:
            assert await connection.fetchrow(_INSERT, _user(2)) is not None
            await connection.fetchrow(_INSERT, _user(1))  # the same username: refused

    with pytest.raises(DriverFailed):
        await insert_then_duplicate()
    assert await _count(db) == 1  # u2 went with the block
    assert db.breaker.is_open is False  # a refusal is not an outage
    await _writes_again(db, 3)


async def test_a_block_cancelled_mid_transaction_commits_nothing_and_frees_the_writer(
    db: Database,
) -> None:
    inserted = asyncio.Event()

    async def write_then_wait() -> None:
        async with driver_connection(db, write=True, transaction=True) as connection:
            assert await connection.fetchrow(_INSERT, _user(1)) is not None
            inserted.set()
            await asyncio.Event().wait()  # a client that went away, mid-transaction

    task = asyncio.create_task(write_then_wait())
    await asyncio.wait_for(inserted.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _count(db) == 0
    await _writes_again(db, 2)


def _two_users(
    first: int, second: int, *, between: Any = None, threads: list[int] | None = None
) -> Script[tuple[Sequence[Any] | None, Sequence[Any] | None]]:
    """Insert two users, calling ``between()`` after the first; note the running thread at
    every step in ``threads``."""
    seen = threads if threads is not None else []
    seen.append(threading.get_ident())
    one = yield _INSERT, _user(first)
    seen.append(threading.get_ident())
    if between is not None:
        between()
    two = yield _INSERT, _user(second)
    seen.append(threading.get_ident())
    return one, two


async def test_a_script_commits_its_statements_together_and_gets_each_row(db: Database) -> None:
    threads: list[int] = []
    one, two = await run_transaction(db, _two_users(1, 2, threads=threads))
    assert one is not None
    assert two is not None
    assert two[0] > one[0]
    # Each row reached the script through its columns' result processors.
    assert one[1].utcoffset() == timedelta(0)
    assert one[2] is True
    assert await _count(db) == 2
    if db.dialect == "sqlite":
        # The whole transaction ran in the connection's thread, in one call: the writer
        # never waited on the event loop between statements.
        assert len(set(threads)) == 1
        assert threads[0] != threading.get_ident()
    else:
        assert set(threads) == {threading.get_ident()}
    await _writes_again(db, 3)


async def test_a_script_that_raises_commits_nothing_and_the_writer_serves_on(
    db: Database,
) -> None:
    def fail() -> None:
        raise RuntimeError("between the statements")

    with pytest.raises(RuntimeError, match="between the statements"):
        await run_transaction(db, _two_users(1, 2, between=fail))
    assert await _count(db) == 0
    await _writes_again(db, 3)


async def test_a_script_whose_statement_is_refused_is_driver_failed_and_commits_nothing(
    db: Database,
) -> None:
    await _writes_again(db, 1)
    with pytest.raises(DriverFailed):
        await run_transaction(db, _two_users(2, 1))  # the second: u1 again, refused
    assert await _count(db) == 1  # u2 went with the transaction
    assert db.breaker.is_open is False
    await _writes_again(db, 3)


async def test_a_cancelled_script_is_all_or_nothing_and_frees_the_writer(db: Database) -> None:
    loop = asyncio.get_running_loop()

    def cancel_between() -> None:
        # Between the two statements, from whichever thread runs the script: the loop runs
        # the cancel before anything else it has to do — on PostgreSQL before the second
        # statement's answer can arrive (a timed cancel from the test raced the COMMIT on a
        # loaded machine); on SQLite while the connection's thread still runs the script.
        loop.call_soon_threadsafe(task.cancel)
        if db.dialect == "sqlite":
            time.sleep(0.2)

    task = asyncio.create_task(run_transaction(db, _two_users(1, 2, between=cancel_between)))
    with pytest.raises(asyncio.CancelledError):
        await task
    # SQLite: the thread finishes the transaction whole (a cancel cannot split it);
    # PostgreSQL: the cancel lands between statements and the transaction rolls back.
    assert await _count(db) == (2 if db.dialect == "sqlite" else 0)
    await _writes_again(db, 3)
