"""The migrations build exactly the models' schema, and run down to nothing and back."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from taskmanager import migrate
from taskmanager.models.auth import RefreshToken
from taskmanager.models.users import User
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


async def test_0002_security_backfills_existing_rows(scratch_url: str) -> None:
    """Users and refresh tokens written before 0002 keep working after it."""
    await migrate.upgrade_async(scratch_url, "0001")
    created = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)
    engine = create_async_engine(scratch_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO users (email, username, password_hash, role, is_active,"
                    " created_at, updated_at) VALUES ('a@example.com', 'a', 'x', 'user', :t,"
                    " :created, :created)"
                ),
                {"t": True, "created": _stored(scratch_url, created)},
            )
            await connection.execute(
                text(
                    "INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at,"
                    " created_at) VALUES (1, 'f', 'h', :expires, :created)"
                ),
                {
                    "expires": _stored(scratch_url, created + timedelta(days=14)),
                    "created": _stored(scratch_url, created),
                },
            )
        await migrate.upgrade_async(scratch_url)
        async with engine.connect() as connection:
            generation = (await connection.execute(select(User.session_generation))).scalar_one()
            family_end = (
                await connection.execute(select(RefreshToken.family_expires_at))
            ).scalar_one()
    finally:
        await engine.dispose()
    assert generation == 0
    assert family_end == created + timedelta(days=90)
    assert await migrate.schema_drift(scratch_url) == []


def _stored(url: str, value: datetime) -> object:
    # SQLite keeps naive UTC text (models.base.UTCDateTime); PostgreSQL a timestamptz.
    return value.replace(tzinfo=None).isoformat(sep=" ") if url.startswith("sqlite") else value


async def test_0003_removes_unfinished_claims_and_stored_credentials(scratch_url: str) -> None:
    """No token or key an earlier version stored stays at rest; other answers are kept."""
    await migrate.upgrade_async(scratch_url, "0002_security")
    now = _stored(scratch_url, datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    rows = [
        ("POST /api/v1/auth/token", 200, b'{"access_token":"secret"}'),
        ("POST /api/v1/auth/refresh", 200, b'{"refresh_token":"secret"}'),
        ("POST /api/v1/api-keys", 201, b'{"key":"tm_secret"}'),
        ("POST /api/v1/tasks", None, None),  # a claim whose request never finished
        ("POST /api/v1/tasks", 201, b'{"id":1}'),
    ]
    engine = create_async_engine(scratch_url)
    try:
        async with engine.begin() as connection:
            for index, (route, status, body) in enumerate(rows):
                await connection.execute(
                    text(
                        "INSERT INTO idempotency_records (caller, route, key, request_hash,"
                        " status_code, response_body, created_at, expires_at)"
                        " VALUES ('user:1', :route, :key, 'h', :status, :body, :now, :now)"
                    ),
                    {
                        "route": route,
                        "key": f"k{index}",
                        "status": status,
                        "body": body,
                        "now": now,
                    },
                )
        await migrate.upgrade_async(scratch_url)
        async with engine.connect() as connection:
            left = (
                await connection.execute(
                    text("SELECT route, response_body FROM idempotency_records")
                )
            ).all()
    finally:
        await engine.dispose()
    assert [(route, bytes(body)) for route, body in left] == [("POST /api/v1/tasks", b'{"id":1}')]


async def test_0004_folds_the_text_of_existing_tasks(scratch_url: str) -> None:
    """Tasks written before 0004 are found by the Unicode-wide search after it."""
    await migrate.upgrade_async(scratch_url, "0003_idempotency_in_tx")
    now = _stored(scratch_url, datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    engine = create_async_engine(scratch_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO projects (name, is_inbox, version, created_at, updated_at)"
                    " VALUES ('p', false, 1, :now, :now)"
                ),
                {"now": now},
            )
            for title, description in (("\u00c9cole", "Stra\u00dfe"), ("plain", None)):
                await connection.execute(
                    text(
                        "INSERT INTO tasks (project_id, title, description, status, priority,"
                        " tags, created_at, updated_at, version)"
                        " VALUES (1, :title, :description, 'pending', 1, '[]', :now, :now, 1)"
                    ),
                    {"title": title, "description": description, "now": now},
                )
        await migrate.upgrade_async(scratch_url)
        async with engine.connect() as connection:
            folded = (
                await connection.execute(
                    text("SELECT title_folded, description_folded FROM tasks ORDER BY id")
                )
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(row) for row in folded] == [("\u00e9cole", "strasse"), ("plain", None)]


async def test_0010_counts_the_tasks_already_there(scratch_url: str) -> None:
    """Tasks written before 0010 are in its counters from the start, and the triggers it
    creates keep them from then on."""
    await migrate.upgrade_async(scratch_url, "0009_versions")
    now = _stored(scratch_url, datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    engine = create_async_engine(scratch_url)
    insert_task = text(
        "INSERT INTO tasks (project_id, title, status, priority, tags, created_at, updated_at,"
        " version, title_folded) VALUES (:project, 't', :status, 1, :tags, :now, :now, 1, 't')"
    )
    try:
        async with engine.begin() as connection:
            for name in ("a", "b"):
                await connection.execute(
                    text(
                        "INSERT INTO projects (name, is_inbox, version, created_at, updated_at)"
                        " VALUES (:name, false, 1, :now, :now)"
                    ),
                    {"name": name, "now": now},
                )
            for index in range(20):
                status = ("pending", "completed")[index % 2]
                tags = '["a", "b", "a"]' if index < 4 else '["b"]'
                values = {"project": 1 + index % 2, "status": status, "now": now, "tags": tags}
                await connection.execute(insert_task, values)
        await migrate.upgrade_async(scratch_url)
        async with engine.begin() as connection:
            await connection.execute(
                insert_task, {"project": 2, "status": "in_progress", "now": now, "tags": '["c"]'}
            )
            await connection.execute(
                text("UPDATE tasks SET status = 'cancelled', tags = '[\"c\"]' WHERE id = 1")
            )
            await connection.execute(text("DELETE FROM tasks WHERE id = 2"))
            counted = (
                await connection.execute(
                    text(
                        "SELECT project_id, status, SUM(tasks) FROM task_counts"
                        " GROUP BY project_id, status HAVING SUM(tasks) <> 0"
                        " ORDER BY project_id, status"
                    )
                )
            ).all()
            tagged = (
                await connection.execute(
                    text(
                        "SELECT project_id, tag, SUM(tasks) FROM task_tag_counts"
                        " GROUP BY project_id, tag HAVING SUM(tasks) <> 0"
                        " ORDER BY project_id, tag"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    # Tasks 1-4 carried a, b (a twice), the others b; 1 became c, 2 went, a new c came.
    assert [(p, t, int(n)) for p, t, n in tagged] == [
        (1, "a", 1),
        (1, "b", 9),
        (1, "c", 1),
        (2, "a", 1),
        (2, "b", 9),
        (2, "c", 1),
    ]
    assert [(p, s, int(n)) for p, s, n in counted] == [
        (1, "cancelled", 1),
        (1, "pending", 9),
        (2, "completed", 9),
        (2, "in_progress", 1),
    ]


async def test_0010_counts_only_tags_a_filter_can_match(scratch_url: str) -> None:
    """Rows written outside the API with tags that are not an array of strings (JSON null, a
    scalar, numbers, nested values) neither stop the migration nor a later write: only the
    string elements the ``tag`` filter can match are counted, once per task — on SQLite, a
    scalar string too (its ``json_each`` filter matches one)."""
    await migrate.upgrade_async(scratch_url, "0009_versions")
    now = _stored(scratch_url, datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
    engine = create_async_engine(scratch_url)
    odd = ["null", '"x"', '[1, "1", ["n"], {"k": 1}, "1"]', '["ok"]']
    counted_tags = text(
        "SELECT tag, SUM(tasks) FROM task_tag_counts GROUP BY tag HAVING SUM(tasks) <> 0"
        " ORDER BY tag"
    )
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO projects (name, is_inbox, version, created_at, updated_at)"
                    " VALUES ('p', false, 1, :now, :now)"
                ),
                {"now": now},
            )
            for tags in odd:
                await connection.execute(
                    text(
                        "INSERT INTO tasks (project_id, title, status, priority, tags, created_at,"
                        " updated_at, version, title_folded)"
                        " VALUES (1, 't', 'pending', 1, :tags, :now, :now, 1, 't')"
                    ),
                    {"tags": tags, "now": now},
                )
        await migrate.upgrade_async(scratch_url)
        async with engine.begin() as connection:
            after_upgrade = [(t, int(n)) for t, n in (await connection.execute(counted_tags))]
            await connection.execute(text("UPDATE tasks SET tags = '[2, \"ok\"]' WHERE id < 4"))
            after_update = [(t, int(n)) for t, n in (await connection.execute(counted_tags))]
            await connection.execute(text("DELETE FROM tasks"))
            after_delete = [(t, int(n)) for t, n in (await connection.execute(counted_tags))]
    finally:
        await engine.dispose()
    scalar = [("x", 1)] if scratch_url.startswith("sqlite") else []
    assert after_upgrade == sorted([("1", 1), ("ok", 1), *scalar])
    assert after_update == [("ok", 4)]
    assert after_delete == []
