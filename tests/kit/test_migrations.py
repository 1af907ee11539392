"""The migrations build exactly the models' schema, and run down to nothing and back."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from taskmanager import migrate
from tests.conftest import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    TestDatabase,
    _create_pg_database,
    _drop_pg_database,
    require_service,
)


async def test_models_and_migrations_do_not_drift(database: TestDatabase) -> None:
    """The ``alembic check`` of CI: autogenerate finds nothing to add."""
    assert await migrate.schema_drift(database.url) == []


@pytest.fixture(params=["sqlite", "postgres"])
async def scratch_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of its own (the shared one is in use by other tests)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}"
        return
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    name = f"taskmanager_mig_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await _create_pg_database(name)
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        await _drop_pg_database(name)


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await engine.dispose()
    return set(names) - {"alembic_version"}


async def test_downgrade_to_base_and_upgrade_again(scratch_url: str) -> None:
    await migrate.upgrade_async(scratch_url)
    built = await _tables(scratch_url)
    assert {"users", "projects", "tasks"} <= built
    await _to_thread_downgrade(scratch_url)
    assert await _tables(scratch_url) == set()
    await migrate.upgrade_async(scratch_url)
    assert await _tables(scratch_url) == built
    assert await migrate.schema_drift(scratch_url) == []


async def _to_thread_downgrade(url: str) -> None:
    import asyncio

    await asyncio.to_thread(migrate.downgrade, url, "base")
