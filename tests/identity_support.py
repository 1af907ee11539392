"""Helpers shared by the identity tests (users, auth, API keys)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import TEST_PASSWORD

STRONG_PASSWORD = "Sup3r-secret"


async def register(
    client: httpx.AsyncClient,
    username: str,
    *,
    email: str | None = None,
    password: str = STRONG_PASSWORD,
) -> httpx.Response:
    return await client.post(
        "/api/v1/users",
        json={
            "email": email or f"{username}@example.com",
            "username": username,
            "password": password,
        },
    )


async def login_response(
    client: httpx.AsyncClient, username: str, password: str = TEST_PASSWORD
) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    )


async def login(
    client: httpx.AsyncClient, username: str, password: str = TEST_PASSWORD
) -> dict[str, Any]:
    response = await login_response(client, username, password)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_key(
    client: httpx.AsyncClient, headers: dict[str, str], scopes: list[str], **extra: Any
) -> dict[str, Any]:
    body = {"name": "script", "scopes": scopes, "current_password": TEST_PASSWORD, **extra}
    response = await client.post("/api/v1/api-keys", json=body, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def db_update(app: FastAPI, statement: Any) -> None:
    """Change a row directly, for states a client cannot reach quickly (e.g. expiry)."""
    async with app.state.database.side_transaction() as session:
        await session.execute(statement.execution_options(synchronize_session=False))
        await session.commit()
