"""A write that waits on a row lock past its bound, or loses a deadlock, is a 503 with
``Retry-After``, never a 500 (PostgreSQL's ``lock_timeout`` 55P03, class 40 serialization
failure and deadlock 40001/40P01): the database is busy, and the client may retry.

The lock is held by an outside connection, as another process's long transaction would.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.conftest import AppFactory, TestDatabase, UserFactory, problem
from tests.factories import TASKS, create_task

pytestmark = pytest.mark.postgres_only


async def test_a_write_that_waits_too_long_for_a_row_lock_is_503(
    database: TestDatabase, make_app: AppFactory, make_user: UserFactory
) -> None:
    app, client = await make_app(db_statement_timeout_seconds=1, background_in_serve=False)
    user = await make_user()
    task_id = await create_task(app, user.inbox_id, user, title="before")
    outside = await asyncpg.connect(database.url.replace("postgresql+asyncpg", "postgresql"))
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
