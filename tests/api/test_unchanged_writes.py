"""A write of the values a resource already has is no change (API.md §6: the version goes
up on every change): the same representation, ``updated_at`` and ETag, so a client's cached
copy and its ``If-Match`` stay valid. Tasks: ``tests/tasks/test_tasks.py``; webhooks:
``tests/webhooks/test_webhooks_api.py``."""

from __future__ import annotations

import httpx

from tests.conftest import UserFactory
from tests.factories import API, api_create_project, api_create_task


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
