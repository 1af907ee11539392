"""Project membership: adding, role changes, leaving, and the last-owner rule (incl. races)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from taskmanager.models.events import Event
from taskmanager.models.projects import ProjectMember
from taskmanager.models.tasks import Task
from tests.conftest import TestUser, UserFactory, problem
from tests.factories import (
    API,
    TASKS,
    api_add_member,
    api_create_project,
    api_create_task,
    bulk_tasks,
    count_rows,
)


async def _members(client: httpx.AsyncClient, caller: TestUser, project_id: int) -> dict[int, str]:
    response = await client.get(f"{API}/projects/{project_id}/members", headers=caller.headers)
    assert response.status_code == 200, response.text
    return {m["user_id"]: m["role"] for m in response.json()}


async def test_add_member_by_username_or_id(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    carol = await make_user("carol")
    project = await api_create_project(client, alice)
    url = f"{API}/projects/{project['id']}/members"

    by_name = await client.post(
        url, json={"username": "BOB", "role": "editor"}, headers=alice.headers
    )
    assert by_name.status_code == 201, by_name.text
    assert by_name.json() == {"user_id": bob.id, "username": "bob", "role": "editor"}
    by_id = await client.post(
        url, json={"user_id": carol.id, "role": "viewer"}, headers=alice.headers
    )
    assert by_id.status_code == 201
    assert by_id.json() == {"user_id": carol.id, "username": "carol", "role": "viewer"}

    listed = (await client.get(url, headers=carol.headers)).json()
    assert listed == [
        {"user_id": alice.id, "username": "alice", "role": "owner"},
        {"user_id": bob.id, "username": "bob", "role": "editor"},
        {"user_id": carol.id, "username": "carol", "role": "viewer"},
    ]
    # Members now see the project, with their own role.
    seen = await client.get(f"{API}/projects/{project['id']}", headers=bob.headers)
    assert seen.json()["role"] == "editor"


@pytest.mark.parametrize(
    "payload",
    [
        {"role": "editor"},
        {"username": "bob", "user_id": 2, "role": "editor"},
        {"username": "bob"},
        {"username": "bob", "role": "admin"},
        {"username": "bob", "role": "OWNER"},
        {"username": "", "role": "viewer"},
        {"user_id": 0, "role": "viewer"},
        {"user_id": "abc", "role": "viewer"},
        {"username": "bob", "role": "viewer", "project_id": 1},
        {"username": None, "user_id": None, "role": "viewer"},
        {"username": "bo\x00b", "role": "viewer"},
        {"user_id": 2**63, "role": "viewer"},
    ],
)
async def test_add_member_rejects_bad_input(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI, payload: dict[str, Any]
) -> None:
    alice = await make_user("alice")
    await make_user("bob")
    project = await api_create_project(client, alice)
    problem(
        await client.post(
            f"{API}/projects/{project['id']}/members", json=payload, headers=alice.headers
        ),
        422,
        "VALIDATION_ERROR",
    )
    assert await count_rows(app, ProjectMember, project_id=project["id"]) == 1


async def test_add_unknown_inactive_or_duplicate_member(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    ghost = await make_user("ghost", is_active=False)
    project = await api_create_project(client, alice)
    url = f"{API}/projects/{project['id']}/members"
    for payload in (
        {"username": "nobody", "role": "viewer"},
        {"user_id": 999999, "role": "viewer"},
        {"user_id": ghost.id, "role": "viewer"},
        {"username": "ghost", "role": "viewer"},
    ):
        body = problem(
            await client.post(url, json=payload, headers=alice.headers), 404, "RESOURCE_NOT_FOUND"
        )
        assert body["detail"] == "User not found"
    await api_add_member(client, alice, project["id"], bob, "viewer")
    problem(
        await client.post(url, json={"user_id": bob.id, "role": "owner"}, headers=alice.headers),
        409,
        "CONFLICT",
    )
    problem(
        await client.post(url, json={"user_id": alice.id, "role": "viewer"}, headers=alice.headers),
        409,
        "CONFLICT",
    )
    assert await _members(client, alice, project["id"]) == {alice.id: "owner", bob.id: "viewer"}


async def test_change_role_and_unknown_member(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    carol = await make_user("carol")
    project = await api_create_project(client, alice)
    await api_add_member(client, alice, project["id"], bob, "viewer")
    url = f"{API}/projects/{project['id']}/members"

    promoted = await client.patch(f"{url}/{bob.id}", json={"role": "owner"}, headers=alice.headers)
    assert promoted.status_code == 200
    assert promoted.json() == {"user_id": bob.id, "username": "bob", "role": "owner"}
    # Bob is an owner now and may demote Alice, who is no longer the last owner.
    demoted = await client.patch(f"{url}/{alice.id}", json={"role": "editor"}, headers=bob.headers)
    assert demoted.status_code == 200
    assert await _members(client, bob, project["id"]) == {alice.id: "editor", bob.id: "owner"}

    missing = problem(
        await client.patch(f"{url}/{carol.id}", json={"role": "viewer"}, headers=bob.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert str(carol.id) in missing["detail"]
    problem(
        await client.delete(f"{url}/{carol.id}", headers=bob.headers), 404, "RESOURCE_NOT_FOUND"
    )
    for payload in ({}, {"role": "boss"}, {"role": None}, {"role": "viewer", "user_id": 1}):
        problem(
            await client.patch(f"{url}/{alice.id}", json=payload, headers=bob.headers),
            422,
            "VALIDATION_ERROR",
        )
    assert await _members(client, bob, project["id"]) == {alice.id: "editor", bob.id: "owner"}


async def test_last_owner_cannot_be_demoted_or_removed(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    admin = await make_user("root", role="admin")
    project = await api_create_project(client, alice)
    await api_add_member(client, alice, project["id"], bob, "editor")
    url = f"{API}/projects/{project['id']}/members/{alice.id}"
    for caller in (alice, admin):
        problem(
            await client.patch(url, json={"role": "editor"}, headers=caller.headers),
            409,
            "CONFLICT",
        )
        problem(await client.delete(url, headers=caller.headers), 409, "CONFLICT")
    assert await _members(client, alice, project["id"]) == {alice.id: "owner", bob.id: "editor"}
    # Setting the same role is not a demotion.
    same = await client.patch(url, json={"role": "owner"}, headers=alice.headers)
    assert same.status_code == 200


async def test_inbox_owner_cannot_leave(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    alice = await make_user("alice")
    problem(
        await client.delete(
            f"{API}/projects/{alice.inbox_id}/members/{alice.id}", headers=alice.headers
        ),
        409,
        "CONFLICT",
    )


async def test_member_may_leave_but_not_remove_others(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    carol = await make_user("carol")
    project = await api_create_project(client, alice)
    await api_add_member(client, alice, project["id"], bob, "viewer")
    await api_add_member(client, alice, project["id"], carol, "editor")
    url = f"{API}/projects/{project['id']}/members"

    problem(await client.delete(f"{url}/{carol.id}", headers=bob.headers), 403, "FORBIDDEN")
    problem(await client.delete(f"{url}/{alice.id}", headers=carol.headers), 403, "FORBIDDEN")
    left = await client.delete(f"{url}/{bob.id}", headers=bob.headers)
    assert left.status_code == 204
    problem(
        await client.get(f"{API}/projects/{project['id']}", headers=bob.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    removed = await client.delete(f"{url}/{carol.id}", headers=alice.headers)
    assert removed.status_code == 204
    assert await _members(client, alice, project["id"]) == {alice.id: "owner"}


async def test_outsider_gets_404_on_members(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    eve = await make_user("eve")
    project = await api_create_project(client, alice)
    url = f"{API}/projects/{project['id']}/members"
    problem(await client.get(url, headers=eve.headers), 404, "RESOURCE_NOT_FOUND")
    problem(
        await client.post(url, json={"user_id": eve.id, "role": "owner"}, headers=eve.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    problem(await client.delete(f"{url}/{eve.id}", headers=eve.headers), 404, "RESOURCE_NOT_FOUND")
    problem(
        await client.delete(f"{url}/{alice.id}", headers=eve.headers), 404, "RESOURCE_NOT_FOUND"
    )
    assert await _members(client, alice, project["id"]) == {alice.id: "owner"}


async def test_admin_manages_members_without_membership(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    admin = await make_user("root", role="admin")
    project = await api_create_project(client, alice)
    url = f"{API}/projects/{project['id']}/members"
    added = await client.post(url, json={"username": "bob", "role": "owner"}, headers=admin.headers)
    assert added.status_code == 201
    demoted = await client.patch(
        f"{url}/{alice.id}", json={"role": "viewer"}, headers=admin.headers
    )
    assert demoted.status_code == 200
    assert await _members(client, admin, project["id"]) == {alice.id: "viewer", bob.id: "owner"}


async def test_owners_demoting_each_other_concurrently_keep_an_owner(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    for _ in range(3):
        project = await api_create_project(client, alice)
        await api_add_member(client, alice, project["id"], bob, "owner")
        url = f"{API}/projects/{project['id']}/members"
        first, second = await asyncio.gather(
            client.patch(f"{url}/{bob.id}", json={"role": "editor"}, headers=alice.headers),
            client.patch(f"{url}/{alice.id}", json={"role": "editor"}, headers=bob.headers),
        )
        statuses = sorted([first.status_code, second.status_code])
        # The loser was demoted before its own request could act: it is no longer an owner.
        assert statuses == [200, 403], (first.text, second.text)
        roles = await _members(client, alice, project["id"])
        assert sorted(roles.values()) == ["editor", "owner"]


async def test_owners_leaving_concurrently_keep_an_owner(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    admin = await make_user("root", role="admin")
    for _ in range(3):
        project = await api_create_project(client, alice)
        await api_add_member(client, alice, project["id"], bob, "owner")
        url = f"{API}/projects/{project['id']}/members"
        results = await asyncio.gather(
            client.patch(f"{url}/{alice.id}", json={"role": "viewer"}, headers=alice.headers),
            client.delete(f"{url}/{bob.id}", headers=bob.headers),
        )
        assert sorted(r.status_code for r in results) == [200, 409] or sorted(
            r.status_code for r in results
        ) == [204, 409], [r.text for r in results]
        roles = await _members(client, admin, project["id"])
        assert list(roles.values()).count("owner") == 1


async def test_a_member_removed_or_leaving_is_unassigned_from_its_tasks_there(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """An assignee is a member of the task's project (API.md §5): when a member is removed,
    or leaves, its tasks in that project lose their assignee, each with a new version (a
    cached copy is not "not modified") and a ``task.updated`` naming ``assignee_id``; its
    tasks in other projects, and other members' tasks, are untouched."""
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    shared = (await api_create_project(client, alice, "Shared"))["id"]
    other = (await api_create_project(client, alice, "Other"))["id"]
    for project_id, user in ((shared, bob), (shared, carol), (other, bob)):
        await api_add_member(client, alice, project_id, user, "editor")
    given = await api_create_task(client, alice, project_id=shared, assignee_id=bob.id)
    own = await api_create_task(client, bob, project_id=shared, assignee_id=bob.id)
    carols = await api_create_task(client, alice, project_id=shared, assignee_id=carol.id)
    elsewhere = await api_create_task(client, alice, project_id=other, assignee_id=bob.id)
    tasks = {t["id"]: t for t in (given, own, carols, elsewhere)}
    etags = {
        task_id: (await client.get(f"{TASKS}/{task_id}", headers=alice.headers)).headers["etag"]
        for task_id in tasks
    }

    async def state(task_id: int) -> tuple[int, int | None, int]:
        """(status of a conditional GET with the first ETag, assignee_id, version)"""
        fresh = await client.get(
            f"{TASKS}/{task_id}", headers={**alice.headers, "If-None-Match": etags[task_id]}
        )
        body = (await client.get(f"{TASKS}/{task_id}", headers=alice.headers)).json()
        return fresh.status_code, body["assignee_id"], body["version"]

    async def events_after(event_id: int) -> list[tuple[str, int | None, list[str] | None]]:
        async with app.state.database.snapshot() as session:
            rows = await session.scalars(
                select(Event).where(Event.id > event_id).order_by(Event.id)
            )
            return [(e.type, e.data.get("id"), e.changed) for e in rows]

    async def last_event_id() -> int:
        async with app.state.database.snapshot() as session:
            return int(await session.scalar(select(func.max(Event.id))) or 0)

    mark = await last_event_id()
    removed = await client.delete(
        f"{API}/projects/{shared}/members/{bob.id}", headers=alice.headers
    )
    assert removed.status_code == 204, removed.text
    assert await state(given["id"]) == (200, None, given["version"] + 1)
    assert await state(own["id"]) == (200, None, own["version"] + 1)
    assert await state(carols["id"]) == (304, carol.id, carols["version"])
    assert await state(elsewhere["id"]) == (304, bob.id, elsewhere["version"])
    happened = await events_after(mark)
    assert happened[0][0] == "member.removed"
    assert sorted(happened[1:]) == sorted(
        [
            ("task.updated", given["id"], ["assignee_id"]),
            ("task.updated", own["id"], ["assignee_id"]),
        ]
    )

    mark = await last_event_id()
    left = await client.delete(f"{API}/projects/{shared}/members/{carol.id}", headers=carol.headers)
    assert left.status_code == 204, left.text
    assert await state(carols["id"]) == (200, None, carols["version"] + 1)
    assert [e[0] for e in await events_after(mark)] == ["member.removed", "task.updated"]
    async with app.state.database.snapshot() as session:
        actor = await session.scalar(select(Event.actor_id).order_by(Event.id.desc()).limit(1))
    assert actor == carol.id  # who left is who changed the task

    # And they cannot be given it back while they are not members.
    problem(
        await client.patch(
            f"{TASKS}/{given['id']}", json={"assignee_id": bob.id}, headers=alice.headers
        ),
        422,
        "VALIDATION_ERROR",
    )


@pytest.mark.slow
async def test_a_member_with_more_tasks_than_a_statement_takes_parameters_is_removed(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """33,000 assigned tasks, more than the 32,767 bound parameters asyncpg and SQLite take
    in one statement: the removal unassigns them all (in batches) with one ``task.updated``
    each, recorded in one ``executemany``; it used to fail (503) at any retry."""
    count = 33_000
    alice, bob = await make_user("alice"), await make_user("bob")
    project = (await api_create_project(client, alice, "Busy"))["id"]
    await api_add_member(client, alice, project, bob, "editor")
    for start in range(0, count, 5_000):
        rows = [
            {"project_id": project, "title": f"T{n}", "assignee_id": bob.id, "created_by": alice.id}
            for n in range(start, min(count, start + 5_000))
        ]
        await bulk_tasks(app, rows)
    async with app.state.database.snapshot() as session:
        mark = int(await session.scalar(select(func.max(Event.id))) or 0)

    removed = await client.delete(
        f"{API}/projects/{project}/members/{bob.id}", headers=alice.headers
    )

    assert removed.status_code == 204, removed.text
    async with app.state.database.snapshot() as session:
        still = await session.scalar(
            select(func.count()).select_from(Task).where(Task.assignee_id == bob.id)
        )
        bumped = await session.scalar(
            select(func.count())
            .select_from(Task)
            .where(Task.project_id == project, Task.version == 2)
        )
        events = (
            await session.execute(
                select(Event.type, func.count()).where(Event.id > mark).group_by(Event.type)
            )
        ).all()
    assert still == 0
    assert bumped == count
    assert dict(events) == {"member.removed": 1, "task.updated": count}
