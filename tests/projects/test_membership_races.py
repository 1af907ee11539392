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
from tests.conftest import TEST_PASSWORD, TestDatabase, TestUser, UserFactory, problem
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


async def _create_assigned(
    client: httpx.AsyncClient, caller: TestUser, project_id: int, assignee: TestUser
) -> httpx.Response:
    return await client.post(
        TASKS,
        json={"title": "Assigned", "project_id": project_id, "assignee_id": assignee.id},
        headers=caller.headers,
    )


async def _held(database: TestDatabase, sql: str, *args: Any) -> tuple[Any, Any]:
    """An outside connection holding the row locks of ``sql`` in an open transaction."""
    outside = await asyncpg.connect(database.url.replace("postgresql+asyncpg", "postgresql"))
    hold = outside.transaction()
    await hold.start()
    await outside.execute(sql, *args)
    return outside, hold


@pytest.mark.postgres_only
async def test_an_assignment_during_an_account_deletion_is_refused_without_a_deadlock(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory, database: TestDatabase
) -> None:
    """The deletion (its projects and the user locked, its memberships deleted) is stopped
    where it unassigns the user's tasks; a create assigning the user waits for it, then
    finds no member. With the deletion's locks taken FOR UPDATE, the create's foreign-key
    checks waited on them while the deletion waited on the create: a deadlock, a 503."""
    alice, bob = await make_user("alice"), await make_user("bob")
    project = (await api_create_project(client, alice, "Shared"))["id"]
    await api_add_member(client, alice, project, bob, "editor")
    bobs = await api_create_task(client, bob, project_id=project)
    outside, hold = await _held(
        database, "SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", bobs["id"]
    )
    try:
        deletion = asyncio.create_task(
            client.request(
                "DELETE",
                f"{API}/users/me",
                json={"current_password": TEST_PASSWORD},
                headers=bob.headers,
            )
        )
        await asyncio.sleep(1.0)  # the password check, then stopped at the held task
        assert not deletion.done()
        creating = asyncio.create_task(_create_assigned(client, alice, project, bob))
        await asyncio.sleep(0.5)
        await hold.rollback()
        deleted, created = await deletion, await creating
    finally:
        await outside.close()
    assert deleted.status_code == 204, deleted.text
    problem(created, 422, "VALIDATION_ERROR")
    assert await _orphans(app) == []


@pytest.mark.postgres_only
async def test_a_removal_during_an_assignment_waits_for_it_without_a_deadlock(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory, database: TestDatabase
) -> None:
    """A create assigning bob holds his membership and is stopped in its foreign-key checks
    (the users rows held from outside); bob's removal waits for it, then unassigns the new
    task. The removal's project lock used to block those checks: a deadlock, a 503."""
    alice, bob = await make_user("alice"), await make_user("bob")
    project = (await api_create_project(client, alice, "Shared"))["id"]
    await api_add_member(client, alice, project, bob, "editor")
    outside, hold = await _held(
        database, "SELECT 1 FROM users WHERE id = ANY($1::bigint[]) FOR UPDATE", [alice.id, bob.id]
    )
    try:
        creating = asyncio.create_task(_create_assigned(client, alice, project, bob))
        await asyncio.sleep(0.5)
        removal = asyncio.create_task(
            client.delete(f"{API}/projects/{project}/members/{bob.id}", headers=alice.headers)
        )
        await asyncio.sleep(0.5)
        await hold.rollback()
        created, removed = await creating, await removal
    finally:
        await outside.close()
    assert created.status_code == 201, created.text
    assert removed.status_code == 204, removed.text
    task = (await client.get(f"{TASKS}/{created.json()['id']}", headers=alice.headers)).json()
    assert task["assignee_id"] is None
    assert task["version"] == 2
    assert await _orphans(app) == []


@pytest.mark.postgres_only
async def test_only_a_new_assignment_locks_the_membership(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory, database: TestDatabase
) -> None:
    """A row lock is written into the row (its ``xmax``): a PUT that resends the task's
    assignee must not dirty the membership row, only a write that assigns someone anew."""
    alice, bob = await make_user("alice"), await make_user("bob")
    project = (await api_create_project(client, alice, "Shared"))["id"]
    await api_add_member(client, alice, project, bob, "editor")
    task = await api_create_task(client, alice, project_id=project)
    url = f"{TASKS}/{task['id']}"
    outside = await asyncpg.connect(database.url.replace("postgresql+asyncpg", "postgresql"))

    async def xmax() -> str:
        return str(
            await outside.fetchval(
                "SELECT xmax FROM project_members WHERE project_id = $1 AND user_id = $2",
                project,
                bob.id,
            )
        )

    try:
        before = await xmax()
        assigned = await client.patch(url, json={"assignee_id": bob.id}, headers=alice.headers)
        assert assigned.status_code == 200, assigned.text
        locked = await xmax()
        assert locked != before  # the new assignment held bob's membership
        resent = await client.put(
            url, json={"title": "Renamed", "assignee_id": bob.id}, headers=alice.headers
        )
        assert resent.status_code == 200, resent.text
        assert resent.json()["version"] == assigned.json()["version"] + 1
        assert await xmax() == locked  # resending the assignee wrote nothing there
    finally:
        await outside.close()
