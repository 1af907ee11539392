"""Managing webhooks over HTTP (API.md §7): create with a secret shown once, list, get,
update, delete, rotate, ping, the delivery log; targets refused by the SSRF rules."""

from __future__ import annotations

import base64

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from taskmanager.models.webhooks import Webhook
from tests.conftest import AppFactory, UserFactory, problem
from tests.factories import API, create_api_key, create_project
from tests.webhooks.support import HOOKS, create_webhook

URL = "http://127.0.0.1:9/hook"


async def test_create_shows_the_secret_once_and_stores_it_encrypted(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory
) -> None:
    user = await make_user()
    project = await create_project(app, user)
    response = await client.post(
        HOOKS,
        json={
            "url": URL,
            "events": ["task.created", "task.created", "comment.created"],
            "project_id": project,
            "description": "  CI sync ",
        },
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert response.headers["location"] == f"{HOOKS}/{body['id']}"
    assert body["events"] == ["task.created", "comment.created"]
    assert body["description"] == "CI sync"
    assert body["project_id"] == project
    assert body["active"] is True
    assert body["disabled_reason"] is None
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24

    shown = await client.get(response.headers["location"], headers=user.headers)
    assert shown.status_code == 200
    assert "secret" not in shown.json()
    listed = await client.get(HOOKS, headers=user.headers)
    assert listed.headers["x-total-count"] == "1"
    assert [w["id"] for w in listed.json()["items"]] == [body["id"]]
    assert all("secret" not in w for w in listed.json()["items"])

    async with app.state.database.snapshot() as session:
        row = (await session.scalars(select(Webhook))).one()
    stored = " ".join(str(v) for v in row.__dict__.values())
    assert secret not in stored
    assert secret.removeprefix("whsec_") not in stored


async def test_a_keyed_create_is_never_replayed_with_the_secret(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    headers = {**user.headers, "Idempotency-Key": "create-hook-1"}
    body = {"url": URL, "events": ["task.created"]}
    first = await client.post(HOOKS, json=body, headers=headers)
    second = await client.post(HOOKS, json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in second.headers
    assert first.json()["secret"] != second.json()["secret"]


async def test_only_the_owner_sees_or_manages_a_webhook(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory
) -> None:
    owner = await make_user()
    other = await make_user()
    admin = await make_user(role="admin")
    hook = await create_webhook(client, owner, URL)
    path = f"{HOOKS}/{hook['id']}"
    for caller in (other, admin):
        for method, url, json in (
            ("GET", path, None),
            ("PATCH", path, {"active": False}),
            ("DELETE", path, None),
            ("POST", path + "/rotate-secret", None),
            ("POST", path + "/ping", None),
            ("GET", path + "/deliveries", None),
        ):
            response = await client.request(method, url, json=json, headers=caller.headers)
            problem(response, 404, "RESOURCE_NOT_FOUND")
        listed = await client.get(HOOKS, headers=caller.headers)
        assert listed.json()["items"] == []
    problem(await client.get(HOOKS), 401, "NOT_AUTHENTICATED")
    key = await create_api_key(app, owner, scopes=["projects:read", "projects:write"])
    problem(await client.get(HOOKS, headers=key), 403, "FORBIDDEN")


async def test_project_id_must_be_a_project_the_owner_can_see(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory
) -> None:
    owner = await make_user()
    outsider = await make_user()
    project = await create_project(app, owner)
    response = await client.post(
        HOOKS,
        json={"url": URL, "events": ["task.created"], "project_id": project},
        headers=outsider.headers,
    )
    problem(response, 404, "RESOURCE_NOT_FOUND")
    assert (await client.get(HOOKS, headers=outsider.headers)).json()["total"] == 0


async def test_update_and_delete(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user()
    hook = await create_webhook(client, user, URL, description="first")
    path = f"{HOOKS}/{hook['id']}"
    problem(await client.patch(path, json={}, headers=user.headers), 400, "MALFORMED_REQUEST")
    problem(
        await client.patch(path, json={"events": None}, headers=user.headers),
        422,
        "VALIDATION_ERROR",
    )
    problem(
        await client.patch(path, json={"url": "file:///etc/passwd"}, headers=user.headers),
        422,
        "VALIDATION_ERROR",
    )
    response = await client.patch(
        path,
        json={"events": ["member.added"], "description": None, "active": False},
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["events"] == ["member.added"]
    assert body["description"] is None
    assert body["active"] is False
    assert body["url"] == URL
    problem(await client.post(path + "/ping", headers=user.headers), 409, "CONFLICT")
    response = await client.patch(path, json={"url": URL + "2"}, headers=user.headers)
    assert response.json()["url"] == URL + "2"
    assert (await client.delete(path, headers=user.headers)).status_code == 204
    problem(await client.get(path, headers=user.headers), 404, "RESOURCE_NOT_FOUND")


async def test_rotate_secret_shows_a_new_secret_once(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    hook = await create_webhook(client, user, URL)
    response = await client.post(f"{HOOKS}/{hook['id']}/rotate-secret", headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["secret"].startswith("whsec_")
    assert response.json()["secret"] != hook["secret"]


async def test_ping_and_the_delivery_log_pages_newest_first(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    hook = await create_webhook(client, user, URL)
    path = f"{HOOKS}/{hook['id']}"
    ids = []
    event_ids = {}
    for _ in range(3):
        response = await client.post(path + "/ping", headers=user.headers)
        assert response.status_code == 202, response.text
        delivery = response.json()
        assert delivery["status"] == "pending"
        assert delivery["event_type"] == "webhook.ping"
        assert delivery["attempt"] == 1
        assert delivery["event_id"].startswith("ping_")
        ids.append(delivery["id"])
        event_ids[delivery["id"]] = delivery["event_id"]
    first = await client.get(path + "/deliveries", params={"limit": 2}, headers=user.headers)
    assert first.status_code == 200
    assert first.headers["x-total-count"] == "3"
    assert [d["id"] for d in first.json()["items"]] == ids[::-1][:2]
    cursor = first.json()["next_cursor"]
    assert 'rel="next"' in first.headers["link"]
    rest = await client.get(path + "/deliveries", params={"cursor": cursor}, headers=user.headers)
    assert [d["id"] for d in rest.json()["items"]] == [ids[0]]
    assert rest.json()["next_cursor"] is None

    redelivered = await client.post(f"{path}/deliveries/{ids[0]}/redeliver", headers=user.headers)
    assert redelivered.status_code == 202
    assert redelivered.json()["event_id"] == event_ids[ids[0]]
    assert redelivered.json()["status"] == "pending"
    problem(
        await client.post(f"{path}/deliveries/999999/redeliver", headers=user.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_hi",
        "http://user:pass@example.com/hook",
        "http:///hook",
        "http://0x7f000001/hook",
        "http://2130706433/hook",
        "http://017700000001/hook",
        "http://127.1/hook",
        "http://0177.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://100.100.100.200/hook",
        "http://[fd00:ec2::254]/hook",
    ],
)
async def test_targets_refused_even_where_private_targets_are_allowed(
    client: httpx.AsyncClient, make_user: UserFactory, url: str
) -> None:
    user = await make_user()
    response = await client.post(
        HOOKS, json={"url": url, "events": ["task.created"]}, headers=user.headers
    )
    problem(response, 422, "VALIDATION_ERROR")
    assert (await client.get(HOOKS, headers=user.headers)).json()["total"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost:8000/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:7f00:1]/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://[fd12:3456::1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://240.0.0.1/hook",
        "http://[2002:7f00:1::]/hook",
    ],
)
async def test_private_targets_refused_unless_allowed(
    make_app: AppFactory, make_user: UserFactory, url: str
) -> None:
    _strict_app, strict = await make_app(webhook_allow_private_targets=False)
    user = await make_user()
    response = await strict.post(
        HOOKS, json={"url": url, "events": ["task.created"]}, headers=user.headers
    )
    body = problem(response, 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["body", "url"]
    assert body["errors"][0]["type"] == "invalid_webhook_target"


async def test_public_targets_and_names_not_resolvable_yet_are_accepted(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    _, strict = await make_app(webhook_allow_private_targets=False)
    user = await make_user()
    for url in ("https://93.184.215.14/hook", "https://hooks.invalid/hook"):
        response = await strict.post(
            HOOKS, json={"url": url, "events": ["task.created"]}, headers=user.headers
        )
        assert response.status_code == 201, response.text


async def test_the_openapi_document_lists_every_event_type(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    webhooks = schema["webhooks"]
    expected = {
        "task.created", "task.updated", "task.deleted",
        "comment.created", "comment.updated", "comment.deleted",
        "attachment.created", "attachment.deleted",
        "project.updated", "project.deleted",
        "member.added", "member.updated", "member.removed",
        "webhook.ping",
    }  # fmt: skip
    assert set(webhooks) == expected
    for name, item in webhooks.items():
        operation = item["post"]
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}, name
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        payload = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
        assert payload["properties"]["type"]["const"] == name
        assert {"id", "type", "project_id", "actor_id", "occurred_at", "data"} <= set(
            payload["required"]
        )
    assert f"{API}/webhooks" in schema["paths"]


async def test_an_update_that_changes_nothing_keeps_the_version_and_etag(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """API.md §6: the version goes up on every change, and only then."""
    user = await make_user()
    hook = await create_webhook(client, user, URL, description="same")
    path = f"{HOOKS}/{hook['id']}"
    first = await client.get(path, headers=user.headers)
    same = {"url": URL, "events": hook["events"], "description": "same", "active": True}
    again = await client.patch(
        path, json=same, headers={**user.headers, "If-Match": first.headers["etag"]}
    )
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["etag"] == first.headers["etag"]
    changed = await client.patch(path, json={"description": "other"}, headers=user.headers)
    assert changed.headers["etag"] != first.headers["etag"]
    assert changed.json()["updated_at"] > first.json()["updated_at"]
