"""A write that waits on a row lock past its bound, or loses a deadlock, is a 503 with
``Retry-After``, never a 500 (PostgreSQL's ``lock_timeout`` 55P03, class 40 serialization
failure and deadlock 40001/40P01): the database is busy, and the client may retry.

The lock is held by an outside connection, as another process's long transaction would.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson
import pytest

from taskmanager.kit.logging import log_formatter
from tests.conftest import AppFactory, TestDatabase, UserFactory, problem
from tests.factories import TASKS, create_task

pytestmark = pytest.mark.postgres_only


def _logged(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    formatter = log_formatter()
    assert formatter is not None
    return [orjson.loads(formatter.format(record)) for record in caplog.records]


async def test_a_write_that_waits_too_long_for_a_row_lock_is_503(
    database: TestDatabase,
    make_app: AppFactory,
    make_user: UserFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """503 for that request, logged as contention and not as an outage: the breaker stays
    closed, so the next request is served at once."""
    app, client = await make_app(
        db_statement_timeout_seconds=1, background_in_serve=False, log_level="INFO"
    )
    user = await make_user()
    task_id = await create_task(app, user.inbox_id, user, title="before")
    outside = await asyncpg.connect(database.url.replace("postgresql+asyncpg", "postgresql"))
    caplog.set_level(logging.INFO)
    try:
        async with outside.transaction():
            await outside.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", task_id)
            waited = await client.patch(
                f"{TASKS}/{task_id}", json={"title": "after"}, headers=user.headers
            )
    finally:
        await outside.close()
    problem(waited, 503, "SERVICE_UNAVAILABLE")
    assert int(waited.headers["retry-after"]) >= 1
    after = await client.get(f"{TASKS}/{task_id}", headers=user.headers)
    assert after.json()["title"] == "before"  # nothing changed
    again = await client.patch(f"{TASKS}/{task_id}", json={"title": "after"}, headers=user.headers)
    assert again.status_code == 200, again.text
    events = [line["event"] for line in _logged(caplog) if line.get("level") == "warning"]
    assert "database_contention" in events, events
    assert "dependency_unavailable" not in events, events
