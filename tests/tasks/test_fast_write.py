"""The task writes on the driver (``tasks.fast_write``: asyncpg, or aiosqlite on an SQLite
file) and through the request ``Session`` are the same write: the same task, the same ETag,
the same event (type, project, actor, data, ``changed``, audience).

Each scenario runs twice on each backend, once plainly (the driver) and once on the
Session path, and the two runs must agree field for field. The Session run sends each
create an ``Idempotency-Key`` (its record must commit in the request's transaction) and
every request an inert ``X-Taskmanager-Fault`` (a request armed for fault injection, on an
app that allows it, leaves the driver: it has no kill points).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select

from taskmanager.models.events import Event
from tests.attachments.support import stored_files
from tests.conftest import AppFactory, TestUser, UserFactory
from tests.factories import API, TASKS, api_add_member, api_create_project

_VOLATILE = {"id", "created_at", "updated_at", "completed_at"}


async def _events_after(app: FastAPI, last_id: int) -> list[Event]:
    async with app.state.database.snapshot() as session:
        query = select(Event).where(Event.id > last_id).order_by(Event.id)
        return list((await session.scalars(query)).all())


async def _last_event_id(app: FastAPI) -> int:
    events = await _events_after(app, 0)
    return events[-1].id if events else 0


def _stable(task: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in task.items() if k not in _VOLATILE}


@contextmanager
def session_task_writes(app: FastAPI) -> Iterator[list[str]]:
    """The task writes sent through SQLAlchemy's cursor (a ``Session``) inside the block;
    the driver path sends its statements straight to asyncpg or aiosqlite."""
    written: list[str] = []

    def on_cursor(*args: Any) -> None:
        sql = " ".join(str(args[2]).split())
        if sql.startswith(("INSERT INTO tasks", "UPDATE tasks", "WITH prior")):
            written.append(sql)

    engine = app.state.database.write_engine.sync_engine
    sqlalchemy_event.listen(engine, "before_cursor_execute", on_cursor)
    try:
        yield written
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", on_cursor)


async def _scenario(
    app: FastAPI, client: httpx.AsyncClient, owner: TestUser, projects: tuple[int, int], keyed: bool
) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Create (in the Inbox and in a project), PATCH with a move, PUT, a PATCH that changes
    nothing, and DELETE (the task has an attachment, whose file must go with it); the
    responses and the task events they wrote."""
    first, second = projects

    def headers() -> dict[str, str]:
        if not keyed:
            return owner.headers
        return {
            **owner.headers,
            "Idempotency-Key": str(uuid.uuid4()),
            "X-Taskmanager-Fault": "none",
        }

    before = await _last_event_id(app)
    responses: list[httpx.Response] = []
    inbox = await client.post(TASKS, json={"title": "Inbox item"}, headers=headers())
    responses.append(inbox)
    body = {"title": "  Draft  ", "project_id": first, "tags": ["b", "a"], "priority": 3}
    created = await client.post(TASKS, json=body, headers=headers())
    responses.append(created)
    url = f"{TASKS}/{created.json()['id']}"
    moved = await client.patch(
        url,
        json={"project_id": second, "status": "completed", "description": "Now"},
        headers={**headers(), "If-Match": created.headers["etag"]},
    )
    responses.append(moved)
    replaced = await client.put(
        url, json={"title": "Final", "project_id": second}, headers=headers()
    )
    responses.append(replaced)
    unchanged = await client.patch(url, json={"title": "Final"}, headers=headers())
    responses.append(unchanged)
    assert [r.status_code for r in responses] == [201, 201, 200, 200, 200]
    # Nothing changed: the same task, updated_at and version included, so the same ETag
    # (API.md §6: the version goes up on every change), and no event.
    assert unchanged.json() == replaced.json()
    assert unchanged.headers["etag"] == replaced.headers["etag"]
    for response in responses:
        task = response.json()
        assert response.headers["etag"] == f'"{task["id"]}-{task["version"]}"'
    attached = await client.post(
        f"{url}/attachments", files={"file": ("a.txt", b"hello", "text/plain")}, headers=headers()
    )
    assert attached.status_code == 201, attached.text
    files = stored_files(app)
    deleted = await client.delete(url, headers={**headers(), "If-Match": unchanged.headers["etag"]})
    assert deleted.status_code == 204, deleted.text
    assert len(stored_files(app)) == len(files) - 1  # the attachment's file went with it
    assert (await client.get(url, headers=owner.headers)).status_code == 404
    events = [e for e in await _events_after(app, before) if e.type.startswith("task.")]
    tasks = [r.json() for r in responses]
    summary = []
    # The delete's event holds the task as it was last shown.
    shown = [tasks[0], tasks[1], tasks[2], tasks[3], tasks[4]]
    for event, task in zip(events, shown, strict=True):
        # Each event's data is the task exactly as that response showed it.
        assert event.data == task, (event.type, event.data, task)
        assert event.actor_id == owner.id
        assert event.occurred_at is not None
        summary.append(
            (
                event.type,
                event.project_id == task["project_id"],
                event.changed,
                sorted(event.audience),
            )
        )
    return [_stable(t) for t in tasks], summary


async def test_driver_and_session_paths_write_the_same_task_and_event(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    # No background loops: one cancelled mid-transaction when this app shuts down can leave
    # its dropped SQLite connection holding the write lock until the garbage collector
    # frees it, and the next test's table cleanup waiting for it (README § Testing).
    app, client = await make_app(fault_injection=True, background_in_serve=False)
    owner, first_member, second_member = await make_user(), await make_user(), await make_user()
    first = (await api_create_project(client, owner, "First"))["id"]
    second = (await api_create_project(client, owner, "Second"))["id"]
    await api_add_member(client, owner, first, first_member, "viewer")
    await api_add_member(client, owner, second, second_member, "viewer")

    with session_task_writes(app) as on_session:
        plain = await _scenario(app, client, owner, (first, second), keyed=False)
    assert on_session == []  # every write of the plain run went on the driver
    with session_task_writes(app) as on_session:
        keyed = await _scenario(app, client, owner, (first, second), keyed=True)
    assert len(on_session) == 6  # two creates, three updates, a delete: all on the Session

    assert plain == keyed
    tasks, events = plain
    assert [t["version"] for t in tasks] == [1, 1, 2, 3, 3]
    assert tasks[1]["title"] == "Draft"
    assert tasks[1]["tags"] == ["b", "a"]
    assert tasks[2]["project_id"] == second
    assert tasks[2]["status"] == "completed"
    everyone = sorted([owner.id, first_member.id, second_member.id])
    assert events == [
        ("task.created", True, None, [owner.id]),
        ("task.created", True, None, sorted([owner.id, first_member.id])),
        # A move: the members of the project it left hear of it too.
        ("task.updated", True, ["project_id", "description", "status", "completed_at"], everyone),
        (
            "task.updated",
            True,
            # PUT: what it left out went back to the defaults.
            ["title", "description", "status", "priority", "tags", "completed_at"],
            sorted([owner.id, second_member.id]),
        ),
        ("task.deleted", True, None, sorted([owner.id, second_member.id])),
    ]


async def test_refusals_on_the_driver_path_explain_themselves(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, viewer, stranger = await make_user(), await make_user(), await make_user()
    project = (await api_create_project(client, owner, "Mine"))["id"]
    await api_add_member(client, owner, project, viewer, "viewer")
    created = await client.post(
        TASKS, json={"title": "T", "project_id": project}, headers=owner.headers
    )
    url = f"{TASKS}/{created.json()['id']}"
    cases = [
        (
            client.post(TASKS, json={"title": "T", "project_id": project}, headers=viewer.headers),
            403,
        ),
        (
            client.post(
                TASKS, json={"title": "T", "project_id": project}, headers=stranger.headers
            ),
            404,
        ),
        (client.post(TASKS, json={"title": "T", "project_id": 10**9}, headers=owner.headers), 404),
        (
            client.post(
                TASKS,
                json={"title": "T", "project_id": project, "assignee_id": stranger.id},
                headers=owner.headers,
            ),
            422,
        ),
        (client.patch(url, json={"title": "x"}, headers=viewer.headers), 403),
        (client.patch(url, json={"title": "x"}, headers=stranger.headers), 404),
        (
            client.patch(url, json={"title": "x"}, headers={**owner.headers, "If-Match": '"1-9"'}),
            412,
        ),
        (
            client.put(url, json={"title": "x", "assignee_id": stranger.id}, headers=owner.headers),
            422,
        ),
        (client.patch(f"{TASKS}/{10**9}", json={"title": "x"}, headers=owner.headers), 404),
        (client.delete(url, headers=viewer.headers), 403),
        (client.delete(url, headers=stranger.headers), 404),
        (client.delete(url, headers={**owner.headers, "If-Match": '"1-9"'}), 412),
        (client.delete(f"{TASKS}/{10**9}", headers=owner.headers), 404),
    ]
    for request, status in cases:
        response = await request
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
    after = await client.get(url, headers=owner.headers)
    assert after.json()["version"] == 1
    listed = await client.get(f"{API}/projects/{project}/tasks", headers=owner.headers)
    assert listed.json()["total"] == 1
