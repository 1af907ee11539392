"""Comments: CRUD, validation, ordering, pagination, author and owner rules."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from taskmanager.models.comments import Comment
from tests.conftest import TestUser, UserFactory, problem
from tests.factories import (
    API,
    api_add_member,
    api_create_project,
    count_rows,
    create_comment,
    create_task,
)


async def _team(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> tuple[dict[str, TestUser], int]:
    """owner, editor, viewer and an outsider around one task."""
    users = {name: await make_user(name) for name in ("owner", "editor", "viewer", "outsider")}
    project = await api_create_project(client, users["owner"])
    await api_add_member(client, users["owner"], project["id"], users["editor"], "editor")
    await api_add_member(client, users["owner"], project["id"], users["viewer"], "viewer")
    task_id = await create_task(app, project["id"], users["owner"].id)
    return users, task_id


async def test_create_list_get_comment(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, task_id = await _team(client, make_user, app)
    url = f"{API}/tasks/{task_id}/comments"
    created = await client.post(url, json={"body": "  First!  "}, headers=users["editor"].headers)
    assert created.status_code == 201, created.text
    comment = created.json()
    assert set(comment) == {"id", "task_id", "author_id", "body", "created_at", "updated_at"}
    assert comment["body"] == "First!"
    assert comment["task_id"] == task_id
    assert comment["author_id"] == users["editor"].id
    assert created.headers["location"] == f"{url}/{comment['id']}"
    fetched = await client.get(created.headers["location"], headers=users["viewer"].headers)
    assert fetched.status_code == 200
    assert fetched.json() == comment

    listed = await client.get(url, headers=users["viewer"].headers)
    assert listed.status_code == 200
    assert listed.json() == {
        "items": [comment],
        "total": 1,
        "skip": 0,
        "limit": 20,
        "next_cursor": None,
    }
    assert listed.headers["x-total-count"] == "1"
    assert "link" not in listed.headers


async def test_list_is_ordered_and_paginated(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, task_id = await _team(client, make_user, app)
    other_task = await create_task(app, (await api_create_project(client, users["owner"]))["id"], 1)
    await create_comment(app, other_task, users["owner"].id, "elsewhere")
    url = f"{API}/tasks/{task_id}/comments"
    ids = []
    for i in range(5):
        response = await client.post(url, json={"body": f"c{i}"}, headers=users["owner"].headers)
        ids.append(response.json()["id"])
    page = (
        await client.get(url, params={"skip": 1, "limit": 3}, headers=users["owner"].headers)
    ).json()
    assert [c["id"] for c in page["items"]] == ids[1:4]
    assert [c["body"] for c in page["items"]] == ["c1", "c2", "c3"]
    assert (page["total"], page["skip"], page["limit"]) == (5, 1, 3)
    for params in ({"skip": -1}, {"limit": 0}, {"limit": 101}):
        problem(
            await client.get(url, params=params, headers=users["owner"].headers),
            422,
            "VALIDATION_ERROR",
        )


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"body": ""},
        {"body": "   "},
        {"body": "x" * 5001},
        {"body": None},
        {"body": 3},
        {"body": "ok", "author_id": 1},
        {"body": "ok", "task_id": 2},
        {"body": "ok", "id": 5},
        {"body": "ok", "created_at": "2020-01-01T00:00:00Z"},
        {"body": "nul\x00byte"},
    ],
)
async def test_create_rejects_bad_input(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI, payload: dict[str, Any]
) -> None:
    users, task_id = await _team(client, make_user, app)
    problem(
        await client.post(
            f"{API}/tasks/{task_id}/comments", json=payload, headers=users["owner"].headers
        ),
        422,
        "VALIDATION_ERROR",
    )
    assert await count_rows(app, Comment) == 0


async def test_body_limit_is_inclusive(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, task_id = await _team(client, make_user, app)
    response = await client.post(
        f"{API}/tasks/{task_id}/comments", json={"body": "x" * 5000}, headers=users["owner"].headers
    )
    assert response.status_code == 201
    assert len(response.json()["body"]) == 5000


async def test_viewer_cannot_comment_outsider_sees_nothing(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, task_id = await _team(client, make_user, app)
    url = f"{API}/tasks/{task_id}/comments"
    problem(
        await client.post(url, json={"body": "hi"}, headers=users["viewer"].headers),
        403,
        "FORBIDDEN",
    )
    for method in ("GET", "POST"):
        body = problem(
            await client.request(
                method, url, json={"body": "hi"}, headers=users["outsider"].headers
            ),
            404,
            "RESOURCE_NOT_FOUND",
        )
        assert body["detail"] == f"Task {task_id} not found"
    missing = problem(
        await client.get(f"{API}/tasks/999999/comments", headers=users["owner"].headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert missing["detail"] == "Task 999999 not found"
    assert await count_rows(app, Comment) == 0


async def test_only_author_edits(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, task_id = await _team(client, make_user, app)
    admin = await make_user("root", role="admin")
    url = f"{API}/tasks/{task_id}/comments"
    comment = (
        await client.post(url, json={"body": "mine"}, headers=users["editor"].headers)
    ).json()
    comment_url = f"{url}/{comment['id']}"
    for caller in ("owner", "viewer"):
        problem(
            await client.patch(comment_url, json={"body": "x"}, headers=users[caller].headers),
            403,
            "FORBIDDEN",
        )
    problem(
        await client.patch(comment_url, json={"body": "x"}, headers=admin.headers),
        403,
        "FORBIDDEN",
    )
    problem(
        await client.patch(comment_url, json={"body": "x"}, headers=users["outsider"].headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    edited = await client.patch(
        comment_url, json={"body": " reworded "}, headers=users["editor"].headers
    )
    assert edited.status_code == 200
    assert edited.json()["body"] == "reworded"
    assert edited.json()["created_at"] == comment["created_at"]
    assert edited.json()["updated_at"] >= comment["updated_at"]
    assert edited.json()["author_id"] == users["editor"].id


async def test_edit_bad_input_changes_nothing(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, task_id = await _team(client, make_user, app)
    url = f"{API}/tasks/{task_id}/comments"
    comment = (await client.post(url, json={"body": "keep"}, headers=users["owner"].headers)).json()
    comment_url = f"{url}/{comment['id']}"
    problem(
        await client.patch(comment_url, json={}, headers=users["owner"].headers),
        400,
        "MALFORMED_REQUEST",
    )
    for payload in ({"body": None}, {"body": " "}, {"body": "x" * 5001}, {"author_id": 9}):
        problem(
            await client.patch(comment_url, json=payload, headers=users["owner"].headers),
            422,
            "VALIDATION_ERROR",
        )
    after = await client.get(comment_url, headers=users["owner"].headers)
    assert after.json() == comment


async def test_demoted_author_can_no_longer_edit(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, task_id = await _team(client, make_user, app)
    project_id = (await client.get(f"{API}/projects", headers=users["editor"].headers)).json()[
        "items"
    ][-1]["id"]
    url = f"{API}/tasks/{task_id}/comments"
    comment = (await client.post(url, json={"body": "x"}, headers=users["editor"].headers)).json()
    await client.patch(
        f"{API}/projects/{project_id}/members/{users['editor'].id}",
        json={"role": "viewer"},
        headers=users["owner"].headers,
    )
    for method in ("PATCH", "DELETE"):
        problem(
            await client.request(
                method,
                f"{url}/{comment['id']}",
                json={"body": "y"} if method == "PATCH" else None,
                headers=users["editor"].headers,
            ),
            403,
            "FORBIDDEN",
        )


async def test_delete_by_author_owner_or_admin(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, task_id = await _team(client, make_user, app)
    admin = await make_user("root", role="admin")
    url = f"{API}/tasks/{task_id}/comments"

    async def comment_by(author: TestUser) -> str:
        response = await client.post(url, json={"body": "x"}, headers=author.headers)
        return f"{url}/{response.json()['id']}"

    by_owner = await comment_by(users["owner"])
    problem(await client.delete(by_owner, headers=users["editor"].headers), 403, "FORBIDDEN")
    problem(await client.delete(by_owner, headers=users["viewer"].headers), 403, "FORBIDDEN")
    problem(
        await client.delete(by_owner, headers=users["outsider"].headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert await count_rows(app, Comment) == 1

    by_editor = await comment_by(users["editor"])
    assert (await client.delete(by_editor, headers=users["editor"].headers)).status_code == 204
    by_editor = await comment_by(users["editor"])
    assert (await client.delete(by_editor, headers=users["owner"].headers)).status_code == 204
    assert (await client.delete(by_owner, headers=admin.headers)).status_code == 204
    assert await count_rows(app, Comment) == 0
    problem(
        await client.delete(by_owner, headers=users["owner"].headers), 404, "RESOURCE_NOT_FOUND"
    )


async def test_comment_of_another_task_is_not_found(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, task_id = await _team(client, make_user, app)
    project = await api_create_project(client, users["owner"], "Second")
    other_task = await create_task(app, project["id"], users["owner"].id)
    foreign_comment = await create_comment(app, other_task, users["owner"].id, "elsewhere")
    url = f"{API}/tasks/{task_id}/comments/{foreign_comment}"
    for method in ("GET", "PATCH", "DELETE"):
        problem(
            await client.request(
                method,
                url,
                json={"body": "hijack"} if method == "PATCH" else None,
                headers=users["owner"].headers,
            ),
            404,
            "RESOURCE_NOT_FOUND",
        )
    assert await count_rows(app, Comment, body="elsewhere") == 1


@pytest.mark.parametrize("path", ["/tasks/0/comments", "/tasks/1/comments/0"])
async def test_bad_ids_are_422(
    client: httpx.AsyncClient, make_user: UserFactory, path: str
) -> None:
    alice = await make_user("alice")
    problem(await client.get(f"{API}{path}", headers=alice.headers), 422, "VALIDATION_ERROR")


async def test_a_comment_path_without_digits_names_nothing(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    for path in ("/tasks/x/comments", "/tasks/1/comments/y"):
        problem(await client.get(f"{API}{path}", headers=alice.headers), 404, "RESOURCE_NOT_FOUND")
