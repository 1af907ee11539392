"""The counters behind list totals (``task_counts``, migration 0010): kept exact by the
database's triggers through every kind of write, and read instead of a count when a list
filters by nothing but project and status."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from taskmanager.models.tasks import Task, TaskCount, TaskTagCount
from tests.conftest import TestDatabase, UserFactory
from tests.factories import (
    API,
    TASKS,
    TEST_PASSWORD,
    TestUser,
    add_member,
    bulk_tasks,
    create_project,
    db_execute,
)

STATUSES = ("pending", "in_progress", "completed", "cancelled")
TAGS = ("home", "work", "urgent")


async def _counters_and_tasks(app: FastAPI) -> tuple[dict[Any, int], dict[Any, int]]:
    """(project, status) and (project, "#" + tag) → tasks, from the counters and from the
    tasks themselves."""
    async with app.state.database.snapshot() as session:
        by_status = await session.execute(
            select(TaskCount.project_id, TaskCount.status, func.sum(TaskCount.tasks)).group_by(
                TaskCount.project_id, TaskCount.status
            )
        )
        by_tag = await session.execute(
            select(
                TaskTagCount.project_id, TaskTagCount.tag, func.sum(TaskTagCount.tasks)
            ).group_by(TaskTagCount.project_id, TaskTagCount.tag)
        )
        tasks = (await session.execute(select(Task.project_id, Task.status, Task.tags))).all()
    counters = {(p, s): int(n) for p, s, n in by_status if int(n) != 0}
    counters |= {(p, "#" + t): int(n) for p, t, n in by_tag if int(n) != 0}
    actual = Counter((project, status) for project, status, _ in tasks)
    actual.update((project, "#" + tag) for project, _, tags in tasks for tag in set(tags))
    return counters, dict(actual)


async def assert_counters_exact(app: FastAPI) -> None:
    counters, actual = await _counters_and_tasks(app)
    assert counters == actual


async def _walk(
    client: httpx.AsyncClient, headers: dict[str, str], url: str, params: dict[str, Any]
) -> tuple[int, list[dict[str, Any]]]:
    """The first page's total and every item of the list, by offset pages of 100."""
    items: list[dict[str, Any]] = []
    total = None
    while True:
        response = await client.get(
            url, params={**params, "limit": 100, "skip": len(items)}, headers=headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert response.headers["x-total-count"] == str(body["total"])
        total = body["total"] if total is None else total
        items.extend(body["items"])
        if len(body["items"]) < 100:
            return total, items


async def _assert_totals(
    client: httpx.AsyncClient, viewer: TestUser, projects: list[int], *, admin: bool = False
) -> None:
    """Every list the counters serve gives the total of the items it holds, and the items
    are those the unfiltered list holds with that status or project."""
    _, everything = await _walk(client, viewer.headers, TASKS, {})
    queries: list[tuple[str, dict[str, Any]]] = [(TASKS, {})]
    queries += [(TASKS, {"status": status}) for status in STATUSES]
    queries.append((TASKS, {"status": ["pending", "completed"]}))
    queries += [(TASKS, {"tag": tag}) for tag in TAGS]
    queries.append((TASKS, {"tag": ["home", "work"]}))  # counted: two tags
    queries.append((TASKS, {"tag": "urgent", "status": "pending"}))  # counted: tag and status
    for project in projects:
        queries.append((TASKS, {"project_id": project}))
        queries.append((TASKS, {"project_id": project, "status": "in_progress"}))
        queries.append((TASKS, {"project_id": project, "tag": "work"}))
        queries.append((f"{API}/projects/{project}/tasks", {"status": ["cancelled", "pending"]}))
    for url, params in queries:
        total, items = await _walk(client, viewer.headers, url, params)
        statuses = params.get("status")
        wanted = [statuses] if isinstance(statuses, str) else statuses
        within: int | None = params.get("project_id") or (
            int(url.split("/")[-2]) if url != TASKS else None
        )
        tags = params.get("tag", [])
        tagged = {tags} if isinstance(tags, str) else set(tags)
        expected = [
            task
            for task in everything
            if (wanted is None or task["status"] in wanted)
            and tagged <= set(task["tags"])
            and (within is None or task["project_id"] == within)
        ]
        assert total == len(items) == len(expected), (url, params, admin)
        assert {task["id"] for task in items} == {task["id"] for task in expected}


async def test_counters_follow_every_kind_of_write(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """Creates, status changes, moves, deletes (driver and Session paths alike), rows written
    directly, a member's removal, a project's deletion and an account's deletion: the
    counters equal the tasks after each, and every list's total equals what it lists."""
    owner, editor = await make_user("owner"), await make_user("editor")
    admin = await make_user("root", role="admin")
    projects = [
        await create_project(app, owner, "one"),
        await create_project(app, owner, "two"),
        await create_project(app, editor, "theirs"),
    ]
    await add_member(app, projects[0], editor, "editor")
    everywhere = [owner.inbox_id, *projects[:2]]
    chance = random.Random(13)
    tasks: list[dict[str, Any]] = []

    def headers(user: TestUser) -> dict[str, str]:
        if chance.random() < 0.5:
            return user.headers
        # A keyed request takes the Session path (its record commits with the change).
        return {**user.headers, "Idempotency-Key": str(uuid.uuid4())}

    for index in range(24):
        project = chance.choice(everywhere)
        body = {
            "title": f"t{index}",
            "project_id": project,
            "status": chance.choice(STATUSES),
            "tags": chance.sample(TAGS, chance.randint(0, 3)),
        }
        response = await client.post(TASKS, json=body, headers=headers(owner))
        assert response.status_code == 201, response.text
        tasks.append(response.json())
    await bulk_tasks(
        app,
        [
            {"project_id": projects[2], "title": f"b{i}", "status": STATUSES[i % 4]}
            for i in range(9)
        ],
    )
    await assert_counters_exact(app)

    for _ in range(40):
        task = chance.choice(tasks)
        change: dict[str, Any] = {"status": chance.choice(STATUSES)}
        if chance.random() < 0.5:
            change["tags"] = chance.sample(TAGS, chance.randint(0, 3))
        if chance.random() < 0.3:
            change["project_id"] = chance.choice(everywhere)
        if chance.random() < 0.5:
            response = await client.patch(
                f"{TASKS}/{task['id']}", json=change, headers=headers(owner)
            )
        else:
            full = {"title": task["title"], "project_id": task["project_id"], **change}
            response = await client.put(f"{TASKS}/{task['id']}", json=full, headers=headers(owner))
        assert response.status_code == 200, response.text
        tasks[tasks.index(task)] = response.json()
    for task in chance.sample(tasks, 6):
        response = await client.delete(f"{TASKS}/{task['id']}", headers=headers(owner))
        assert response.status_code == 204, response.text
        tasks.remove(task)
    # A status changed by a statement that is not the API's (a restore, a script).
    await db_execute(
        app,
        update(Task)
        .where(Task.project_id == projects[2])
        .values(status="completed", tags=["home"]),
    )
    await assert_counters_exact(app)
    await _assert_totals(client, owner, everywhere)
    await _assert_totals(client, editor, [projects[0], projects[2]])
    await _assert_totals(client, admin, [owner.inbox_id, *projects], admin=True)

    # The editor leaves (assignments go, statuses stay), then a project and an account go
    # with their tasks (the database's cascade).
    left = await client.delete(
        f"{API}/projects/{projects[0]}/members/{editor.id}", headers=owner.headers
    )
    assert left.status_code == 204, left.text
    gone = await client.delete(f"{API}/projects/{projects[1]}", headers=owner.headers)
    assert gone.status_code == 204, gone.text
    await assert_counters_exact(app)
    deleted = await client.request(
        "DELETE",
        f"{API}/users/me",
        json={"current_password": TEST_PASSWORD},
        headers=editor.headers,
    )
    assert deleted.status_code == 204, deleted.text
    await assert_counters_exact(app)
    await _assert_totals(client, owner, [owner.inbox_id, projects[0]])
    await _assert_totals(client, admin, [owner.inbox_id, projects[0]], admin=True)


async def test_a_total_by_project_and_status_reads_the_counters(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """The unfiltered, status, project and one-tag totals are the counters' sum (a counter row
    set off by hand shows in them), and any other filter counts its tasks (it does not)."""
    owner = await make_user("owner")
    await bulk_tasks(
        app,
        [
            {"project_id": owner.inbox_id, "title": f"t{i}", "priority": 2, "tags": ["x"]}
            for i in range(5)
        ],
    )
    await db_execute(
        app,
        update(TaskCount)
        .where(
            TaskCount.project_id == owner.inbox_id,
            TaskCount.status == "pending",
            TaskCount.shard == 1,  # one of the rows (ids 1 to 5 fill shards 1 to 5)
        )
        .values(tasks=TaskCount.tasks + 100),
    )
    await db_execute(
        app,
        update(TaskTagCount)
        .where(TaskTagCount.project_id == owner.inbox_id, TaskTagCount.shard == 1)
        .values(tasks=TaskTagCount.tasks + 10),
    )

    async def total(url: str = TASKS, **params: Any) -> int:
        response = await client.get(url, params=params, headers=owner.headers)
        assert response.status_code == 200, response.text
        return int(response.json()["total"])

    assert await total() == 105
    assert await total(status="pending") == 105
    assert await total(project_id=owner.inbox_id) == 105
    assert await total(f"{API}/projects/{owner.inbox_id}/tasks") == 105
    assert await total(status="completed") == 0
    assert await total(priority=2) == 5
    assert await total(q="t") == 5
    assert await total(assignee_id="me") == 0
    assert await total(tag="x") == 15
    assert await total(tag="X", project_id=owner.inbox_id) == 15
    assert await total(tag="y") == 0
    assert await total(tag="x", status="pending") == 5
    assert await total(tag=["x", "y"]) == 0


async def test_concurrent_moves_between_statuses_neither_deadlock_nor_drift(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory, database: TestDatabase
) -> None:
    """Opposite status changes in one project at once (each moves a task between two counter
    rows, which PostgreSQL locks in key order) and creates beside them: every request
    succeeds — no deadlock answered 503 — and the counters stay exact."""
    owner = await make_user("owner")
    project = await create_project(app, owner, "busy")
    # Ids 8 apart share a shard: the same two counter rows, taken in opposite directions.
    await bulk_tasks(
        app,
        [
            {"project_id": project, "title": f"t{i}", "status": ("pending", "completed")[i % 2]}
            for i in range(64)
        ],
    )
    async with app.state.database.snapshot() as session:
        rows = (
            await session.execute(select(Task.id, Task.status).where(Task.project_id == project))
        ).all()

    async def flip(task_id: int, status: str) -> int:
        other = "completed" if status == "pending" else "pending"
        response = await client.patch(
            f"{TASKS}/{task_id}", json={"status": other}, headers=owner.headers
        )
        return response.status_code

    async def create(index: int) -> int:
        body = {"title": f"new{index}", "project_id": project, "status": "completed"}
        return (await client.post(TASKS, json=body, headers=owner.headers)).status_code

    for _ in range(2):
        answers = await asyncio.gather(
            *(flip(task_id, status) for task_id, status in rows),
            *(create(i) for i in range(16)),
        )
        assert Counter(answers) == Counter({200: len(rows), 201: 16}), database.backend
        async with app.state.database.snapshot() as session:
            rows = (
                await session.execute(
                    select(Task.id, Task.status).where(Task.project_id == project)
                )
            ).all()
    await assert_counters_exact(app)


@pytest.mark.postgres_only
async def test_a_bulk_insert_or_cascade_writes_each_counter_row_once(
    app: FastAPI, make_user: UserFactory, database: TestDatabase
) -> None:
    """PostgreSQL counts inserts and deletes per statement: 2,000 tasks inserted by one
    statement, then deleted by their project's cascade, write each counter row once — per
    task, every update of a hot row in one transaction walked the versions the earlier ones
    left (time in the square of the tasks). Read from the transaction's own statistics."""
    owner = await make_user("owner")
    project = await create_project(app, owner, "bulk")
    connection = await asyncpg.connect(database.url.replace("postgresql+asyncpg", "postgresql"))
    written = (
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables"
        " WHERE relname IN ('task_counts', 'task_tag_counts')"
    )
    try:
        async with connection.transaction():
            await connection.execute(
                "INSERT INTO tasks (project_id, title, title_folded, status, priority, tags,"
                " created_at, updated_at, version) SELECT $1, 't', 't',"
                " (ARRAY['pending', 'completed'])[1 + g % 2], 1, '[\"a\", \"b\"]', now(), now(), 1"
                " FROM generate_series(1, 2000) AS g",
                project,
            )
            # Consecutive ids alternate statuses, so each status fills 4 of the 8 shards (8
            # status rows) and each of the two tags all 8 (16 tag rows): one write each.
            assert await connection.fetchval(written) == 8 + 16
            await connection.execute("DELETE FROM projects WHERE id = $1", project)
            # Decrements (only of rows still there) and the counter rows' own cascade.
            assert await connection.fetchval(written) <= 24 + 2 * 24
            assert await connection.fetchval("SELECT count(*) FROM task_counts") == 0
    finally:
        await connection.close()
    await assert_counters_exact(app)


@pytest.mark.postgres_only
async def test_a_task_change_and_its_projects_deletion_do_not_deadlock(
    app: FastAPI, make_user: UserFactory, database: TestDatabase
) -> None:
    """A write holding a task (as a PATCH's ``FOR UPDATE`` does) while its project is being
    deleted (whose cascade waits for that task) adds a counter row for a new tag and status:
    with a foreign key on the counters, its check waited for the project row and PostgreSQL
    broke the cycle by aborting one side (a 503). The write commits, then the deletion, and
    the counters hold nothing of the project."""
    owner = await make_user("owner")
    project = await create_project(app, owner, "going")
    await bulk_tasks(app, [{"project_id": project, "title": f"t{i}"} for i in range(3)])
    plain = database.url.replace("postgresql+asyncpg", "postgresql")
    writer, deleter = await asyncpg.connect(plain), await asyncpg.connect(plain)
    try:
        task_id = await writer.fetchval("SELECT min(id) FROM tasks WHERE project_id = $1", project)
        async with writer.transaction():
            await writer.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", task_id)
            deleting = asyncio.create_task(
                deleter.execute("DELETE FROM projects WHERE id = $1", project)
            )
            # The deletion is under way when it waits for the task's row lock.
            for _ in range(500):
                waiting = await writer.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'DELETE FROM projects%'"
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)
            assert waiting == 1
            await writer.execute(
                "UPDATE tasks SET tags = '[\"new\"]', status = 'completed' WHERE id = $1", task_id
            )
        assert await deleting == "DELETE 1"
        for table in ("task_counts", "task_tag_counts"):
            left = await writer.fetchval(
                f"SELECT count(*) FROM {table} WHERE project_id = $1", project
            )
            assert left == 0, table
    finally:
        await writer.close()
        await deleter.close()
    await assert_counters_exact(app)


@pytest.mark.postgres_only
async def test_truncating_the_tasks_empties_the_counters(
    app: FastAPI, make_user: UserFactory, database: TestDatabase
) -> None:
    owner = await make_user("owner")
    await bulk_tasks(app, [{"project_id": owner.inbox_id, "title": "t", "tags": ["a"]}])
    connection = await asyncpg.connect(database.url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await connection.execute("TRUNCATE tasks CASCADE")
    finally:
        await connection.close()
    await assert_counters_exact(app)
    async with app.state.database.snapshot() as session:
        assert (await session.execute(select(func.count()).select_from(TaskTagCount))).scalar() == 0
