"""A write of the values a resource already has is no change (API.md §6: the version goes
up on every change): the same representation, ``updated_at`` and ETag, so a client's cached
copy and its ``If-Match`` stay valid. Tasks: ``tests/tasks/test_tasks.py`` (and the
step-by-step path's empty update, below); webhooks:
``tests/webhooks/test_webhooks_api.py``."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from fastapi import FastAPI

from taskmanager.kit.db import Database
from taskmanager.tasks import repository as tasks_repository
from tests.conftest import UserFactory
from tests.factories import API, TEST_PASSWORD, api_create_project, api_create_task, api_get_task


async def _unchanged_then_changed(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, same: object, other: object
) -> None:
    first = await client.get(path, headers=headers)
    assert first.status_code == 200, first.text
    for _ in range(2):
        again = await client.patch(
            path, json=same, headers={**headers, "If-Match": first.headers["etag"]}
        )
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        assert again.headers["etag"] == first.headers["etag"]
    changed = await client.patch(
        path, json=other, headers={**headers, "If-Match": first.headers["etag"]}
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] != first.headers["etag"]
    assert changed.json()["updated_at"] > first.json()["updated_at"]


async def test_a_project_patch_that_changes_nothing_keeps_its_etag(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner = await make_user()
    project = await api_create_project(client, owner, "Same")
    await _unchanged_then_changed(
        client,
        owner.headers,
        f"{API}/projects/{project['id']}",
        {"name": "Same", "description": None},
        {"name": "Other"},
    )


async def test_a_comment_patch_that_changes_nothing_keeps_its_etag(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    author = await make_user()
    task = await api_create_task(client, author)
    comments = f"{API}/tasks/{task['id']}/comments"
    created = await client.post(comments, json={"body": "same"}, headers=author.headers)
    assert created.status_code == 201, created.text
    await _unchanged_then_changed(
        client,
        author.headers,
        f"{comments}/{created.json()['id']}",
        {"body": "same"},
        {"body": "other"},
    )


async def test_a_profile_patch_that_changes_nothing_keeps_its_etag(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user("ivy")
    me = f"{API}/users/me"
    first = await client.get(me, headers=user.headers)
    for _ in range(2):
        again = await client.patch(
            me,
            json={"username": "ivy", "current_password": TEST_PASSWORD},
            headers={**user.headers, "If-Match": first.headers["etag"]},
        )
        assert again.status_code == 200, again.text
        # (GET /users/me adds the Inbox's id; the PATCH answer is the profile alone.)
        assert again.json() == {k: v for k, v in first.json().items() if k in again.json()}
        assert again.headers["etag"] == first.headers["etag"]
    changed = await client.patch(
        me,
        json={"username": "ivy_two", "current_password": TEST_PASSWORD},
        headers={**user.headers, "If-Match": first.headers["etag"]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] != first.headers["etag"]


async def test_an_update_that_only_rechecks_its_conditions_is_no_change(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    # The step-by-step update path (``repository.update_task``) with no values: reached
    # when a PATCH names only the project the task is in now (e.g. another writer moved it
    # there meanwhile). It must be a valid statement, and no change.
    owner = await make_user()
    task = await api_create_task(client, owner)
    database: Database = app.state.database
    async with database.side_transaction() as session:
        change = await tasks_repository.update_task(
            session,
            task["id"],
            project_id=task["project_id"],
            expected_versions=None,
            values={},
            now=datetime.now(UTC),
        )
    assert change is not None
    assert change.after == change.before
    assert (await api_get_task(client, owner, task["id"])) == task
