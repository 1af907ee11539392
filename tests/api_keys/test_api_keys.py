"""API keys: minting, scopes, listing, revocation and expiry, through HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from taskmanager.kit.db import utcnow
from taskmanager.kit.security import digest
from taskmanager.models.api_keys import ApiKey
from tests.conftest import TEST_PASSWORD, UserFactory, problem
from tests.factories import api_create_key, db_execute

KEYS = "/api/v1/api-keys"
ME = "/api/v1/users/me"
KEY_FIELDS = {"id", "name", "prefix", "scopes", "expires_at", "last_used_at", "created_at"}


def _future(days: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def _stored_keys(app: FastAPI) -> list[ApiKey]:
    async with app.state.database.snapshot() as session:
        return list((await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars())


async def test_create_key_shows_the_secret_once_and_stores_a_digest(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("alice")
    expires = _future()
    response = await client.post(
        KEYS,
        json={
            "name": "  ci bot ",
            "scopes": ["tasks:read", "tasks:read", "projects:read"],
            "expires_at": expires,
            "current_password": TEST_PASSWORD,
        },
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == KEY_FIELDS | {"key"}
    key = body["key"]
    assert key.startswith("tm_")
    assert len(key) >= 3 + 43  # 32 random bytes, base64url
    assert body["prefix"] == key[:10]
    assert body["name"] == "ci bot"
    assert body["scopes"] == ["tasks:read", "projects:read"]
    assert datetime.fromisoformat(body["expires_at"]) == datetime.fromisoformat(expires)
    assert body["last_used_at"] is None
    assert response.headers["cache-control"] == "no-store"

    [stored] = await _stored_keys(app)
    assert stored.key_hash == digest(key)
    assert key not in (stored.key_hash, stored.prefix)

    listed = await client.get(KEYS, headers=user.headers)
    assert listed.status_code == 200
    [item] = listed.json()
    assert set(item) == KEY_FIELDS
    assert key not in listed.text
    assert stored.key_hash not in listed.text
    assert item["prefix"] == body["prefix"]


async def test_a_key_authenticates_and_records_last_use(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user("alice")
    key = await api_create_key(client, user.headers, ["tasks:read"])
    response = await client.get(ME, headers={"X-API-Key": key["key"]})
    assert response.status_code == 200
    assert response.json()["id"] == user.id
    [item] = (await client.get(KEYS, headers=user.headers)).json()
    assert item["last_used_at"] is not None


async def test_keys_are_accepted_only_in_the_x_api_key_header(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user("alice")
    key = (await api_create_key(client, user.headers, ["tasks:read"]))["key"]
    problem(
        await client.get(ME, headers={"Authorization": f"Bearer {key}"}),
        401,
        "INVALID_CREDENTIALS",
    )
    # A key in the URL is refused outright (it would end up in logs and browser history).
    in_query = problem(await client.get(ME, params={"api_key": key}), 422, "VALIDATION_ERROR")
    assert in_query["errors"][0]["loc"] == ["query", "api_key"]
    assert "X-API-Key" in in_query["errors"][0]["msg"]
    problem(await client.get(ME, headers={"X-API-Key": key + "x"}), 401, "INVALID_CREDENTIALS")
    problem(await client.get(ME, headers={"X-API-Key": "tm_nope"}), 401, "INVALID_CREDENTIALS")


async def test_scopes_are_enforced(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user("alice")
    reader = {"X-API-Key": (await api_create_key(client, user.headers, ["projects:read"]))["key"]}
    writer = {"X-API-Key": (await api_create_key(client, user.headers, ["projects:write"]))["key"]}
    tasks_only = {"X-API-Key": (await api_create_key(client, user.headers, ["tasks:read"]))["key"]}

    assert (await client.get("/api/v1/projects", headers=reader)).status_code == 200
    problem(
        await client.post("/api/v1/projects", json={"name": "x"}, headers=reader), 403, "FORBIDDEN"
    )
    problem(await client.get("/api/v1/projects", headers=tasks_only), 403, "FORBIDDEN")
    # A write through a key whose last use is not yet recorded (exercises the SQLite writer).
    created = await client.post("/api/v1/projects", json={"name": "Scripts"}, headers=writer)
    assert created.status_code == 201, created.text
    names = [
        p["name"]
        for p in (await client.get("/api/v1/projects", headers=user.headers)).json()["items"]
    ]
    assert "Scripts" in names


async def test_admin_scope_is_refused_to_non_admins(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("alice")
    response = await client.post(
        KEYS,
        json={
            "name": "sneaky",
            "scopes": ["tasks:read", "admin"],
            "current_password": TEST_PASSWORD,
        },
        headers=user.headers,
    )
    problem(response, 403, "FORBIDDEN")
    assert await _stored_keys(app) == []
    admin = await make_user("root", role="admin")
    key = await api_create_key(client, admin.headers, ["admin"])
    assert key["scopes"] == ["admin"]


async def test_a_demoted_admins_key_loses_admin_rights(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    admin = await make_user("root", role="admin")
    other = await make_user("boss", role="admin")
    key = {"X-API-Key": (await api_create_key(client, admin.headers, ["admin"]))["key"]}
    assert (await client.get("/api/v1/users", headers=key)).status_code == 200
    demoted = await client.patch(
        f"/api/v1/users/{admin.id}", json={"role": "user"}, headers=other.headers
    )
    assert demoted.status_code == 200
    problem(await client.get("/api/v1/users", headers=key), 403, "FORBIDDEN")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "k", "scopes": []},
        {"name": "k"},
        {"scopes": ["tasks:read"]},
        {"name": "", "scopes": ["tasks:read"]},
        {"name": "   ", "scopes": ["tasks:read"]},
        {"name": "k" * 101, "scopes": ["tasks:read"]},
        {"name": "k", "scopes": ["tasks:delete"]},
        {"name": "k", "scopes": "tasks:read"},
        {"name": "k", "scopes": ["tasks:read"], "expires_at": "2020-01-01T00:00:00Z"},
        {"name": "k", "scopes": ["tasks:read"], "expires_at": "2999-01-01T00:00:00"},
        {"name": "k", "scopes": ["tasks:read"], "expires_at": "tomorrow"},
        {"name": "k", "scopes": ["tasks:read"], "expires_at": "9999-12-31T23:59:59-14:00"},
        {"name": "k", "scopes": ["tasks:read"], "user_id": 1},
        {"name": "k", "scopes": ["tasks:read"], "key": "tm_chosen_by_me"},
    ],
)
async def test_create_key_invalid_bodies_are_422(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI, body: dict[str, Any]
) -> None:
    user = await make_user("alice")
    problem(await client.post(KEYS, json=body, headers=user.headers), 422, "VALIDATION_ERROR")
    assert await _stored_keys(app) == []


async def test_keys_cannot_manage_keys(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("alice")
    key = await api_create_key(client, user.headers, ["tasks:read", "tasks:write"])
    headers = {"X-API-Key": key["key"]}
    problem(
        await client.post(KEYS, json={"name": "k2", "scopes": ["tasks:read"]}, headers=headers),
        403,
        "FORBIDDEN",
    )
    problem(await client.get(KEYS, headers=headers), 403, "FORBIDDEN")
    problem(await client.delete(f"{KEYS}/{key['id']}", headers=headers), 403, "FORBIDDEN")
    assert len(await _stored_keys(app)) == 1
    assert (await client.get(ME, headers=headers)).status_code == 200


async def test_key_management_needs_authentication(client: httpx.AsyncClient) -> None:
    problem(await client.get(KEYS), 401, "NOT_AUTHENTICATED")
    problem(
        await client.post(KEYS, json={"name": "k", "scopes": ["tasks:read"]}),
        401,
        "NOT_AUTHENTICATED",
    )
    problem(await client.delete(f"{KEYS}/1"), 401, "NOT_AUTHENTICATED")


async def test_revoked_key_stops_working_at_once(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user("alice")
    keep = await api_create_key(client, user.headers, ["tasks:read"])
    drop = await api_create_key(client, user.headers, ["tasks:read"])
    assert (await client.get(ME, headers={"X-API-Key": drop["key"]})).status_code == 200
    response = await client.delete(f"{KEYS}/{drop['id']}", headers=user.headers)
    assert response.status_code == 204
    assert response.content == b""
    problem(await client.get(ME, headers={"X-API-Key": drop["key"]}), 401, "INVALID_CREDENTIALS")
    assert (await client.get(ME, headers={"X-API-Key": keep["key"]})).status_code == 200
    assert [k["id"] for k in (await client.get(KEYS, headers=user.headers)).json()] == [keep["id"]]
    problem(
        await client.delete(f"{KEYS}/{drop['id']}", headers=user.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )


async def test_other_users_keys_are_invisible(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    admin = await make_user("root", role="admin")
    key = await api_create_key(client, alice.headers, ["tasks:read"])
    for intruder in (bob, admin):
        assert (await client.get(KEYS, headers=intruder.headers)).json() == []
        problem(
            await client.delete(f"{KEYS}/{key['id']}", headers=intruder.headers),
            404,
            "RESOURCE_NOT_FOUND",
        )
    assert (await client.get(ME, headers={"X-API-Key": key["key"]})).status_code == 200


@pytest.mark.parametrize("key_id", ["0", str(2**63)])
async def test_delete_invalid_key_id_is_422(
    client: httpx.AsyncClient, make_user: UserFactory, key_id: str
) -> None:
    user = await make_user("alice")
    problem(await client.delete(f"{KEYS}/{key_id}", headers=user.headers), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize("key_id", ["-3", "abc"])
async def test_delete_of_a_key_id_that_is_not_digits_names_nothing(
    client: httpx.AsyncClient, make_user: UserFactory, key_id: str
) -> None:
    user = await make_user("alice")
    problem(
        await client.delete(f"{KEYS}/{key_id}", headers=user.headers), 404, "RESOURCE_NOT_FOUND"
    )


async def test_expired_key_is_rejected(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("alice")
    key = await api_create_key(client, user.headers, ["tasks:read"], expires_at=_future(1))
    assert (await client.get(ME, headers={"X-API-Key": key["key"]})).status_code == 200
    await db_execute(
        app,
        update(ApiKey)
        .where(ApiKey.id == key["id"])
        .values(expires_at=utcnow() - timedelta(seconds=1)),
    )
    problem(await client.get(ME, headers={"X-API-Key": key["key"]}), 401, "INVALID_CREDENTIALS")


@pytest.mark.parametrize("name", ["bad\x00name", "tab\there", "line\nbreak"])
async def test_control_characters_in_key_names_are_422(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI, name: str
) -> None:
    user = await make_user("alice")
    response = await client.post(
        KEYS, json={"name": name, "scopes": ["tasks:read"]}, headers=user.headers
    )
    problem(response, 422, "VALIDATION_ERROR")
    assert await _stored_keys(app) == []


async def test_task_scopes_are_enforced(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user("alice")
    reader = {"X-API-Key": (await api_create_key(client, user.headers, ["tasks:read"]))["key"]}
    writer = {"X-API-Key": (await api_create_key(client, user.headers, ["tasks:write"]))["key"]}
    problem(
        await client.post("/api/v1/tasks", json={"title": "from a reader"}, headers=reader),
        403,
        "FORBIDDEN",
    )
    created = await client.post("/api/v1/tasks", json={"title": "from a writer"}, headers=writer)
    assert created.status_code == 201, created.text
    listed = await client.get("/api/v1/tasks", headers=reader)
    assert listed.status_code == 200
    assert [t["title"] for t in listed.json()["items"]] == ["from a writer"]
    problem(await client.get("/api/v1/tasks", headers=writer), 403, "FORBIDDEN")


async def test_deactivated_owner_key_fails_on_the_tasks_path(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    admin = await make_user("root", role="admin")
    user = await make_user("alice")
    key = {"X-API-Key": (await api_create_key(client, user.headers, ["tasks:read"]))["key"]}
    assert (await client.get("/api/v1/tasks", headers=key)).status_code == 200
    response = await client.patch(
        f"/api/v1/users/{user.id}", json={"is_active": False}, headers=admin.headers
    )
    assert response.status_code == 200
    problem(await client.get("/api/v1/tasks", headers=key), 401, "INVALID_CREDENTIALS")
    problem(await client.get("/api/v1/tasks", headers=user.headers), 401, "INVALID_CREDENTIALS")
