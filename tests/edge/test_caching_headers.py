"""Authenticated responses are private and vary on the credential (finding 5, API.md §2)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import TEST_PASSWORD, UserFactory
from tests.factories import api_create_task, create_api_key, etag

PRIVATE = "private, no-cache"


def _varies_on_credentials(response: httpx.Response) -> None:
    vary = {part.strip().lower() for part in response.headers["vary"].split(",")}
    assert {"authorization", "x-api-key"} <= vary, response.headers


async def test_task_get_and_its_304_are_private_and_vary_on_credentials(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("alice")
    task = await api_create_task(client, user)
    key = await create_api_key(app, user, ["tasks:read"])
    for headers in (user.headers, key):
        response = await client.get(f"/api/v1/tasks/{task['id']}", headers=headers)
        assert response.status_code == 200
        assert response.headers["cache-control"] == PRIVATE
        _varies_on_credentials(response)
        not_modified = await client.get(
            f"/api/v1/tasks/{task['id']}", headers={**headers, "If-None-Match": etag(task)}
        )
        assert not_modified.status_code == 304
        assert not_modified.headers["cache-control"] == PRIVATE
        _varies_on_credentials(not_modified)


@pytest.mark.parametrize(
    "path", ["/api/v1/tasks", "/api/v1/projects", "/api/v1/users/me", "/api/v1/api-keys"]
)
async def test_other_authenticated_reads_are_private(
    client: httpx.AsyncClient, make_user: UserFactory, path: str
) -> None:
    user = await make_user("bob")
    response = await client.get(path, headers=user.headers)
    assert response.status_code == 200
    assert response.headers["cache-control"] == PRIVATE
    _varies_on_credentials(response)


async def test_cors_keeps_origin_in_vary(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user("cat")
    response = await client.get(
        "/api/v1/users/me", headers={**user.headers, "Origin": "http://localhost:3000"}
    )
    vary = {part.strip().lower() for part in response.headers["vary"].split(",")}
    assert {"origin", "authorization", "x-api-key"} <= vary


async def test_credential_responses_are_no_store(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user("dan")
    login = await client.post(
        "/api/v1/auth/token", data={"username": "dan", "password": TEST_PASSWORD}
    )
    assert login.headers["cache-control"] == "no-store"
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": login.json()["refresh_token"]}
    )
    assert refreshed.headers["cache-control"] == "no-store"
    created = await client.post(
        "/api/v1/api-keys",
        json={"name": "k", "scopes": ["tasks:read"], "current_password": TEST_PASSWORD},
        headers=user.headers,
    )
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    _varies_on_credentials(created)


async def test_anonymous_api_errors_still_vary_on_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/tasks")
    assert response.status_code == 401
    _varies_on_credentials(response)
    assert "cache-control" not in response.headers
