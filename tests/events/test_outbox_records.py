"""Every change writes its event in the same transaction (API.md §7): type, project, actor,
the resource as the API shows it, ``changed`` on updates and the audience at that moment."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from taskmanager.events.retention import prune
from taskmanager.kit.db import utcnow
from taskmanager.kit.outbox import EventType, record, sequence
from taskmanager.models.events import Event
from tests.conftest import TEST_PASSWORD, TestUser, UserFactory
from tests.factories import API, TASKS, api_add_member, api_create_project, api_create_task


async def _events(app: FastAPI) -> list[Event]:
    async with app.state.database.snapshot() as session:
        return list((await session.scalars(select(Event).order_by(Event.id))).all())


def _summary(event: Event) -> tuple[str, int | None, list[str] | None, list[int]]:
    return event.type, event.project_id, event.changed, sorted(event.audience)


async def test_each_change_writes_one_event_with_its_representation(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, editor = await make_user(), await make_user()
    project = await api_create_project(client, owner, "Launch")
    pid = project["id"]
    await api_add_member(client, owner, pid, editor, "editor")
    task = await api_create_task(client, editor, project_id=pid, title="Draft")
    patched = await client.patch(
        f"{TASKS}/{task['id']}", json={"title": "Final", "priority": 4}, headers=editor.headers
    )
    assert patched.status_code == 200
    comments = f"{TASKS}/{task['id']}/comments"
    comment = (await client.post(comments, json={"body": "Hi"}, headers=editor.headers)).json()
    edited = await client.patch(
        f"{comments}/{comment['id']}", json={"body": "Hello"}, headers=editor.headers
    )
    assert edited.status_code == 200
    assert (await client.delete(f"{comments}/{comment['id']}", headers=owner.headers)).is_success
    renamed = await client.patch(
        f"{API}/projects/{pid}", json={"name": "Go"}, headers=owner.headers
    )
    assert renamed.status_code == 200
    promoted = await client.patch(
        f"{API}/projects/{pid}/members/{editor.id}", json={"role": "owner"}, headers=owner.headers
    )
    assert promoted.status_code == 200
    assert (await client.delete(f"{TASKS}/{task['id']}", headers=owner.headers)).is_success
    removed = await client.delete(
        f"{API}/projects/{pid}/members/{editor.id}", headers=owner.headers
    )
    assert removed.status_code == 204
    assert (await client.delete(f"{API}/projects/{pid}", headers=owner.headers)).is_success

    both, alone = sorted([owner.id, editor.id]), [owner.id]
    events = await _events(app)
    assert [_summary(e) for e in events] == [
        ("member.added", pid, None, both),
        ("task.created", pid, None, both),
        ("task.updated", pid, ["title", "priority"], both),
        ("comment.created", pid, None, both),
        ("comment.updated", pid, ["body"], both),
        ("comment.deleted", pid, None, both),
        ("project.updated", pid, ["name"], both),
        ("member.updated", pid, ["role"], both),
        ("task.deleted", pid, None, both),
        ("member.removed", pid, None, both),  # the removed member hears of it too
        ("project.deleted", pid, None, alone),
    ]
    actors = [e.actor_id for e in events]
    assert actors == [owner.id] + [editor.id] * 4 + [owner.id] * 6
    by_type = {e.type: e.data for e in events}
    assert by_type["task.updated"] == patched.json()
    assert by_type["task.created"]["title"] == "Draft"
    assert by_type["task.deleted"]["id"] == task["id"]
    assert by_type["comment.updated"] == edited.json()
    assert by_type["project.updated"] == {k: v for k, v in renamed.json().items() if k != "role"}
    assert by_type["member.added"] == {
        "user_id": editor.id,
        "username": editor.username,
        "role": "editor",
    }
    assert by_type["member.updated"] == promoted.json()
    assert by_type["member.removed"]["user_id"] == editor.id
    assert by_type["project.deleted"] == {"id": pid}


async def test_a_refused_change_writes_no_event(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, outsider = await make_user(), await make_user()
    task = await api_create_task(client, owner)
    before = len(await _events(app))
    stale = await client.patch(
        f"{TASKS}/{task['id']}",
        json={"title": "x"},
        headers={**owner.headers, "If-Match": '"1-99"'},
    )
    assert stale.status_code == 412
    hidden = await client.patch(
        f"{TASKS}/{task['id']}", json={"title": "x"}, headers=outsider.headers
    )
    assert hidden.status_code == 404
    assert len(await _events(app)) == before


async def test_a_moved_task_is_announced_to_both_projects(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, left, right = await make_user(), await make_user(), await make_user()
    source = (await api_create_project(client, owner, "Source"))["id"]
    target = (await api_create_project(client, owner, "Target"))["id"]
    await api_add_member(client, owner, source, left, "viewer")
    await api_add_member(client, owner, target, right, "viewer")
    task = await api_create_task(client, owner, project_id=source)
    moved = await client.patch(
        f"{TASKS}/{task['id']}", json={"project_id": target}, headers=owner.headers
    )
    assert moved.status_code == 200
    last = (await _events(app))[-1]
    assert (last.type, last.project_id, last.changed) == ("task.updated", target, ["project_id"])
    assert sorted(last.audience) == sorted([owner.id, left.id, right.id])


async def test_changed_names_the_fields_whose_values_the_update_changed(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    # The update returns the row as it was beside the new one (tasks.repository._prior):
    # a field sent with the value it already had is not changed, and completed_at follows
    # status only when the task becomes or stops being completed.
    owner = await make_user()
    task = await api_create_task(client, owner, title="Same")
    url = f"{TASKS}/{task['id']}"
    steps = [
        ({"title": "Same", "priority": 5}, ["priority"]),
        ({"status": "completed"}, ["status", "completed_at"]),
        ({"status": "completed", "title": "Other"}, ["title"]),
        ({"title": "Other"}, None),  # nothing changed: no event
        ({"status": "pending", "tags": ["x"]}, ["status", "tags", "completed_at"]),
    ]
    for body, changed in steps:
        count = len(await _events(app))
        response = await client.patch(url, json=body, headers=owner.headers)
        assert response.status_code == 200, response.text
        events = await _events(app)
        if changed is None:
            assert len(events) == count, body
            continue
        last = events[-1]
        assert (last.type, last.changed) == ("task.updated", changed), body
        assert last.data == response.json()


async def _delete_account(client: httpx.AsyncClient, user: TestUser) -> None:
    deleted = await client.request(
        "DELETE", f"{API}/users/me", json={"current_password": TEST_PASSWORD}, headers=user.headers
    )
    assert deleted.status_code == 204, deleted.text


async def test_deleting_an_account_removes_it_from_shared_projects_and_deletes_its_own(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, leaver = await make_user(), await make_user()
    shared = (await api_create_project(client, owner, "Shared"))["id"]
    await api_add_member(client, owner, shared, leaver, "editor")
    await _delete_account(client, leaver)
    tail = [_summary(e) for e in (await _events(app))[-2:]]
    assert tail == [
        ("project.deleted", leaver.inbox_id, None, [leaver.id]),
        ("member.removed", shared, None, sorted([owner.id, leaver.id])),
    ]


async def test_what_a_deleted_account_leaves_behind_changes_visibly(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """Its tasks and comments in shared projects lose it with a new version (a cached copy
    is not "not modified") and an event naming the field, like any other change."""
    owner, leaver = await make_user(), await make_user()
    shared = (await api_create_project(client, owner, "Shared"))["id"]
    await api_add_member(client, owner, shared, leaver, "editor")
    made = await api_create_task(client, leaver, project_id=shared, title="Theirs")
    assigned = await api_create_task(
        client, owner, project_id=shared, title="Given", assignee_id=leaver.id
    )
    untouched = await api_create_task(client, owner, project_id=shared, title="Other")
    comments = f"{TASKS}/{made['id']}/comments"
    comment = (await client.post(comments, json={"body": "Hi"}, headers=leaver.headers)).json()
    reads = {
        url: await client.get(url, headers=owner.headers)
        for url in (
            f"{TASKS}/{made['id']}",
            f"{TASKS}/{assigned['id']}",
            f"{TASKS}/{untouched['id']}",
            f"{comments}/{comment['id']}",
        )
    }
    await _delete_account(client, leaver)

    changed_urls = list(reads)[:2] + list(reads)[3:]
    for url, before in reads.items():
        again = await client.get(
            url, headers={**owner.headers, "If-None-Match": before.headers["etag"]}
        )
        assert again.status_code == (200 if url in changed_urls else 304), url
    assert (await client.get(f"{TASKS}/{made['id']}", headers=owner.headers)).json()[
        "created_by"
    ] is None
    assert (await client.get(f"{TASKS}/{assigned['id']}", headers=owner.headers)).json()[
        "assignee_id"
    ] is None
    tail = [(e.type, e.data["id"], e.changed) for e in (await _events(app))[-3:]]
    assert sorted(tail) == sorted(
        [
            ("task.updated", made["id"], ["created_by"]),
            ("task.updated", assigned["id"], ["assignee_id"]),
            ("comment.updated", comment["id"], ["author_id"]),
        ]
    )


async def test_pruning_deletes_published_events_past_retention(
    app: FastAPI, make_user: UserFactory
) -> None:
    user = await make_user()
    database = app.state.database
    old = utcnow() - timedelta(days=app.state.settings.event_retention_days, minutes=1)
    data: dict[str, Any] = {"id": 1}
    async with database.side_transaction() as session:
        for occurred_at in (old, utcnow()):
            await record(
                session,
                type=EventType.PROJECT_DELETED,
                project_id=user.inbox_id,
                actor_id=user.id,
                data=data,
                occurred_at=occurred_at,
            )
    async with database.side_transaction() as session:
        await sequence(session)  # or the running dispatcher did already
    assert await prune(database, app.state.settings) == 1
    remaining = await _events(app)
    assert [e.occurred_at > old for e in remaining] == [True]


async def test_an_update_that_changes_nothing_writes_no_event(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, editor = await make_user(), await make_user()
    project = await api_create_project(client, owner, "Launch")
    pid = project["id"]
    await api_add_member(client, owner, pid, editor, "editor")
    task = await api_create_task(client, owner, project_id=pid, title="Draft", priority=3)
    comments = f"{TASKS}/{task['id']}/comments"
    comment = (await client.post(comments, json={"body": "Hi"}, headers=owner.headers)).json()
    before = [_summary(e) for e in await _events(app)]

    # Each sends the values the resource already has (API.md §7: ``changed`` names the
    # fields whose values changed; with none, there is no change to publish).
    same = [
        ("PATCH", f"{TASKS}/{task['id']}", {"priority": 3, "project_id": pid}),
        ("PATCH", f"{comments}/{comment['id']}", {"body": "Hi"}),
        ("PATCH", f"{API}/projects/{pid}", {"name": "Launch"}),
        ("PATCH", f"{API}/projects/{pid}/members/{editor.id}", {"role": "editor"}),
    ]
    for method, url, body in same:
        response = await client.request(method, url, json=body, headers=owner.headers)
        assert response.status_code == 200, (url, response.text)
    assert [_summary(e) for e in await _events(app)] == before
