"""The database layer itself: UTC times, stale connections, SQLite writer concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select, text

from taskmanager.kit import db as db_module
from taskmanager.kit.db import Database
from taskmanager.models.base import UTCDateTime
from taskmanager.models.users import User
from tests.conftest import PG_HOST, PG_PORT, PG_USER, TestDatabase, make_settings


def _user(n: int) -> User:
    return User(email=f"u{n}@example.com", username=f"u{n}", password_hash="x")


async def test_datetimes_come_back_aware_utc(database: TestDatabase, tmp_path: Path) -> None:
    database_ = Database(make_settings(database, tmp_path))
    try:
        plus_two = timezone(timedelta(hours=2))
        async with database_.side_transaction() as session:
            user = _user(1)
            user.created_at = datetime(2026, 1, 1, 12, 0, tzinfo=plus_two)
            session.add(user)
            await session.commit()
        async with database_.snapshot() as session:
            created = (await session.execute(select(User.created_at))).scalar_one()
        assert created == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
        assert created.utcoffset() == timedelta(0)
    finally:
        async with database_.side_transaction() as session:
            await session.execute(text("DELETE FROM users"))
            await session.commit()
        await database_.dispose()


def test_naive_datetime_is_refused() -> None:
    column_type = UTCDateTime()
    with pytest.raises(ValueError, match="naive"):
        column_type.process_bind_param(datetime(2026, 1, 1), None)  # type: ignore[arg-type]


async def test_concurrent_writers_never_see_database_locked(
    database: TestDatabase, tmp_path: Path
) -> None:
    """50 transactions that read then write, all at once: every one commits."""
    database_ = Database(make_settings(database, tmp_path))

    async def writer(n: int) -> None:
        async with database_.side_transaction() as session:
            # Read first, then write: the pattern that deadlocks deferred SQLite transactions.
            await session.execute(select(func.count()).select_from(User))
            session.add(_user(n))
            await session.commit()

    try:
        await asyncio.gather(*(writer(n) for n in range(50)))
        async with database_.snapshot() as session:
            count = (await session.execute(select(func.count()).select_from(User))).scalar_one()
        assert count == 50
    finally:
        async with database_.side_transaction() as session:
            await session.execute(text("DELETE FROM users"))
            await session.commit()
        await database_.dispose()


@pytest.mark.postgres_only
async def test_idle_connection_killed_by_the_server_is_replaced(
    database: TestDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    database_ = Database(make_settings(database, tmp_path))
    try:
        async with database_.read_engine.connect() as connection:  # now pooled
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
        try:
            # Only this engine's connection: the shared test app's pool must survive.
            killed = await admin.fetchval("SELECT count(pg_terminate_backend($1))", pid)
        finally:
            await admin.close()
        assert killed == 1
        await database_.ping()  # would raise without the checkout ping
    finally:
        await database_.dispose()
