"""``DELETE /api/v1/users/me``: with the current password; the Inbox and sole projects go
with the account; 409 while it is the last owner of a project with other members."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from taskmanager.models.api_keys import ApiKey
from taskmanager.models.auth import RefreshToken
from taskmanager.models.projects import Project, ProjectMember
from taskmanager.models.tasks import Task
from taskmanager.models.users import User
from tests.conftest import TEST_PASSWORD, UserFactory, problem
from tests.factories import (
    add_member,
    api_login,
    api_login_response,
    count_rows,
    create_api_key,
    create_project,
    create_task,
)

ME = "/api/v1/users/me"


async def _delete(
    client: httpx.AsyncClient, headers: dict[str, str], password: str
) -> httpx.Response:
    return await client.request("DELETE", ME, json={"current_password": password}, headers=headers)


async def test_delete_me_removes_the_account_its_inbox_and_sole_projects(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    solo = await create_project(app, alice, "Solo")
    await create_task(app, solo, alice, "mine")
    await create_task(app, alice.inbox_id, alice, "inbox task")
    # A shared project of Bob's where Alice is an editor: it stays, her task in it too.
    shared = await create_project(app, bob, "Shared")
    await add_member(app, shared, alice, "editor")
    kept = await create_task(app, shared, alice, "written by alice", assignee_id=alice.id)
    # A project with two owners: she may leave it.
    co_owned = await create_project(app, bob, "Co-owned")
    await add_member(app, co_owned, alice, "owner")
    await api_login(client, "alice")
    key = await create_api_key(app, alice, ["tasks:read"])

    response = await _delete(client, alice.headers, TEST_PASSWORD)
    assert response.status_code == 204, response.text
    assert response.content == b""

    assert await count_rows(app, User, id=alice.id) == 0
    for project_id in (solo, alice.inbox_id):
        assert await count_rows(app, Project, id=project_id) == 0
        assert await count_rows(app, Task, project_id=project_id) == 0
    for project_id in (shared, co_owned):
        assert await count_rows(app, Project, id=project_id) == 1
    assert await count_rows(app, ProjectMember, user_id=alice.id) == 0
    assert await count_rows(app, ApiKey, user_id=alice.id) == 0
    assert await count_rows(app, RefreshToken, user_id=alice.id) == 0
    task = (await client.get(f"/api/v1/tasks/{kept}", headers=bob.headers)).json()
    assert (task["created_by"], task["assignee_id"]) == (None, None)

    problem(await client.get(ME, headers=alice.headers), 401, "INVALID_CREDENTIALS")
    problem(await client.get(ME, headers=key), 401, "INVALID_CREDENTIALS")
    problem(await api_login_response(client, "alice"), 401, "INVALID_CREDENTIALS")
    assert (await client.get(ME, headers=bob.headers)).status_code == 200


async def test_delete_me_refuses_while_last_owner_of_a_shared_project(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    carol, dan = await make_user("carol"), await make_user("dan")
    shared = await create_project(app, carol, "Team")
    await add_member(app, shared, dan, "viewer")
    body = problem(await _delete(client, carol.headers, TEST_PASSWORD), 409, "CONFLICT")
    assert str(shared) in body["detail"]
    assert await count_rows(app, User, id=carol.id) == 1
    assert await count_rows(app, Project, id=carol.inbox_id) == 1
    # Once Dan is an owner too, Carol may go; the project stays with Dan.
    response = await client.patch(
        f"/api/v1/projects/{shared}/members/{dan.id}", json={"role": "owner"}, headers=carol.headers
    )
    assert response.status_code == 200, response.text
    assert (await _delete(client, carol.headers, TEST_PASSWORD)).status_code == 204
    assert await count_rows(app, Project, id=shared) == 1


async def test_delete_me_needs_the_current_password_and_a_login_token(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    erin = await make_user("erin")
    problem(await _delete(client, erin.headers, "Wrong-passw0rd"), 401, "INVALID_CREDENTIALS")
    problem(
        await client.request("DELETE", ME, json={}, headers=erin.headers), 422, "VALIDATION_ERROR"
    )
    problem(await client.request("DELETE", ME, headers=erin.headers), 422, "VALIDATION_ERROR")
    key = await create_api_key(app, erin, ["tasks:read", "tasks:write"])
    problem(await _delete(client, key, TEST_PASSWORD), 403, "FORBIDDEN")
    problem(await _delete(client, {}, TEST_PASSWORD), 401, "NOT_AUTHENTICATED")
    assert await count_rows(app, User, id=erin.id) == 1


async def test_the_last_admin_cannot_delete_their_account(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    root = await make_user("root", role="admin")
    problem(await _delete(client, root.headers, TEST_PASSWORD), 409, "CONFLICT")
    other = await make_user("root2", role="admin")
    assert (await _delete(client, root.headers, TEST_PASSWORD)).status_code == 204
    assert (await client.get(ME, headers=other.headers)).status_code == 200
