"""An assignee is a member of the task's project (API.md §5), also when a write that assigns
a member races the member's removal: whichever commits first, no task is left assigned to a
non-member (``projects.access.is_member_sql(hold=True)``, ``tasks.service.unassign_member``).

On PostgreSQL (READ COMMITTED) a write judged membership by the snapshot it started with,
so an assignment racing the removal could commit after it. The deterministic cases stop
the removal inside its transaction (membership deleted, not committed) with a row lock
held from outside on a task it must unassign, then send the write.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from taskmanager.models.projects import ProjectMember
from taskmanager.models.tasks import Task
from tests.conftest import TestDatabase, UserFactory, problem
from tests.factories import API, TASKS, api_add_member, api_create_project, api_create_task


async def _orphans(app: FastAPI) -> list[tuple[Any, ...]]:
    """(task id, project id, assignee id) of every task whose assignee is not a member."""
    member, task = ProjectMember.__table__.c, Task.__table__.c
    stmt = select(task.id, task.project_id, task.assignee_id).where(
        task.assignee_id.is_not(None),
        ~select(member.user_id)
        .where(member.project_id == task.project_id, member.user_id == task.assignee_id)
        .exists(),
    )
    async with app.state.database.snapshot() as session:
        return [tuple(row) for row in (await session.execute(stmt)).all()]


@pytest.mark.postgres_only
@pytest.mark.parametrize("write", ["patch", "put", "create", "move"])
async def test_an_assignment_during_the_removal_is_refused(
    app: FastAPI,
    client: httpx.AsyncClient,
    make_user: UserFactory,
    database: TestDatabase,
    write: str,
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    project = (await api_create_project(client, alice, "Leaving"))["id"]
    elsewhere = (await api_create_project(client, alice, "Staying"))["id"]
    for project_id in (project, elsewhere):
        await api_add_member(client, alice, project_id, bob, "editor")
    bobs = await api_create_task(client, alice, project_id=project, assignee_id=bob.id)
    plain = await api_create_task(client, alice, project_id=project)
    moving = await api_create_task(client, alice, project_id=elsewhere, assignee_id=bob.id)
    writes = {
        "patch": lambda: client.patch(
            f"{TASKS}/{plain['id']}", json={"assignee_id": bob.id}, headers=alice.headers
        ),
        "put": lambda: client.put(
            f"{TASKS}/{plain['id']}",
            json={"title": "Given", "assignee_id": bob.id},
            headers=alice.headers,
        ),
        "create": lambda: client.post(
            TASKS,
            json={"title": "New", "project_id": project, "assignee_id": bob.id},
            headers=alice.headers,
        ),
        "move": lambda: client.patch(
            f"{TASKS}/{moving['id']}", json={"project_id": project}, headers=alice.headers
        ),
    }

    outside = await asyncpg.connect(database.url.replace("postgresql+asyncpg", "postgresql"))
    try:
        hold = outside.transaction()
        await hold.start()
        await outside.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", bobs["id"])
        removal = asyncio.create_task(
            client.delete(f"{API}/projects/{project}/members/{bob.id}", headers=alice.headers)
        )
        await asyncio.sleep(0.3)
        assert not removal.done()  # stopped inside its transaction, membership deleted
        racing = asyncio.create_task(writes[write]())
        await asyncio.sleep(0.3)
        await hold.rollback()
        removed, written = await removal, await racing
    finally:
        await outside.close()

    assert removed.status_code == 204, removed.text
    problem(written, 422, "VALIDATION_ERROR")  # bob is not a member once it may commit
    assert await _orphans(app) == []


async def test_assignments_racing_a_removal_leave_no_task_assigned_to_a_non_member(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    for _round in range(5):
        project = (await api_create_project(client, alice, "Race"))["id"]
        await api_add_member(client, alice, project, bob, "editor")
        tasks = [await api_create_task(client, alice, project_id=project) for _ in range(10)]
        patches = [
            client.patch(
                f"{TASKS}/{task['id']}", json={"assignee_id": bob.id}, headers=alice.headers
            )
            for task in tasks
        ]
        removal = client.delete(f"{API}/projects/{project}/members/{bob.id}", headers=alice.headers)
        answers = await asyncio.gather(*patches[:5], removal, *patches[5:])
        assert {a.status_code for a in answers} <= {200, 204, 422}, [a.text for a in answers]
        assert answers[5].status_code == 204
    assert await _orphans(app) == []
