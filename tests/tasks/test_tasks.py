"""Single-task behaviour through HTTP: create, read, replace, update, delete, who may do it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import TestUser, UserFactory, problem
from tests.factories import (
    TASKS,
    add_member,
    api_create_task,
    api_get_task,
    create_api_key,
    create_project,
    deactivate,
    etag,
    parse_time,
)

TASK_KEYS = {
    "id",
    "project_id",
    "title",
    "description",
    "status",
    "priority",
    "due_date",
    "tags",
    "assignee_id",
    "created_by",
    "created_at",
    "updated_at",
    "completed_at",
    "version",
}


async def _count(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    response = await client.get(TASKS, headers=headers)
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


# ---- create ------------------------------------------------------------------------------


async def _used_key(app: FastAPI, user: TestUser, scopes: list[str]) -> dict[str, str]:
    """An API key used a moment ago: its reads do not also write ``last_used_at``."""
    return await create_api_key(app, user, scopes, last_used_at=datetime.now(UTC))


async def test_create_goes_to_inbox_with_defaults(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    response = await client.post(TASKS, json={"title": "  Buy groceries \n"}, headers=alice.headers)
    assert response.status_code == 201, response.text
    task = response.json()
    assert set(task) == TASK_KEYS
    assert task["title"] == "Buy groceries"
    assert task["project_id"] == alice.inbox_id
    assert task["created_by"] == alice.id
    assert task["status"] == "pending"
    assert task["priority"] == 1
    assert task["tags"] == []
    assert task["description"] is None
    assert task["due_date"] is None
    assert task["assignee_id"] is None
    assert task["completed_at"] is None
    assert task["version"] == 1
    assert parse_time(task["created_at"]) == parse_time(task["updated_at"])
    assert response.headers["location"] == f"/api/v1/tasks/{task['id']}"
    assert response.headers["etag"] == f'"{task["id"]}-1"'

    again = await client.get(response.headers["location"], headers=alice.headers)
    assert again.status_code == 200
    assert again.json() == task
    assert again.headers["etag"] == response.headers["etag"]


async def test_create_normalises_fields(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    alice = await make_user("alice")
    task = await api_create_task(
        client,
        alice,
        description="Milk",
        status="in_progress",
        priority=5,
        due_date="2026-12-01T18:00:00+01:00",
        tags=["Home", "home", " ERRANDS ", "x"],
        assignee_id=alice.id,
    )
    assert task["tags"] == ["home", "errands", "x"]
    assert task["due_date"] == "2026-12-01T17:00:00Z"
    assert task["priority"] == 5
    assert task["status"] == "in_progress"
    assert task["assignee_id"] == alice.id
    assert task["description"] == "Milk"


async def test_tags_are_lowercased_and_deduplicated(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    tags = [f"t{i}" for i in range(15)] + [f"T{i}" for i in range(5)]
    task = await api_create_task(client, alice, tags=tags)
    assert task["tags"] == [f"t{i}" for i in range(15)]


async def test_more_than_twenty_tags_are_refused_as_the_schema_says(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    # The schema's maxItems is the server's rule, even when some would fold together.
    alice = await make_user("alice")
    tags = [f"t{i}" for i in range(20)] + ["T0"]
    body = problem(
        await client.post(TASKS, json={"title": "x", "tags": tags}, headers=alice.headers),
        422,
        "VALIDATION_ERROR",
    )
    assert body["errors"][0]["loc"] == ["body", "tags"]


async def test_create_in_project_needs_edit_rights(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, editor, viewer, outsider = (
        await make_user("owner"),
        await make_user("editor"),
        await make_user("viewer"),
        await make_user("outsider"),
    )
    project = await create_project(app, owner)
    await add_member(app, project, editor, "editor")
    await add_member(app, project, viewer, "viewer")

    problem(
        await client.post(
            TASKS, json={"title": "x", "project_id": project}, headers=viewer.headers
        ),
        403,
        "FORBIDDEN",
    )
    body = problem(
        await client.post(
            TASKS, json={"title": "x", "project_id": project}, headers=outsider.headers
        ),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert body["detail"] == f"Project {project} not found"
    problem(
        await client.post(TASKS, json={"title": "x", "project_id": 987654}, headers=owner.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert await _count(client, owner.headers) == 0

    task = await api_create_task(client, editor, project_id=project)
    assert task["project_id"] == project
    assert task["created_by"] == editor.id
    assert await _count(client, owner.headers) == 1


async def test_assignee_must_be_a_member(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    body = problem(
        await client.post(TASKS, json={"title": "x", "assignee_id": bob.id}, headers=alice.headers),
        422,
        "VALIDATION_ERROR",
    )
    assert body["errors"][0]["loc"] == ["body", "assignee_id"]
    assert await _count(client, alice.headers) == 0

    project = await create_project(app, alice)
    await add_member(app, project, bob, "viewer")
    task = await api_create_task(client, alice, project_id=project, assignee_id=bob.id)
    assert task["assignee_id"] == bob.id


INVALID_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("missing title", {}),
    ("blank title", {"title": "   "}),
    ("title too long", {"title": "x" * 201}),
    ("title not a string", {"title": 5}),
    ("title with NUL", {"title": "a\u0000b"}),
    ("description too long", {"title": "a", "description": "x" * 2001}),
    ("bad status", {"title": "a", "status": "done"}),
    ("priority 0", {"title": "a", "priority": 0}),
    ("priority 6", {"title": "a", "priority": 6}),
    ("priority as string", {"title": "a", "priority": "3"}),
    ("priority as bool", {"title": "a", "priority": True}),
    ("priority as float", {"title": "a", "priority": 2.5}),
    ("21 distinct tags", {"title": "a", "tags": [f"t{i}" for i in range(21)]}),
    ("empty tag", {"title": "a", "tags": [""]}),
    ("blank tag", {"title": "a", "tags": ["  "]}),
    ("tag too long", {"title": "a", "tags": ["x" * 51]}),
    ("tags not a list", {"title": "a", "tags": "home"}),
    ("naive due date", {"title": "a", "due_date": "2026-12-01T17:00:00"}),
    ("due date as number", {"title": "a", "due_date": 1767225600}),
    ("due date garbage", {"title": "a", "due_date": "tomorrow"}),
    ("due date beyond range", {"title": "a", "due_date": "9999-12-31T23:00:00-05:00"}),
    ("assignee id too large", {"title": "a", "assignee_id": 2**63}),
    ("project id zero", {"title": "a", "project_id": 0}),
    ("unknown field", {"title": "a", "colour": "red"}),
    ("read-only id", {"title": "a", "id": 5}),
    ("read-only created_by", {"title": "a", "created_by": 5}),
    ("read-only created_at", {"title": "a", "created_at": "2026-01-01T00:00:00Z"}),
    ("read-only updated_at", {"title": "a", "updated_at": "2026-01-01T00:00:00Z"}),
    ("read-only completed_at", {"title": "a", "completed_at": "2026-01-01T00:00:00Z"}),
    ("read-only version", {"title": "a", "version": 7}),
]


async def test_invalid_create_bodies_are_422_and_create_nothing(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    for label, body in INVALID_BODIES:
        response = await client.post(TASKS, json=body, headers=alice.headers)
        problem_body = problem(response, 422, "VALIDATION_ERROR")
        assert problem_body["errors"], label
    assert await _count(client, alice.headers) == 0


async def test_malformed_json_is_400(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    alice = await make_user("alice")
    response = await client.post(
        TASKS,
        content=b'{"title": "a",',
        headers={**alice.headers, "Content-Type": "application/json"},
    )
    problem(response, 400, "MALFORMED_REQUEST")
    assert await _count(client, alice.headers) == 0


async def test_requires_authentication(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    alice = await make_user("alice")
    task = await api_create_task(client, alice)
    problem(await client.get(f"{TASKS}/{task['id']}"), 401, "NOT_AUTHENTICATED")
    problem(await client.get(TASKS), 401, "NOT_AUTHENTICATED")
    problem(await client.post(TASKS, json={"title": "x"}), 401, "NOT_AUTHENTICATED")
    problem(
        await client.get(f"{TASKS}/{task['id']}", headers={"Authorization": "Bearer nope"}),
        401,
        "INVALID_CREDENTIALS",
    )
    assert await _count(client, alice.headers) == 1


# ---- read --------------------------------------------------------------------------------


async def test_unknown_and_invisible_tasks_are_404(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    task = await api_create_task(client, alice)
    body = problem(
        await client.get(f"{TASKS}/{task['id']}", headers=bob.headers), 404, "RESOURCE_NOT_FOUND"
    )
    assert body["detail"] == f"Task {task['id']} not found"
    body = problem(
        await client.get(f"{TASKS}/424242", headers=alice.headers), 404, "RESOURCE_NOT_FOUND"
    )
    assert body["detail"] == "Task 424242 not found"


@pytest.mark.parametrize("bad_id", ["0", "99999999999999999999"])
async def test_bad_task_ids_are_422(
    client: httpx.AsyncClient, make_user: UserFactory, bad_id: str
) -> None:
    alice = await make_user("alice")
    problem(await client.get(f"{TASKS}/{bad_id}", headers=alice.headers), 422, "VALIDATION_ERROR")
    problem(
        await client.patch(f"{TASKS}/{bad_id}", json={"title": "x"}, headers=alice.headers),
        422,
        "VALIDATION_ERROR",
    )


@pytest.mark.parametrize("bad_id", ["-1", "abc", "1.5", "+1"])
async def test_task_ids_that_are_not_digits_name_nothing(
    client: httpx.AsyncClient, make_user: UserFactory, bad_id: str
) -> None:
    alice = await make_user("alice")
    problem(await client.get(f"{TASKS}/{bad_id}", headers=alice.headers), 404, "RESOURCE_NOT_FOUND")
    problem(
        await client.patch(f"{TASKS}/{bad_id}", json={"title": "x"}, headers=alice.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


async def test_deactivated_user_is_rejected_on_the_hot_path(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    task = await api_create_task(client, alice)
    await deactivate(app, alice)
    problem(
        await client.get(f"{TASKS}/{task['id']}", headers=alice.headers),
        401,
        "INVALID_CREDENTIALS",
    )


async def test_admin_reads_and_edits_any_task(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    admin = await make_user("root", role="admin")
    task = await api_create_task(client, alice)
    assert (await api_get_task(client, admin, task["id"]))["id"] == task["id"]
    response = await client.patch(
        f"{TASKS}/{task['id']}", json={"priority": 3}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["priority"] == 3


async def test_etag_and_if_none_match(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    alice = await make_user("alice")
    task = await api_create_task(client, alice)
    url = f"{TASKS}/{task['id']}"
    current = etag(task)

    for header in (current, f"W/{current}", f'"nope", {current}', "*"):
        response = await client.get(url, headers={**alice.headers, "If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == current

    stale = await client.get(url, headers={**alice.headers, "If-None-Match": '"1-99"'})
    assert stale.status_code == 200
    assert stale.json() == task

    patched = await client.patch(url, json={"title": "renamed"}, headers=alice.headers)
    assert patched.headers["etag"] == f'"{task["id"]}-2"'
    after = await client.get(url, headers={**alice.headers, "If-None-Match": current})
    assert after.status_code == 200
    assert after.headers["etag"] == patched.headers["etag"]
    assert after.json()["title"] == "renamed"


async def test_invisible_task_is_404_even_with_if_none_match(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    task = await api_create_task(client, alice)
    response = await client.get(
        f"{TASKS}/{task['id']}", headers={**bob.headers, "If-None-Match": "*"}
    )
    problem(response, 404, "RESOURCE_NOT_FOUND")


# ---- update ------------------------------------------------------------------------------


async def test_patch_changes_only_the_fields_sent(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    task = await api_create_task(
        client,
        alice,
        description="d",
        priority=4,
        tags=["a"],
        due_date="2026-12-01T17:00:00Z",
        assignee_id=alice.id,
    )
    url = f"{TASKS}/{task['id']}"
    response = await client.patch(url, json={"title": " New title "}, headers=alice.headers)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert response.headers["etag"] == f'"{task["id"]}-2"'
    assert updated["title"] == "New title"
    assert updated["version"] == 2
    assert parse_time(updated["updated_at"]) >= parse_time(task["updated_at"])
    unchanged = {k: v for k, v in task.items() if k not in {"title", "version", "updated_at"}}
    assert {k: updated[k] for k in unchanged} == unchanged

    cleared = await client.patch(
        url,
        json={"description": None, "due_date": None, "assignee_id": None},
        headers=alice.headers,
    )
    assert cleared.status_code == 200, cleared.text
    body = cleared.json()
    assert body["description"] is None
    assert body["due_date"] is None
    assert body["assignee_id"] is None
    assert body["priority"] == 4
    assert body["tags"] == ["a"]
    assert body["version"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {"title": None},
        {"status": None},
        {"priority": None},
        {"tags": None},
        {"project_id": None},
        {"title": ""},
        {"priority": 9},
        {"version": 5},
        {"id": 1},
        {"completed_at": None},
        {"bogus": 1},
        {"tags": ["x" * 51]},
    ],
)
async def test_invalid_patch_is_422_and_changes_nothing(
    client: httpx.AsyncClient, make_user: UserFactory, body: dict[str, Any]
) -> None:
    alice = await make_user("alice")
    task = await api_create_task(client, alice, description="keep")
    response = await client.patch(f"{TASKS}/{task['id']}", json=body, headers=alice.headers)
    problem(response, 422, "VALIDATION_ERROR")
    assert await api_get_task(client, alice, task["id"]) == task


async def test_empty_patch_is_400_and_changes_nothing(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    task = await api_create_task(client, alice)
    url = f"{TASKS}/{task['id']}"
    problem(await client.patch(url, json={}, headers=alice.headers), 400, "MALFORMED_REQUEST")
    problem(
        await client.patch(
            url, content=b"{nope", headers={**alice.headers, "Content-Type": "application/json"}
        ),
        400,
        "MALFORMED_REQUEST",
    )
    assert await api_get_task(client, alice, task["id"]) == task


async def test_put_resets_omitted_fields_to_defaults(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    task = await api_create_task(
        client,
        alice,
        description="d",
        status="completed",
        priority=4,
        tags=["a"],
        due_date="2026-12-01T17:00:00Z",
        assignee_id=alice.id,
    )
    assert task["completed_at"] is not None
    response = await client.put(
        f"{TASKS}/{task['id']}", json={"title": "Only"}, headers=alice.headers
    )
    assert response.status_code == 200, response.text
    replaced = response.json()
    assert response.headers["etag"] == f'"{task["id"]}-2"'
    assert replaced["title"] == "Only"
    assert replaced["description"] is None
    assert replaced["status"] == "pending"
    assert replaced["priority"] == 1
    assert replaced["tags"] == []
    assert replaced["due_date"] is None
    assert replaced["assignee_id"] is None
    assert replaced["completed_at"] is None
    assert replaced["project_id"] == task["project_id"]
    assert replaced["created_by"] == task["created_by"]
    assert replaced["created_at"] == task["created_at"]
    assert replaced["version"] == 2


async def test_put_needs_a_title_and_changes_nothing_without(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    task = await api_create_task(client, alice, priority=3)
    url = f"{TASKS}/{task['id']}"
    problem(await client.put(url, json={}, headers=alice.headers), 422, "VALIDATION_ERROR")
    problem(
        await client.put(url, json={"title": "a", "version": 9}, headers=alice.headers),
        422,
        "VALIDATION_ERROR",
    )
    assert await api_get_task(client, alice, task["id"]) == task


async def test_put_moves_between_projects_with_edit_rights_on_both(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    viewed = await create_project(app, bob, "viewed")
    await add_member(app, viewed, alice, "viewer")
    hidden = await create_project(app, bob, "hidden")
    shared = await create_project(app, bob, "shared")
    await add_member(app, shared, alice, "editor")
    task = await api_create_task(client, alice, assignee_id=alice.id)
    url = f"{TASKS}/{task['id']}"

    problem(
        await client.put(url, json={"title": "t", "project_id": viewed}, headers=alice.headers),
        403,
        "FORBIDDEN",
    )
    problem(
        await client.put(url, json={"title": "t", "project_id": hidden}, headers=alice.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    problem(
        await client.put(
            url,
            json={"title": "t", "project_id": shared, "assignee_id": 999999},
            headers=alice.headers,
        ),
        422,
        "VALIDATION_ERROR",
    )
    assert await api_get_task(client, alice, task["id"]) == task

    moved = await client.put(
        url, json={"title": "t", "project_id": shared, "assignee_id": bob.id}, headers=alice.headers
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["project_id"] == shared
    assert moved.json()["assignee_id"] == bob.id
    # Bob owns the destination, so he sees it now; PUT without project_id keeps it there.
    again = await client.put(url, json={"title": "t2"}, headers=bob.headers)
    assert again.json()["project_id"] == shared


async def test_patch_move_keeps_assignee_only_if_member_of_destination(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    other = await create_project(app, alice, "other")
    await add_member(app, other, carol, "viewer")
    bobs = await create_project(app, bob, "bobs")
    await add_member(app, bobs, alice, "editor")
    task = await api_create_task(client, alice, assignee_id=alice.id)
    url = f"{TASKS}/{task['id']}"

    moved = await client.patch(url, json={"project_id": other}, headers=alice.headers)
    assert moved.status_code == 200, moved.text
    assert moved.json()["project_id"] == other
    assert moved.json()["assignee_id"] == alice.id, "alice is a member of the destination"

    assigned = await client.patch(url, json={"assignee_id": carol.id}, headers=alice.headers)
    assert assigned.status_code == 200, assigned.text
    before = assigned.json()
    refused = await client.patch(url, json={"project_id": bobs}, headers=alice.headers)
    body = problem(refused, 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["body", "assignee_id"]
    assert await api_get_task(client, alice, task["id"]) == before

    ok = await client.patch(
        url, json={"project_id": bobs, "assignee_id": None}, headers=alice.headers
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["project_id"] == bobs
    assert ok.json()["assignee_id"] is None


async def test_completed_at_follows_status(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    task = await api_create_task(client, alice)
    url = f"{TASKS}/{task['id']}"
    assert task["completed_at"] is None

    done = (await client.patch(url, json={"status": "completed"}, headers=alice.headers)).json()
    assert done["completed_at"] is not None
    assert parse_time(done["completed_at"]) == parse_time(done["updated_at"])

    renamed = (await client.patch(url, json={"title": "x"}, headers=alice.headers)).json()
    assert renamed["completed_at"] == done["completed_at"]
    again = (await client.patch(url, json={"status": "completed"}, headers=alice.headers)).json()
    assert again["completed_at"] == done["completed_at"], "staying completed keeps the time"
    # Nothing changed, so no new version (API.md §6: it goes up on every change).
    assert again["version"] == renamed["version"]
    assert again["updated_at"] == renamed["updated_at"]
    put_done = (
        await client.put(url, json={"title": "y", "status": "completed"}, headers=alice.headers)
    ).json()
    assert put_done["completed_at"] == done["completed_at"]

    reopened = (
        await client.patch(url, json={"status": "in_progress"}, headers=alice.headers)
    ).json()
    assert reopened["completed_at"] is None
    cancelled = (
        await client.patch(url, json={"status": "cancelled"}, headers=alice.headers)
    ).json()
    assert cancelled["completed_at"] is None
    redone = (await client.patch(url, json={"status": "completed"}, headers=alice.headers)).json()
    assert parse_time(redone["completed_at"]) > parse_time(done["completed_at"])
    assert redone["version"] == 7  # the no-op PATCH (``again``) did not count

    created_done = await api_create_task(client, alice, status="completed")
    assert created_done["completed_at"] == created_done["created_at"]


async def test_a_write_that_changes_nothing_keeps_the_version_and_etag(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """API.md §6: the version goes up on every change — and only then. A PUT or PATCH of
    the values the task already has answers 200 with the same task, updated_at and ETag,
    so a client's cached copy and its If-Match stay valid."""
    alice = await make_user("alice")
    task = await api_create_task(client, alice, title="Same", tags=["a"], priority=2)
    url = f"{TASKS}/{task['id']}"
    full = {"title": "Same", "tags": ["a"], "priority": 2, "project_id": task["project_id"]}
    first = await client.put(url, json=full, headers=alice.headers)
    assert first.status_code == 200
    for method, body in (
        ("PUT", full),
        ("PATCH", {"title": "Same", "due_date": None, "description": None}),
        ("PATCH", {"project_id": task["project_id"]}),  # a "move" to where it is
    ):
        again = await client.request(
            method, url, json=body, headers={**alice.headers, "If-Match": first.headers["etag"]}
        )
        assert again.status_code == 200, (method, body, again.text)
        assert again.json() == first.json(), (method, body)
        assert again.headers["etag"] == first.headers["etag"]
    changed = await client.patch(
        url, json={"priority": 3}, headers={**alice.headers, "If-Match": first.headers["etag"]}
    )
    assert changed.json()["version"] == first.json()["version"] + 1
    assert parse_time(changed.json()["updated_at"]) > parse_time(first.json()["updated_at"])


# ---- conditional writes ------------------------------------------------------------------


async def test_if_match_guards_patch_put_and_delete(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    task = await api_create_task(client, alice)
    url = f"{TASKS}/{task['id']}"
    current = etag(task)

    for stale in ('"999-1"', f'"{task["id"]}-2"', f"W/{current}", "garbage"):
        headers = {**alice.headers, "If-Match": stale}
        body = problem(
            await client.patch(url, json={"title": "x"}, headers=headers),
            412,
            "PRECONDITION_FAILED",
        )
        assert body["detail"]
        problem(
            await client.put(url, json={"title": "x"}, headers=headers), 412, "PRECONDITION_FAILED"
        )
        problem(await client.delete(url, headers=headers), 412, "PRECONDITION_FAILED")
    assert await api_get_task(client, alice, task["id"]) == task

    ok = await client.patch(
        url, json={"title": "x"}, headers={**alice.headers, "If-Match": f'"a", {current}'}
    )
    assert ok.status_code == 200, ok.text
    # The old ETag is now stale.
    problem(
        await client.patch(
            url, json={"title": "y"}, headers={**alice.headers, "If-Match": current}
        ),
        412,
        "PRECONDITION_FAILED",
    )
    star = await client.put(url, json={"title": "z"}, headers={**alice.headers, "If-Match": "*"})
    assert star.status_code == 200
    assert star.json()["version"] == 3

    problem(
        await client.delete(url, headers={**alice.headers, "If-Match": ok.headers["etag"]}),
        412,
        "PRECONDITION_FAILED",
    )
    gone = await client.delete(url, headers={**alice.headers, "If-Match": star.headers["etag"]})
    assert gone.status_code == 204
    assert gone.content == b""
    problem(await client.get(url, headers=alice.headers), 404, "RESOURCE_NOT_FOUND")
    problem(
        await client.patch(url, json={"title": "x"}, headers=alice.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    problem(
        await client.delete(url, headers={**alice.headers, "If-Match": "*"}),
        404,
        "RESOURCE_NOT_FOUND",
    )


async def test_delete_without_if_match(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    alice = await make_user("alice")
    task = await api_create_task(client, alice)
    response = await client.delete(f"{TASKS}/{task['id']}", headers=alice.headers)
    assert response.status_code == 204
    assert await _count(client, alice.headers) == 0
    problem(
        await client.delete(f"{TASKS}/{task['id']}", headers=alice.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


# ---- authorization -----------------------------------------------------------------------


async def test_roles_decide_who_may_write(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, editor, viewer, outsider = (
        await make_user("owner"),
        await make_user("editor"),
        await make_user("viewer"),
        await make_user("outsider"),
    )
    project = await create_project(app, owner)
    await add_member(app, project, editor, "editor")
    await add_member(app, project, viewer, "viewer")
    task = await api_create_task(client, owner, project_id=project)
    url = f"{TASKS}/{task['id']}"

    assert await api_get_task(client, viewer, task["id"]) == task
    for method, body in (("PATCH", {"title": "x"}), ("PUT", {"title": "x"}), ("DELETE", None)):
        problem(
            await client.request(method, url, json=body, headers=viewer.headers), 403, "FORBIDDEN"
        )
        problem(
            await client.request(method, url, json=body, headers=outsider.headers),
            404,
            "RESOURCE_NOT_FOUND",
        )
    problem(await client.get(url, headers=outsider.headers), 404, "RESOURCE_NOT_FOUND")
    assert await api_get_task(client, owner, task["id"]) == task

    edited = await client.patch(url, json={"title": "by editor"}, headers=editor.headers)
    assert edited.status_code == 200
    assert (await client.delete(url, headers=editor.headers)).status_code == 204


async def test_api_key_scopes(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    task = await api_create_task(client, alice)
    url = f"{TASKS}/{task['id']}"
    read_only = await _used_key(app, alice, ["tasks:read"])
    no_tasks = await _used_key(app, alice, ["projects:read"])
    read_write = await _used_key(app, alice, ["tasks:read", "tasks:write"])

    assert (await client.get(url, headers=read_only)).status_code == 200
    assert (await client.get(TASKS, headers=read_only)).status_code == 200
    problem(await client.post(TASKS, json={"title": "x"}, headers=read_only), 403, "FORBIDDEN")
    problem(await client.patch(url, json={"title": "x"}, headers=read_only), 403, "FORBIDDEN")
    problem(await client.put(url, json={"title": "x"}, headers=read_only), 403, "FORBIDDEN")
    problem(await client.delete(url, headers=read_only), 403, "FORBIDDEN")
    problem(await client.get(url, headers=no_tasks), 403, "FORBIDDEN")
    problem(await client.get(TASKS, headers=no_tasks), 403, "FORBIDDEN")
    problem(await client.get(f"{TASKS}/export", headers=no_tasks), 403, "FORBIDDEN")
    assert await api_get_task(client, alice, task["id"]) == task
    assert await _count(client, alice.headers) == 1

    created = await client.post(TASKS, json={"title": "by key"}, headers=read_write)
    assert created.status_code == 201, created.text
    assert created.json()["created_by"] == alice.id


async def test_admin_api_key_without_admin_scope_is_not_admin(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    admin = await make_user("root", role="admin")
    task = await api_create_task(client, alice)
    plain = await _used_key(app, admin, ["tasks:read"])
    powerful = await _used_key(app, admin, ["tasks:read", "admin"])
    url = f"{TASKS}/{task['id']}"
    problem(await client.get(url, headers=plain), 404, "RESOURCE_NOT_FOUND")
    assert (await client.get(url, headers=powerful)).status_code == 200
    assert (await client.get(TASKS, headers=plain)).json()["total"] == 0
    assert (await client.get(TASKS, headers=powerful)).json()["total"] == 1


async def test_options_lists_allowed_methods(client: httpx.AsyncClient) -> None:
    collection = await client.options(TASKS)
    assert collection.status_code == 204
    assert {m.strip() for m in collection.headers["allow"].split(",")} == {
        "GET",
        "HEAD",
        "POST",
        "OPTIONS",
    }
    item = await client.options(f"{TASKS}/1")
    assert item.status_code == 204
    assert {m.strip() for m in item.headers["allow"].split(",")} == {
        "GET",
        "HEAD",
        "PUT",
        "PATCH",
        "DELETE",
        "OPTIONS",
    }


async def test_bearer_and_api_key_reads_agree(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    # On PostgreSQL a bearer GET takes the driver-level fast path while an API-key GET
    # (whose session already holds a connection) goes through SQLAlchemy: same answer.
    alice = await make_user("alice")
    key = await _used_key(app, alice, ["tasks:read"])
    task = await api_create_task(
        client,
        alice,
        description="d",
        status="completed",
        priority=4,
        tags=["x", "y"],
        due_date="2026-12-01T17:00:00.123456Z",
        assignee_id=alice.id,
    )
    url = f"{TASKS}/{task['id']}"
    by_token = await client.get(url, headers=alice.headers)
    by_key = await client.get(url, headers=key)
    assert by_token.status_code == by_key.status_code == 200
    assert by_token.json() == by_key.json() == task
    assert by_token.headers["etag"] == by_key.headers["etag"] == etag(task)
    assert task["due_date"] == "2026-12-01T17:00:00.123456Z"
    problem(await client.get(f"{TASKS}/424242", headers=key), 404, "RESOURCE_NOT_FOUND")
