"""SQLite reads a list page in its sort order's index, so a page stops once it is full.

SQLite keeps no statistics (nothing runs ``ANALYZE`` on a live file), so its plans do not
depend on how many rows there are. Each list request goes over HTTP while its statements are
captured; the page statement must read ``tasks`` through the index of its order (``EXPLAIN
QUERY PLAN``), and cost SQLite no more work — counted in virtual-machine steps by its
progress handler, never timed — with 2,100 tasks than with 100. Before, the unfiltered,
``tag`` and ``q`` lists took ``ix_tasks_project_status`` and sorted every task of the
caller's projects (0.18 s for an unfiltered first page at 1 M tasks, over a second with
``tag``); ``bench`` (``large``) times it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from tests.conftest import TestDatabase, UserFactory
from tests.factories import TASKS, bulk_tasks, create_project

pytestmark = pytest.mark.sqlite_only

# Each list, and the index its page must be read through.
LISTS: dict[str, tuple[dict[str, Any], str]] = {
    "unfiltered": ({}, "ix_tasks_project_created"),
    "tag": ({"tag": "urgent"}, "ix_tasks_project_created"),
    "q": ({"q": "invoice"}, "ix_tasks_project_created"),
    "by title": ({"sort_by": "title", "order": "asc"}, "ix_tasks_project_title"),
    "one project, by update": (
        {"project_id": "PROJECT", "sort_by": "updated_at"},
        "ix_tasks_project_updated",
    ),
    # A filter an index serves is left to the planner, which takes that index.
    "status": ({"status": "pending"}, "ix_tasks_project_status"),
}


def _steps(connection: sqlite3.Connection, sql: str, parameters: Any) -> int:
    """How much work SQLite does for a statement, in hundreds of virtual-machine steps (its
    progress handler), not in time: the same on any machine."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    connection.set_progress_handler(count, 100)
    try:
        connection.execute(sql, parameters).fetchall()
    finally:
        connection.set_progress_handler(None, 100)
    return steps


async def test_a_list_page_reads_its_orders_index_and_stays_flat(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory, database: TestDatabase
) -> None:
    """Each list's page (first, and through its cursor) is read through its order's index,
    and costs SQLite the same work with 20 times the tasks: each project's scan stops once
    the page is full. A first ``q`` page counts its matches (its total), so only its cursor
    page, which counts nothing, is flat."""
    alice = await make_user("alice")
    project = await create_project(app, alice, "second")

    async def add(count: int) -> None:
        await bulk_tasks(
            app,
            [
                {
                    "project_id": (alice.inbox_id, project)[i % 2],
                    "title": f"Send invoice {i}",
                    "tags": ["urgent"],
                }
                for i in range(count)
            ],
        )

    captured: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        captured.append((args[2], args[3]))

    async def statements(params: dict[str, Any]) -> list[tuple[str, Any, str | None]]:
        """The first page's and the cursor page's page statement, with the cursor."""
        found = []
        page: dict[str, Any] = {**params, "limit": 20}
        for _ in range(2):
            captured.clear()
            event.listen(engine, "before_cursor_execute", capture)
            try:
                response = await client.get(TASKS, params=page, headers=alice.headers)
            finally:
                event.remove(engine, "before_cursor_execute", capture)
            assert response.status_code == 200, response.text
            cursor = response.json()["next_cursor"]
            sql, parameters = next((s, p) for s, p in captured if "FROM tasks" in s)
            found.append((sql, parameters, cursor))
            page = {"cursor": cursor}
        return found

    engine = app.state.database.read_engine.sync_engine
    path = database.url.split(":///", 1)[1]
    lists = {
        name: {k: (project if v == "PROJECT" else v) for k, v in params.items()}
        for name, (params, _) in LISTS.items()
    }
    connection = sqlite3.connect(path)
    try:

        async def work() -> dict[tuple[str, str], int]:
            """Each page's statement, checked for its index, and the work it costs now."""
            costs = {}
            for name, (_, index) in LISTS.items():
                pages = await statements(lists[name])
                for which, (sql, parameters, cursor) in zip(
                    ("first", "cursor"), pages, strict=True
                ):
                    assert cursor, (name, which)
                    plan = [
                        row[3]
                        for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", parameters)
                    ]
                    # The first step reads the page's rows; a total may follow in a subquery.
                    assert f"INDEX {index} " in plan[0], (name, which, plan)
                    costs[name, which] = _steps(connection, sql, parameters)
            return costs

        await add(100)
        small = await work()
        await add(2_000)
        large = await work()
    finally:
        connection.close()
    del small["q", "first"], large["q", "first"]  # its total counts every match
    for page, before in small.items():
        assert large[page] <= before * 1.5 + 2, (page, before, large[page])
