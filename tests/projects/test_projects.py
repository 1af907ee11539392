"""Projects: CRUD, validation, pagination, ETags, Inbox protections, cascade delete."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from taskmanager.models.comments import Comment
from taskmanager.models.projects import Project, ProjectMember
from taskmanager.models.tasks import Task
from tests.conftest import UserFactory, problem
from tests.factories import (
    API,
    api_add_member,
    api_create_project,
    count_rows,
    create_comment,
    create_task,
)


async def test_create_project_makes_caller_owner(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    response = await client.post(
        f"{API}/projects",
        json={"name": "  Launch  ", "description": "Q3"},
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "Launch"
    assert body["description"] == "Q3"
    assert body["is_inbox"] is False
    assert body["created_by"] == alice.id
    assert body["role"] == "owner"
    assert set(body) == {
        "id",
        "name",
        "description",
        "is_inbox",
        "created_by",
        "created_at",
        "updated_at",
        "role",
    }
    assert response.headers["location"] == f"{API}/projects/{body['id']}"
    assert response.headers["etag"] == f'"{body["id"]}-1"'
    members = await client.get(f"{API}/projects/{body['id']}/members", headers=alice.headers)
    assert members.json() == [{"user_id": alice.id, "username": "alice", "role": "owner"}]
    got = await client.get(response.headers["location"], headers=alice.headers)
    assert got.status_code == 200
    assert got.json() == body


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": None},
        {"name": 5},
        {"name": "ok", "description": "d" * 2001},
        {"name": "ok", "extra": 1},
        {"name": "ok", "id": 9},
        {"name": "ok", "is_inbox": True},
    ],
)
async def test_create_project_rejects_bad_input(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI, payload: dict[str, Any]
) -> None:
    alice = await make_user("alice")
    problem(
        await client.post(f"{API}/projects", json=payload, headers=alice.headers),
        422,
        "VALIDATION_ERROR",
    )
    assert await count_rows(app, Project) == 1  # only the Inbox


async def test_create_project_limits_are_inclusive(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    project = await api_create_project(client, alice, "n" * 100, description="d" * 2000)
    assert len(project["name"]) == 100
    assert len(project["description"]) == 2000


async def test_create_project_invalid_json_is_400(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    alice = await make_user("alice")
    response = await client.post(
        f"{API}/projects",
        content=b'{"name": ',
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    problem(response, 400, "MALFORMED_REQUEST")
    assert await count_rows(app, Project) == 1


async def test_list_projects_only_memberships_paginated(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    created = [await api_create_project(client, alice, f"P{i}") for i in range(3)]
    await api_create_project(client, bob, "Bob's secret")
    shared = await api_create_project(client, bob, "Shared")
    await api_add_member(client, bob, shared["id"], alice, "viewer")

    response = await client.get(f"{API}/projects", headers=alice.headers)
    assert response.status_code == 200
    page = response.json()
    assert page["total"] == 5  # Inbox + 3 + shared
    assert (page["skip"], page["limit"]) == (0, 20)
    ids = [p["id"] for p in page["items"]]
    assert ids == sorted(ids)
    assert ids == [alice.inbox_id, *(p["id"] for p in created), shared["id"]]
    assert "Bob's secret" not in response.text
    assert page["items"][0]["is_inbox"] is True
    assert page["items"][-1]["role"] == "viewer"

    second = (
        await client.get(f"{API}/projects", params={"skip": 2, "limit": 2}, headers=alice.headers)
    ).json()
    assert [p["id"] for p in second["items"]] == ids[2:4]
    assert (second["total"], second["skip"], second["limit"]) == (5, 2, 2)


@pytest.mark.parametrize(
    "params", [{"skip": -1}, {"limit": 0}, {"limit": 101}, {"skip": "x"}, {"limit": "1.5"}]
)
async def test_list_projects_rejects_bad_paging(
    client: httpx.AsyncClient, make_user: UserFactory, params: dict[str, Any]
) -> None:
    alice = await make_user("alice")
    problem(
        await client.get(f"{API}/projects", params=params, headers=alice.headers),
        422,
        "VALIDATION_ERROR",
    )


async def test_get_unknown_and_foreign_project_look_the_same(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    foreign = problem(
        await client.get(f"{API}/projects/{bob.inbox_id}", headers=alice.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert foreign["detail"] == f"Project {bob.inbox_id} not found"
    missing = problem(
        await client.get(f"{API}/projects/999999", headers=alice.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert missing["detail"] == "Project 999999 not found"


@pytest.mark.parametrize("bad_id", ["0", str(2**63)])
async def test_out_of_range_project_id_is_422(
    client: httpx.AsyncClient, make_user: UserFactory, bad_id: str
) -> None:
    alice = await make_user("alice")
    problem(
        await client.get(f"{API}/projects/{bad_id}", headers=alice.headers),
        422,
        "VALIDATION_ERROR",
    )


@pytest.mark.parametrize("bad_id", ["-1", "abc", "1_0"])
async def test_a_project_id_that_is_not_digits_names_nothing(
    client: httpx.AsyncClient, make_user: UserFactory, bad_id: str
) -> None:
    alice = await make_user("alice")
    problem(
        await client.get(f"{API}/projects/{bad_id}", headers=alice.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


async def test_put_replaces_and_clears_description(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    project = await api_create_project(client, alice, "Old", description="keep?")
    response = await client.put(
        f"{API}/projects/{project['id']}", json={"name": " New "}, headers=alice.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "New"
    assert body["description"] is None
    assert body["updated_at"] >= project["updated_at"]
    assert body["created_at"] == project["created_at"]
    assert response.headers["etag"] == f'"{project["id"]}-2"'


async def test_put_requires_name(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    alice = await make_user("alice")
    project = await api_create_project(client, alice, "Old", description="d")
    for payload in ({}, {"description": "x"}, {"name": ""}, {"name": "ok", "role": "owner"}):
        problem(
            await client.put(
                f"{API}/projects/{project['id']}", json=payload, headers=alice.headers
            ),
            422,
            "VALIDATION_ERROR",
        )
    after = (await client.get(f"{API}/projects/{project['id']}", headers=alice.headers)).json()
    assert after == project


async def test_patch_changes_only_fields_sent(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    project = await api_create_project(client, alice, "Name", description="Desc")
    url = f"{API}/projects/{project['id']}"
    renamed = await client.patch(url, json={"name": "Renamed"}, headers=alice.headers)
    assert renamed.status_code == 200
    assert renamed.json()["description"] == "Desc"
    assert renamed.json()["name"] == "Renamed"
    cleared = await client.patch(url, json={"description": None}, headers=alice.headers)
    assert cleared.json()["description"] is None
    assert cleared.json()["name"] == "Renamed"
    assert cleared.headers["etag"] == f'"{project["id"]}-3"'


async def test_patch_bad_input_changes_nothing(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    project = await api_create_project(client, alice, "Name", description="Desc")
    url = f"{API}/projects/{project['id']}"
    problem(await client.patch(url, json={}, headers=alice.headers), 400, "MALFORMED_REQUEST")
    for payload in (
        {"name": None},
        {"name": "  "},
        {"name": "x" * 101},
        {"description": "d" * 2001},
        {"version": 7},
        {"created_by": 99},
        {"is_inbox": True},
    ):
        problem(
            await client.patch(url, json=payload, headers=alice.headers), 422, "VALIDATION_ERROR"
        )
    problem(
        await client.patch(
            url, content=b"[", headers={**alice.headers, "Content-Type": "application/json"}
        ),
        400,
        "MALFORMED_REQUEST",
    )
    after = await client.get(url, headers=alice.headers)
    assert after.json() == project
    assert after.headers["etag"] == f'"{project["id"]}-1"'


async def test_etag_if_none_match_gives_304(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    project = await api_create_project(client, alice)
    url = f"{API}/projects/{project['id']}"
    first = await client.get(url, headers=alice.headers)
    etag = first.headers["etag"]
    for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        cached = await client.get(url, headers={**alice.headers, "If-None-Match": header})
        assert cached.status_code == 304, header
        assert cached.headers["etag"] == etag
        assert cached.content == b""
    stale = await client.get(url, headers={**alice.headers, "If-None-Match": '"0-0"'})
    assert stale.status_code == 200
    assert stale.json() == project


async def test_if_match_compare_and_set(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    alice = await make_user("alice")
    project = await api_create_project(client, alice, "V1")
    url = f"{API}/projects/{project['id']}"
    etag_v1 = (await client.get(url, headers=alice.headers)).headers["etag"]

    ok = await client.patch(
        url, json={"name": "V2"}, headers={**alice.headers, "If-Match": etag_v1}
    )
    assert ok.status_code == 200
    etag_v2 = ok.headers["etag"]
    assert etag_v2 != etag_v1

    # A second writer still holding v1 is refused and changes nothing.
    lost_update = {"name": "lost update"}
    for method, body in (("PATCH", lost_update), ("PUT", lost_update), ("DELETE", None)):
        stale = await client.request(
            method, url, json=body, headers={**alice.headers, "If-Match": etag_v1}
        )
        problem(stale, 412, "PRECONDITION_FAILED")
    pid = project["id"]
    for junk in (
        f"W/{etag_v2}",
        '"999-2"',
        f'"{pid}-99999999999"',
        f'"{pid}-{"9" * 5000}"',
        f'"{pid}--1"',
    ):
        problem(
            await client.patch(
                url, json={"name": "x"}, headers={**alice.headers, "If-Match": junk}
            ),
            412,
            "PRECONDITION_FAILED",
        )
    # Not an entity-tag list at all: matches nothing, so 412 too (never "no condition").
    # As bytes: one of them is not ASCII (httpx sends str header values as ASCII).
    sent = {name.encode(): value.encode() for name, value in alice.headers.items()}
    for malformed in (b"garbage", f'"{pid}-\u00b2"'.encode("latin-1"), b'"1-1",'):
        problem(
            await client.patch(url, json={"name": "x"}, headers={**sent, b"If-Match": malformed}),
            412,
            "PRECONDITION_FAILED",
        )
    current = await client.get(url, headers=alice.headers)
    assert current.json()["name"] == "V2"
    assert current.headers["etag"] == etag_v2

    listed = await client.put(
        url, json={"name": "V3"}, headers={**alice.headers, "If-Match": f'"x", {etag_v2}'}
    )
    assert listed.status_code == 200
    star = await client.delete(url, headers={**alice.headers, "If-Match": "*"})
    assert star.status_code == 204


async def test_concurrent_if_match_writers_only_one_wins(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    project = await api_create_project(client, alice, "V1")
    url = f"{API}/projects/{project['id']}"
    etag = (await client.get(url, headers=alice.headers)).headers["etag"]
    responses = await asyncio.gather(
        *(
            client.patch(
                url, json={"name": f"writer {i}"}, headers={**alice.headers, "If-Match": etag}
            )
            for i in range(4)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 412, 412, 412]
    winner = next(r for r in responses if r.status_code == 200).json()["name"]
    assert (await client.get(url, headers=alice.headers)).json()["name"] == winner


async def test_delete_project_cascades_to_tasks_and_comments(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    alice = await make_user("alice")
    project = await api_create_project(client, alice, "Doomed")
    other = await api_create_project(client, alice, "Survivor")
    task_ids = [await create_task(app, project["id"], alice.id, f"T{i}") for i in range(2)]
    await create_comment(app, task_ids[0], alice.id)
    survivor_task = await create_task(app, other["id"], alice.id)
    await create_comment(app, survivor_task, alice.id)

    response = await client.delete(f"{API}/projects/{project['id']}", headers=alice.headers)
    assert response.status_code == 204
    assert response.content == b""
    problem(
        await client.get(f"{API}/projects/{project['id']}", headers=alice.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert await count_rows(app, Task, project_id=project["id"]) == 0
    assert await count_rows(app, ProjectMember, project_id=project["id"]) == 0
    assert await count_rows(app, Comment) == 1
    assert await count_rows(app, Task, project_id=other["id"]) == 1
    problem(
        await client.get(f"{API}/tasks/{task_ids[0]}/comments", headers=alice.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


async def test_inbox_cannot_be_deleted_even_by_admin(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    alice = await make_user("alice")
    admin = await make_user("root", role="admin")
    for caller in (alice, admin):
        problem(
            await client.delete(f"{API}/projects/{alice.inbox_id}", headers=caller.headers),
            409,
            "CONFLICT",
        )
    assert await count_rows(app, Project, id=alice.inbox_id) == 1


async def test_inbox_takes_no_members(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    admin = await make_user("root", role="admin")
    for caller in (alice, admin):
        problem(
            await client.post(
                f"{API}/projects/{alice.inbox_id}/members",
                json={"username": "bob", "role": "viewer"},
                headers=caller.headers,
            ),
            409,
            "CONFLICT",
        )
    assert await count_rows(app, ProjectMember, project_id=alice.inbox_id) == 1
    problem(
        await client.get(f"{API}/projects/{alice.inbox_id}", headers=bob.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


async def test_admin_reads_and_manages_foreign_project(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    admin = await make_user("root", role="admin")
    project = await api_create_project(client, alice, "Alice's")
    url = f"{API}/projects/{project['id']}"
    got = await client.get(url, headers=admin.headers)
    assert got.status_code == 200
    assert got.json()["role"] is None
    patched = await client.patch(url, json={"name": "By admin"}, headers=admin.headers)
    assert patched.status_code == 200
    assert patched.json()["role"] is None
    # An admin's own list stays their memberships only.
    listed = (await client.get(f"{API}/projects", headers=admin.headers)).json()
    assert [p["id"] for p in listed["items"]] == [admin.inbox_id]
    assert (await client.delete(url, headers=admin.headers)).status_code == 204


async def test_membership_change_moves_the_etag(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    project = await api_create_project(client, alice)
    url = f"{API}/projects/{project['id']}"
    before = (await client.get(url, headers=alice.headers)).headers["etag"]
    await api_add_member(client, alice, project["id"], bob, "viewer")
    after = (await client.get(url, headers=alice.headers)).headers["etag"]
    assert after != before


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "a\\u0000b"}',
        b'{"name": "ok", "description": "\\u0000"}',
        b'{"name": "\\ud800"}',
        b'{"name": "ok", "description": "x\\udfff"}',
    ],
)
async def test_unstorable_text_is_422_on_every_backend(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI, raw: bytes
) -> None:
    alice = await make_user("alice")
    headers = {**alice.headers, "Content-Type": "application/json"}
    problem(
        await client.post(f"{API}/projects", content=raw, headers=headers), 422, "VALIDATION_ERROR"
    )
    problem(
        await client.put(f"{API}/projects/{alice.inbox_id}", content=raw, headers=headers),
        422,
        "VALIDATION_ERROR",
    )
    assert await count_rows(app, Project) == 1
