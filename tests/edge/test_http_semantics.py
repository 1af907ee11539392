"""HTTP semantics every route has, found by walking the app's routes rather than listing them:
HEAD on every GET route, an ETag and 304 on every single-resource GET, Location on every 201.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import TEST_PASSWORD, UserFactory
from tests.factories import API, TASKS

# Headers that differ between any two responses, whatever the method.
_PER_RESPONSE = {"x-request-id", "x-process-time", "date"}


def get_routes(app: FastAPI) -> Iterator[tuple[str, frozenset[str]]]:
    """(path template, methods) of every route the app serves, included routers expanded."""
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        for candidate in contexts() if callable(contexts) else (route,):
            path = getattr(candidate, "path_format", None)
            methods = getattr(candidate, "methods", None)
            if isinstance(path, str) and methods:
                yield path, frozenset(methods)


async def _world(client: httpx.AsyncClient, make_user: UserFactory) -> tuple[Any, dict[str, int]]:
    # An administrator owns it all, so every route (admin lists included) answers 200.
    owner = await make_user("owner", role="admin")
    member = await make_user("member")
    project = await client.post(f"{API}/projects", json={"name": "p"}, headers=owner.headers)
    project_id = project.json()["id"]
    added = await client.post(
        f"{API}/projects/{project_id}/members",
        json={"user_id": member.id, "role": "viewer"},
        headers=owner.headers,
    )
    assert added.status_code == 201
    task = await client.post(
        TASKS, json={"title": "t", "project_id": project_id}, headers=owner.headers
    )
    comment = await client.post(
        f"{TASKS}/{task.json()['id']}/comments", json={"body": "hi"}, headers=owner.headers
    )
    attachment = await client.post(
        f"{TASKS}/{task.json()['id']}/attachments",
        files={"file": ("a.txt", b"attached", "text/plain")},
        headers=owner.headers,
    )
    key = await client.post(
        f"{API}/api-keys",
        json={"name": "k", "scopes": ["tasks:read"], "current_password": TEST_PASSWORD},
        headers=owner.headers,
    )
    webhook = await client.post(
        f"{API}/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["task.created"]},
        headers=owner.headers,
    )
    ids = {
        "webhook_id": webhook.json()["id"],
        "project_id": project_id,
        "task_id": task.json()["id"],
        "comment_id": comment.json()["id"],
        "attachment_id": attachment.json()["id"],
        "key_id": key.json()["id"],
        "user_id": member.id,
    }
    return owner, ids


def _url(template: str, ids: dict[str, int]) -> str | None:
    names = re.findall(r"{(\w+)}", template)
    if any(name not in ids for name in names):
        return None
    return template.format(**{name: ids[name] for name in names})


async def test_head_answers_on_every_get_route_with_the_get_headers_and_no_body(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, ids = await _world(client, make_user)
    checked = []
    for template, methods in sorted(get_routes(app)):
        if "GET" not in methods or template.startswith("/docs/static"):
            continue
        assert "HEAD" in methods, template
        url = _url(template, ids)
        assert url is not None, f"no id to fill {template}: add it to the world"
        if template.endswith("/export"):
            url += "?format=csv"
        get = await client.get(url, headers=owner.headers)
        head = await client.head(url, headers=owner.headers)
        assert head.status_code == get.status_code == 200, (template, get.text)
        assert head.content == b"", template
        if template == "/metrics":  # counts change with every request: same headers, not values
            assert set(head.headers) == set(get.headers)
        else:
            assert {k: v for k, v in head.headers.items() if k not in _PER_RESPONSE} == {
                k: v for k, v in get.headers.items() if k not in _PER_RESPONSE
            }, template
        checked.append(template)
    # The walk really covered the API (a broken walk must not pass on nothing).
    assert f"{API}/tasks/{{task_id}}" in checked
    assert f"{API}/users/me" in checked
    assert "/health" in checked
    assert len(checked) >= 20, checked


async def test_every_single_resource_get_has_an_etag_and_honours_if_none_match(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, ids = await _world(client, make_user)
    single = [
        template
        for template, methods in get_routes(app)
        if "GET" in methods and template.startswith(API) and template.endswith("}")
    ] + [f"{API}/users/me"]
    assert len(single) >= 7, single
    for template in single:
        url = _url(template, ids)
        assert url is not None, template
        first = await client.get(url, headers=owner.headers)
        assert first.status_code == 200, (template, first.text)
        etag = first.headers["etag"]
        assert etag.startswith('"'), (template, etag)
        assert etag.endswith('"'), (template, etag)
        again = await client.get(url, headers={**owner.headers, "If-None-Match": etag})
        assert again.status_code == 304, template
        assert again.content == b""
        assert again.headers["etag"] == etag
        weak = await client.get(url, headers={**owner.headers, "If-None-Match": f"W/{etag}"})
        assert weak.status_code == 304, template  # weak comparison for If-None-Match
        other = await client.get(url, headers={**owner.headers, "If-None-Match": '"nope"'})
        assert other.status_code == 200, template


async def test_a_body_etag_changes_with_the_resource(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, ids = await _world(client, make_user)
    url = f"{TASKS}/{ids['task_id']}/comments/{ids['comment_id']}"
    before = (await client.get(url, headers=owner.headers)).headers["etag"]
    edited = await client.patch(url, json={"body": "edited"}, headers=owner.headers)
    assert edited.status_code == 200
    stale = await client.get(url, headers={**owner.headers, "If-None-Match": before})
    assert stale.status_code == 200
    assert stale.headers["etag"] != before


async def test_every_201_has_a_location_that_resolves(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, ids = await _world(client, make_user)
    newcomer = await make_user("newcomer")
    bodies: dict[str, dict[str, Any]] = {
        f"{API}/users": {
            "email": "new@example.com",
            "username": "new_user",
            "password": "Sup3r-secret",
        },
        f"{API}/api-keys": {
            "name": "k2",
            "scopes": ["tasks:read"],
            "current_password": TEST_PASSWORD,
        },
        f"{API}/projects": {"name": "p2"},
        f"{API}/projects/{{project_id}}/members": {"user_id": newcomer.id, "role": "viewer"},
        f"{API}/tasks": {"title": "t2"},
        f"{API}/tasks/{{task_id}}/comments": {"body": "again"},
        f"{API}/webhooks": {"url": "http://127.0.0.1:9/h2", "events": ["task.updated"]},
    }
    uploads = {f"{API}/tasks/{{task_id}}/attachments": {"file": ("b.txt", b"again", "text/plain")}}
    document = (await client.get("/openapi.json")).json()
    created = {
        path
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method == "post" and "201" in operation["responses"]
    }
    assert created == set(bodies) | set(uploads), "a new 201 route needs a body here"
    requests: list[tuple[str, dict[str, Any]]] = [
        *((template, {"json": body}) for template, body in bodies.items()),
        *((template, {"files": files}) for template, files in uploads.items()),
    ]
    for template, content in requests:
        url = _url(template, ids)
        assert url is not None
        response = await client.post(url, headers=owner.headers, **content)
        assert response.status_code == 201, (template, response.text)
        location = response.headers["location"]
        assert location.startswith(url + "/"), (template, location)
        fetched = await client.get(location, headers=owner.headers)
        assert fetched.status_code == 200, (template, location)
        header = document["paths"][template]["post"]["responses"]["201"]["headers"]["Location"]
        assert header["schema"] == {"type": "string"}
