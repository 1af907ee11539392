"""Mass assignment: read-only and foreign fields in bodies are refused and change nothing.

Every route of tests/route_table.py that takes a JSON body is tried with each field its
answer shows but its body does not take, read from the OpenAPI document (so a new resource
is covered by its rows alone). The rows with ``writes`` set are also tried with the
hand-written lists below, which add fields no answer shows (``password_hash``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import TestUser, UserFactory, problem
from tests.factories import API, api_add_member, api_create_project, database_rows
from tests.route_table import HTTP_ROUTES, ROUTES, Row, Seed, seed_world

PROJECT_FIELDS: list[dict[str, Any]] = [
    {"id": 999},
    {"created_by": 1},
    {"version": 50},
    {"role": "owner"},
    {"is_inbox": True},
    {"created_at": "2020-01-01T00:00:00Z"},
    {"updated_at": "2020-01-01T00:00:00Z"},
]
TASK_FIELDS: list[dict[str, Any]] = [
    {"id": 999},
    {"created_by": 1},
    {"version": 50},
    {"created_at": "2020-01-01T00:00:00Z"},
    {"updated_at": "2020-01-01T00:00:00Z"},
    {"completed_at": "2020-01-01T00:00:00Z"},
    {"role": "owner"},
]
COMMENT_FIELDS: list[dict[str, Any]] = [
    {"id": 999},
    {"author_id": 1},
    {"task_id": 1},
    {"created_at": "2020-01-01T00:00:00Z"},
    {"updated_at": "2020-01-01T00:00:00Z"},
    {"version": 2},
]
# Server-owned fields by the resource a row ``writes`` (a field one of its routes takes,
# like a member's ``user_id`` on POST or a user's ``role`` for an administrator, is not here).
READ_ONLY: dict[str, list[dict[str, Any]]] = {
    "project": PROJECT_FIELDS,
    "task": TASK_FIELDS,
    "comment": COMMENT_FIELDS,
    "member": [{"id": 999}, {"project_id": 1}, {"created_at": "2020-01-01T00:00:00Z"}],
    "user": [
        {"id": 999},
        {"password_hash": "x"},
        {"inbox_project_id": 1},
        {"created_at": "2020-01-01T00:00:00Z"},
    ],
    "api_key": [
        {"id": 999},
        {"user_id": 1},
        {"prefix": "tm_abcde"},
        {"key": "tm_abcdefghijklmnopqrstuvwxyz"},
        {"last_used_at": "2020-01-01T00:00:00Z"},
        {"created_at": "2020-01-01T00:00:00Z"},
    ],
}
WRITES = [r for r in ROUTES if r.writes]


def _writing(resource: str) -> list[Row]:
    return [r for r in WRITES if r.writes == resource]


def test_every_written_resource_has_its_read_only_fields_listed() -> None:
    assert {r.writes for r in WRITES} <= READ_ONLY.keys()
    assert {"project", "task", "comment", "member", "user", "api_key"} <= {r.writes for r in WRITES}


@pytest.mark.parametrize(
    ("row", "extra"),
    [(r, extra) for r in WRITES for extra in READ_ONLY[str(r.writes)]],
    ids=[f"{r.operation_id}-{next(iter(e))}" for r in WRITES for e in READ_ONLY[str(r.writes)]],
)
async def test_every_write_route_refuses_server_owned_fields(
    client: httpx.AsyncClient, app: FastAPI, row: Row, extra: dict[str, Any]
) -> None:
    world = await seed_world(app)
    call = row.call(world)
    assert call.json is not None, row.operation_id
    before = await database_rows(app)
    response = await client.request(
        row.method,
        row.url(call),
        json={**call.json, **extra},
        headers=world.headers(str(row.sent_by)) if row.sent_by else {},
    )
    body = problem(response, 422, "VALIDATION_ERROR")
    assert ["body", next(iter(extra))] in [e["loc"] for e in body["errors"]], body
    assert await database_rows(app) == before


def _attempts(rows: list[Row], seed: Seed, extra: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Each row's valid body with ``extra`` added; a PATCH also with ``extra`` alone."""
    attempts = []
    for row in rows:
        call = row.call(seed)
        assert call.json is not None
        attempts.append((row.method, row.url(call), {**call.json, **extra}))
        if row.method == "PATCH":
            attempts.append((row.method, row.url(call), extra))
    return attempts


@pytest.mark.parametrize("extra", PROJECT_FIELDS, ids=lambda e: next(iter(e)))
async def test_project_read_only_fields_are_422(
    client: httpx.AsyncClient, make_user: UserFactory, extra: dict[str, Any]
) -> None:
    alice = await make_user("alice")
    project = await api_create_project(client, alice, "Original")
    url = f"{API}/projects/{project['id']}"
    before = await client.get(url, headers=alice.headers)
    seed = Seed(ids={"project": project["id"]})
    for method, target, body in _attempts(_writing("project"), seed, extra):
        problem(
            await client.request(method, target, json=body, headers=alice.headers),
            422,
            "VALIDATION_ERROR",
        )
    after = await client.get(url, headers=alice.headers)
    assert after.json() == before.json()
    assert after.headers["etag"] == before.headers["etag"]
    listed = (await client.get(f"{API}/projects", headers=alice.headers)).json()
    assert listed["total"] == 2  # Inbox + Original: no POST got through


@pytest.mark.parametrize("extra", TASK_FIELDS, ids=lambda e: next(iter(e)))
async def test_task_read_only_fields_are_422(
    client: httpx.AsyncClient, make_user: UserFactory, extra: dict[str, Any]
) -> None:
    alice = await make_user("alice")
    created = await client.post(f"{API}/tasks", json={"title": "Original"}, headers=alice.headers)
    assert created.status_code == 201, created.text
    url = f"{API}/tasks/{created.json()['id']}"
    seed = Seed(ids={"task": created.json()["id"], "project": alice.inbox_id})
    for method, target, body in _attempts(_writing("task"), seed, extra):
        problem(
            await client.request(method, target, json=body, headers=alice.headers),
            422,
            "VALIDATION_ERROR",
        )
    after = await client.get(url, headers=alice.headers)
    assert after.json() == created.json()
    assert (await client.get(f"{API}/tasks", headers=alice.headers)).json()["total"] == 1


@pytest.mark.parametrize("extra", COMMENT_FIELDS, ids=lambda e: next(iter(e)))
async def test_comment_read_only_fields_are_422(
    client: httpx.AsyncClient, make_user: UserFactory, extra: dict[str, Any]
) -> None:
    alice = await make_user("alice")
    task = (await client.post(f"{API}/tasks", json={"title": "t"}, headers=alice.headers)).json()
    comments = f"{API}/tasks/{task['id']}/comments"
    comment = (await client.post(comments, json={"body": "orig"}, headers=alice.headers)).json()
    seed = Seed(ids={"task": task["id"], "comment": comment["id"]})
    for method, target, body in _attempts(_writing("comment"), seed, extra):
        problem(
            await client.request(method, target, json=body, headers=alice.headers),
            422,
            "VALIDATION_ERROR",
        )
    listed = (await client.get(comments, headers=alice.headers)).json()
    assert listed["items"] == [comment]


async def _setup_move(
    client: httpx.AsyncClient, make_user: UserFactory
) -> tuple[TestUser, dict[str, Any], dict[str, int]]:
    """Alice's task, and three foreign projects: one invisible, one as viewer, one as editor."""
    alice = await make_user("alice")
    bob = await make_user("bob")
    task = (await client.post(f"{API}/tasks", json={"title": "mine"}, headers=alice.headers)).json()
    as_viewer = await api_create_project(client, bob, "viewer here")
    await api_add_member(client, bob, as_viewer["id"], alice, "viewer")
    as_editor = await api_create_project(client, bob, "editor here")
    await api_add_member(client, bob, as_editor["id"], alice, "editor")
    projects = {"invisible": bob.inbox_id, "viewer": as_viewer["id"], "editor": as_editor["id"]}
    return alice, task, projects


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
async def test_task_cannot_move_into_a_project_the_caller_cannot_edit(
    client: httpx.AsyncClient, make_user: UserFactory, method: str
) -> None:
    alice, task, projects = await _setup_move(client, make_user)
    url = f"{API}/tasks/{task['id']}"
    for target, status, code in (
        ("invisible", 404, "RESOURCE_NOT_FOUND"),
        ("viewer", 403, "FORBIDDEN"),
    ):
        body = {"title": "mine", "project_id": projects[target]}
        problem(await client.request(method, url, json=body, headers=alice.headers), status, code)
        after = await client.get(url, headers=alice.headers)
        assert after.json() == task
    moved = await client.request(
        method, url, json={"title": "mine", "project_id": projects["editor"]}, headers=alice.headers
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["project_id"] == projects["editor"]


async def test_task_cannot_be_created_in_a_foreign_project(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, _task, projects = await _setup_move(client, make_user)
    for target, status, code in (
        ("invisible", 404, "RESOURCE_NOT_FOUND"),
        ("viewer", 403, "FORBIDDEN"),
    ):
        problem(
            await client.post(
                f"{API}/tasks",
                json={"title": "planted", "project_id": projects[target]},
                headers=alice.headers,
            ),
            status,
            code,
        )
    listed = await client.get(f"{API}/tasks", params={"q": "planted"}, headers=alice.headers)
    assert listed.json()["total"] == 0


async def test_editor_cannot_escalate_through_members(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner = await make_user("owner")
    editor = await make_user("editor")
    viewer = await make_user("viewer")
    stranger = await make_user("stranger")
    project = await api_create_project(client, owner)
    await api_add_member(client, owner, project["id"], editor, "editor")
    await api_add_member(client, owner, project["id"], viewer, "viewer")
    members = f"{API}/projects/{project['id']}/members"
    before = (await client.get(members, headers=owner.headers)).json()

    for caller in (editor, viewer):
        attempts = [
            ("PATCH", f"{members}/{caller.id}", {"role": "owner"}),
            ("PATCH", f"{members}/{owner.id}", {"role": "viewer"}),
            ("POST", members, {"user_id": stranger.id, "role": "owner"}),
            ("DELETE", f"{members}/{owner.id}", None),
        ]
        for method, url, body in attempts:
            problem(
                await client.request(method, url, json=body, headers=caller.headers),
                403,
                "FORBIDDEN",
            )
    # Membership rows carry no other writable fields either.
    problem(
        await client.patch(
            f"{members}/{editor.id}",
            json={"role": "editor", "user_id": owner.id},
            headers=owner.headers,
        ),
        422,
        "VALIDATION_ERROR",
    )
    problem(
        await client.post(
            members,
            json={"user_id": stranger.id, "role": "viewer", "project_id": 1},
            headers=owner.headers,
        ),
        422,
        "VALIDATION_ERROR",
    )
    assert (await client.get(members, headers=owner.headers)).json() == before


# ---- every write route, from the OpenAPI document ------------------------------------------

NOTHING_SERVER_OWNED = frozenset(
    {
        "projects_members_add",
        "auth_logout",
        "auth_password_reset",
        "auth_password_reset_confirm",
        "users_change_password",
    }
)
# Any seed will do to tell whether a row's valid request has a JSON body.
_ANY = Seed(ids=defaultdict(lambda: 1), secrets=defaultdict(str), tokens=defaultdict(str))
JSON_WRITES = [
    r for r in HTTP_ROUTES if r.method in ("POST", "PUT", "PATCH") and r.call(_ANY).json is not None
]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _sample(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A value of the property's own type, so only its being read-only can refuse it."""
    options = [_resolve(document, o) for o in schema.get("anyOf", [schema])]
    option = next(o for o in options if o.get("type") != "null")
    if "enum" in option:
        return option["enum"][0]
    kind = option.get("type", "string")
    if kind == "string":
        return "2020-01-01T00:00:00Z" if schema.get("format") == "date-time" else "x"
    return {"integer": 999, "number": 1.5, "boolean": True, "array": [], "object": {}}[kind]


def server_owned(document: dict[str, Any], row: Row) -> dict[str, Any]:
    """The fields the operation's 2xx JSON answer shows but its JSON body does not take."""
    operation = document["paths"][row.path][row.method.lower()]
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is None:
        return {}
    taken = _resolve(document, body["schema"]).get("properties", {})
    shown: dict[str, Any] = {}
    for status, answer in operation["responses"].items():
        content = answer.get("content", {}).get("application/json")
        if status.startswith("2") and content is not None:
            shown |= _resolve(document, content["schema"]).get("properties", {})
    return {name: _sample(document, prop) for name, prop in shown.items() if name not in taken}


def test_every_json_write_is_checked_with_the_fields_it_does_not_take(app: FastAPI) -> None:
    document = app.openapi()
    owned = {row.operation_id: server_owned(document, row) for row in JSON_WRITES}
    # The derivation finds what the hand-written lists above name, and the newer resources.
    assert {"id", "created_by", "version", "created_at"} <= owned["tasks_create"].keys()
    assert {"id", "secret", "active", "disabled_reason"} <= owned["webhooks_create"].keys()
    assert {"id", "author_id", "task_id"} <= owned["comments_update"].keys()


@pytest.mark.parametrize("row", JSON_WRITES, ids=lambda r: r.operation_id)
async def test_every_json_write_refuses_every_field_it_does_not_take(
    client: httpx.AsyncClient, app: FastAPI, row: Row
) -> None:
    fields = server_owned(app.openapi(), row)
    # Answers with no body (204), or one showing only what the body takes (a member's
    # ``user_id`` and ``role``): nothing to refuse. Any other row must have fields to try.
    assert bool(fields) is (row.operation_id not in NOTHING_SERVER_OWNED), sorted(fields)
    world = await seed_world(app)
    call = row.call(world)
    assert call.json is not None, row.operation_id
    headers = world.headers(str(row.sent_by)) if row.sent_by else {}
    before = await database_rows(app)
    for name, value in fields.items():
        response = await client.request(
            row.method, row.url(call), json={**call.json, name: value}, headers=headers
        )
        body = problem(response, 422, "VALIDATION_ERROR")
        assert ["body", name] in [e["loc"] for e in body["errors"]], (name, body)
    assert await database_rows(app) == before
