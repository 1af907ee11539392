"""Text no database can store (NUL, lone UTF-16 surrogates) is a 422 on every text field.

JSON may carry ``\\ud800`` escapes, which decode to lone surrogates that UTF-8 cannot
encode; PostgreSQL text cannot hold NUL. Either would otherwise fail in the driver (a 500).
Passwords are only ever hashed, so NUL is allowed there; lone surrogates are not.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from taskmanager.models.api_keys import ApiKey
from taskmanager.models.comments import Comment
from taskmanager.models.tasks import Task
from taskmanager.models.users import User
from tests.conftest import TEST_PASSWORD, UserFactory, problem

API = "/api/v1"
SURROGATES = ["\\ud800", "a\\udfffb"]
BAD = [*SURROGATES, "nul\\u0000"]


async def _count(app: FastAPI, model: type[object]) -> int:
    async with app.state.database.snapshot() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def _json(template: str, bad: str) -> bytes:
    return template.replace("BAD", bad).encode()


async def _send(
    client: httpx.AsyncClient, method: str, url: str, raw: bytes, headers: dict[str, str]
) -> httpx.Response:
    headers = {**headers, "Content-Type": "application/json"}
    return await client.request(method, url, content=raw, headers=headers)


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize(
    "template",
    [
        '{"title": "BAD"}',
        '{"title": "ok", "description": "BAD"}',
        '{"title": "ok", "tags": ["fine", "BAD"]}',
    ],
)
async def test_task_text(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI, template: str, bad: str
) -> None:
    alice = await make_user("alice")
    created = await client.post(f"{API}/tasks", json={"title": "t"}, headers=alice.headers)
    assert created.status_code == 201
    url = f"{API}/tasks/{created.json()['id']}"
    raw = _json(template, bad)
    for method, target in (("POST", f"{API}/tasks"), ("PUT", url), ("PATCH", url)):
        response = await _send(client, method, target, raw, alice.headers)
        problem(response, 422, "VALIDATION_ERROR")
    assert await _count(app, Task) == 1
    unchanged = await client.get(url, headers=alice.headers)
    assert unchanged.json()["version"] == 1


@pytest.mark.parametrize("bad", BAD)
async def test_comment_body(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI, bad: str
) -> None:
    alice = await make_user("alice")
    task = await client.post(f"{API}/tasks", json={"title": "t"}, headers=alice.headers)
    comments = f"{API}/tasks/{task.json()['id']}/comments"
    comment = await client.post(comments, json={"body": "first"}, headers=alice.headers)
    assert comment.status_code == 201
    raw = _json('{"body": "BAD"}', bad)
    problem(await _send(client, "POST", comments, raw, alice.headers), 422, "VALIDATION_ERROR")
    url = f"{comments}/{comment.json()['id']}"
    problem(await _send(client, "PATCH", url, raw, alice.headers), 422, "VALIDATION_ERROR")
    assert await _count(app, Comment) == 1


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize(
    "template",
    [
        '{"email": "BAD@example.com", "username": "carol", "password": "PASSWORD"}',
        '{"email": "carol@example.com", "username": "BAD", "password": "PASSWORD"}',
    ],
)
async def test_registration(
    client: httpx.AsyncClient, app: FastAPI, template: str, bad: str
) -> None:
    raw = _json(template.replace("PASSWORD", TEST_PASSWORD), bad)
    problem(await _send(client, "POST", f"{API}/users", raw, {}), 422, "VALIDATION_ERROR")
    assert await _count(app, User) == 0


@pytest.mark.parametrize("bad", SURROGATES)
async def test_registration_password(client: httpx.AsyncClient, app: FastAPI, bad: str) -> None:
    template = '{"email": "carol@example.com", "username": "carol", "password": "Aa1-BAD-long"}'
    problem(
        await _send(client, "POST", f"{API}/users", _json(template, bad), {}),
        422,
        "VALIDATION_ERROR",
    )
    assert await _count(app, User) == 0


@pytest.mark.parametrize("bad", SURROGATES)
@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("PATCH", "/users/me", '{"email": "BAD@example.com"}'),
        ("PATCH", "/users/me", '{"username": "BAD"}'),
        (
            "POST",
            "/users/me/password",
            '{"current_password": "BAD", "new_password": "Aa1-fresh-pass",'
            ' "confirm_password": "Aa1-fresh-pass"}',
        ),
        (
            "POST",
            "/users/me/password",
            '{"current_password": "PASSWORD", "new_password": "Aa1-BAD-long",'
            ' "confirm_password": "Aa1-BAD-long"}',
        ),
        ("POST", "/api-keys", '{"name": "BAD", "scopes": ["tasks:read"]}'),
        ("POST", "/auth/refresh", '{"refresh_token": "BAD"}'),
    ],
)
async def test_account_text(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    app: FastAPI,
    method: str,
    path: str,
    template: str,
    bad: str,
) -> None:
    alice = await make_user("alice")
    raw = _json(template.replace("PASSWORD", TEST_PASSWORD), bad)
    response = await _send(client, method, f"{API}{path}", raw, alice.headers)
    problem(response, 422, "VALIDATION_ERROR")
    me = await client.get(f"{API}/users/me", headers=alice.headers)
    assert me.json()["username"] == "alice"
    assert await _count(app, ApiKey) == 0
