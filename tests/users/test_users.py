"""Registration, the caller's own account and password, through HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from taskmanager.models.auth import RefreshToken
from taskmanager.models.projects import Project, ProjectMember
from taskmanager.models.users import User
from tests.conftest import TEST_PASSWORD, AppFactory, UserFactory, problem
from tests.factories import (
    STRONG_PASSWORD,
    api_create_key,
    api_login,
    api_login_response,
    api_register,
    bearer,
)

ME = "/api/v1/users/me"
USER_FIELDS = {"id", "email", "username", "role", "is_active", "created_at"}


async def _user_count(app: FastAPI) -> int:
    async with app.state.database.snapshot() as session:
        count: int = (await session.execute(select(func.count()).select_from(User))).scalar_one()
        return count


async def test_register_returns_the_user_and_creates_an_inbox(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    response = await api_register(client, "Alice_1", email="Alice@Example.COM")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == USER_FIELDS
    assert body["username"] == "alice_1"
    assert body["email"] == "alice@example.com"
    assert body["role"] == "user"
    assert body["is_active"] is True
    assert body["created_at"].endswith(("Z", "+00:00"))
    assert STRONG_PASSWORD not in response.text
    assert "argon2" not in response.text
    async with app.state.database.snapshot() as session:
        stored = (await session.execute(select(User).where(User.id == body["id"]))).scalar_one()
        inboxes = (
            await session.execute(
                select(Project.name, ProjectMember.role, Project.id)
                .join(ProjectMember, ProjectMember.project_id == Project.id)
                .where(Project.is_inbox.is_(True), ProjectMember.user_id == body["id"])
            )
        ).all()
    assert stored.password_hash.startswith("$argon2id$")
    assert [tuple(row)[:2] for row in inboxes] == [("Inbox", "owner")]
    inbox_ids = [row[2] for row in inboxes]
    # The new account can log in with the mixed-case name it registered with.
    tokens = await api_login(client, "ALICE_1", STRONG_PASSWORD)
    me = await client.get(ME, headers=bearer(tokens["access_token"]))
    assert me.json() == {**body, "inbox_project_id": inbox_ids[0]}
    assert response.headers["location"] == f"/api/v1/users/{body['id']}"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("bob", "bob@example.com"), ("bob", "other@example.com")),
        (("bob", "bob@example.com"), ("BOB", "other@example.com")),
        (("bob", "bob@example.com"), ("robert", "bob@example.com")),
        (("bob", "bob@example.com"), ("robert", "BOB@Example.com")),
    ],
)
async def test_register_taken_username_or_email_is_409(
    client: httpx.AsyncClient, app: FastAPI, first: tuple[str, str], second: tuple[str, str]
) -> None:
    assert (await api_register(client, first[0], email=first[1])).status_code == 201
    problem(await api_register(client, second[0], email=second[1]), 409, "CONFLICT")
    assert await _user_count(app) == 1


@pytest.mark.parametrize("names", [("carol", "carol"), ("Carol", "carol")])
async def test_simultaneous_registrations_one_wins(
    client: httpx.AsyncClient, app: FastAPI, names: tuple[str, str]
) -> None:
    responses = await asyncio.gather(
        api_register(client, names[0], email="one@example.com"),
        api_register(client, names[1], email="two@example.com"),
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409], [r.text for r in responses]
    problem(next(r for r in responses if r.status_code == 409), 409, "CONFLICT")
    assert await _user_count(app) == 1
    async with app.state.database.snapshot() as session:
        inboxes = (await session.execute(select(func.count()).select_from(Project))).scalar_one()
    assert inboxes == 1  # the loser's Inbox was rolled back with it


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", "ab"),
        ("username", "a" * 51),
        ("username", "bad name"),
        ("username", "bad-name"),
        ("username", "émile"),
        ("username", 123),
        ("email", "not-an-email"),
        ("email", "a@"),
        ("email", ""),
        ("password", "Sh0rt"),
        ("password", "alllowercase1"),
        ("password", "ALLUPPERCASE1"),
        ("password", "NoDigitsHere"),
        ("password", "Aa1" + "x" * 126),
    ],
)
async def test_register_invalid_values_are_422(
    client: httpx.AsyncClient, app: FastAPI, field: str, value: Any
) -> None:
    body: dict[str, Any] = {
        "email": "dora@example.com",
        "username": "dora",
        "password": STRONG_PASSWORD,
        field: value,
    }
    result = problem(await client.post("/api/v1/users", json=body), 422, "VALIDATION_ERROR")
    assert any(err["loc"][:2] == ["body", field] for err in result["errors"]), result
    assert await _user_count(app) == 0


@pytest.mark.parametrize("missing", ["email", "username", "password"])
async def test_register_missing_field_is_422(
    client: httpx.AsyncClient, app: FastAPI, missing: str
) -> None:
    body = {"email": "dora@example.com", "username": "dora", "password": STRONG_PASSWORD}
    del body[missing]
    problem(await client.post("/api/v1/users", json=body), 422, "VALIDATION_ERROR")
    assert await _user_count(app) == 0


@pytest.mark.parametrize(
    "extra", [{"role": "admin"}, {"is_active": False}, {"id": 99}, {"password_hash": "x"}]
)
async def test_register_mass_assignment_is_422(
    client: httpx.AsyncClient, app: FastAPI, extra: dict[str, Any]
) -> None:
    body = {"email": "eve@example.com", "username": "eve", "password": STRONG_PASSWORD, **extra}
    problem(await client.post("/api/v1/users", json=body), 422, "VALIDATION_ERROR")
    assert await _user_count(app) == 0
    problem(await api_login_response(client, "eve", STRONG_PASSWORD), 401, "INVALID_CREDENTIALS")


async def test_register_bad_json_and_content_type(client: httpx.AsyncClient, app: FastAPI) -> None:
    response = await client.post(
        "/api/v1/users", content=b'{"username": ', headers={"Content-Type": "application/json"}
    )
    problem(response, 400, "MALFORMED_REQUEST")
    response = await client.post("/api/v1/users", json=["not", "an", "object"])
    problem(response, 422, "VALIDATION_ERROR")
    response = await client.post(
        "/api/v1/users",
        data={"email": "f@example.com", "username": "frank", "password": STRONG_PASSWORD},
    )
    assert response.status_code in (400, 415, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await _user_count(app) == 0


async def test_registration_can_be_disabled(make_app: AppFactory) -> None:
    app, client = await make_app(allow_registration=False)
    problem(await api_register(client, "gina"), 403, "FORBIDDEN")
    assert await _user_count(app) == 0


async def test_get_me(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user("hank")
    response = await client.get(ME, headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == USER_FIELDS | {"inbox_project_id"}
    assert body["id"] == user.id
    assert body["username"] == "hank"
    assert body["email"] == "hank@example.com"
    assert body["inbox_project_id"] == user.inbox_id
    assert response.headers["etag"]
    again = await client.get(
        ME, headers={**user.headers, "If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == response.headers["etag"]


async def test_get_me_with_an_api_key(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user("hank")
    key = await api_create_key(client, user.headers, ["tasks:read"])
    response = await client.get(ME, headers={"X-API-Key": key["key"]})
    assert response.status_code == 200
    assert response.json()["id"] == user.id


async def test_patch_me(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user("ivy")
    response = await client.patch(
        ME,
        json={
            "username": "Ivy_New",
            "email": "IVY@New.Example.com",
            "current_password": TEST_PASSWORD,
        },
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["username"] == "ivy_new"
    assert response.json()["email"] == "ivy@new.example.com"
    response = await client.patch(
        ME,
        json={"email": "ivy2@example.com", "current_password": TEST_PASSWORD},
        headers=user.headers,
    )
    assert response.json()["username"] == "ivy_new"
    assert response.json()["email"] == "ivy2@example.com"
    await api_login(client, "ivy_new")
    # Setting one's own current values again is not a conflict with oneself.
    response = await client.patch(
        ME, json={"username": "IVY_NEW", "current_password": TEST_PASSWORD}, headers=user.headers
    )
    assert response.status_code == 200


async def test_patch_me_taken_is_409(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user("jack")
    await make_user("jill")
    for body in ({"username": "JILL"}, {"email": "jill@example.com"}):
        body["current_password"] = TEST_PASSWORD
        problem(await client.patch(ME, json=body, headers=user.headers), 409, "CONFLICT")
    me = (await client.get(ME, headers=user.headers)).json()
    assert (me["username"], me["email"]) == ("jack", "jack@example.com")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "MALFORMED_REQUEST"),
        ({"role": "admin"}, 422, "VALIDATION_ERROR"),
        ({"is_active": False}, 422, "VALIDATION_ERROR"),
        ({"id": 1}, 422, "VALIDATION_ERROR"),
        ({"username": "ok_name", "role": "admin"}, 422, "VALIDATION_ERROR"),
        ({"username": None}, 422, "VALIDATION_ERROR"),
        ({"email": None}, 422, "VALIDATION_ERROR"),
        ({"username": "x"}, 422, "VALIDATION_ERROR"),
        ({"email": "nope"}, 422, "VALIDATION_ERROR"),
        ({"password": STRONG_PASSWORD}, 422, "VALIDATION_ERROR"),
    ],
)
async def test_patch_me_bad_bodies_change_nothing(
    client: httpx.AsyncClient, make_user: UserFactory, body: dict[str, Any], status: int, code: str
) -> None:
    user = await make_user("kate")
    before = (await client.get(ME, headers=user.headers)).json()
    problem(await client.patch(ME, json=body, headers=user.headers), status, code)
    assert (await client.get(ME, headers=user.headers)).json() == before


async def test_patch_me_with_an_api_key_is_403(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user("liam")
    key = await api_create_key(client, user.headers, ["tasks:read", "tasks:write"])
    response = await client.patch(
        ME, json={"username": "hijacked"}, headers={"X-API-Key": key["key"]}
    )
    problem(response, 403, "FORBIDDEN")
    assert (await client.get(ME, headers=user.headers)).json()["username"] == "liam"


PASSWORD = "/api/v1/users/me/password"


def _change(current: str, new: str, confirm: str | None = None) -> dict[str, str]:
    return {
        "current_password": current,
        "new_password": new,
        "confirm_password": new if confirm is None else confirm,
    }


async def test_change_password_revokes_every_refresh_token(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("mia")
    first = await api_login(client, "mia")
    second = await api_login(client, "mia")
    response = await client.post(
        PASSWORD, json=_change(TEST_PASSWORD, "Brand-n3w-pass"), headers=user.headers
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    for tokens in (first, second):
        problem(
            await client.post(
                "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            ),
            401,
            "INVALID_CREDENTIALS",
        )
    problem(await api_login_response(client, "mia", TEST_PASSWORD), 401, "INVALID_CREDENTIALS")
    await api_login(client, "mia", "Brand-n3w-pass")
    async with app.state.database.snapshot() as session:
        live = (
            await session.execute(
                select(func.count())
                .select_from(RefreshToken)
                .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
            )
        ).scalar_one()
    assert live == 1  # only the login made after the change


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (_change("Wrong-passw0rd", "Brand-n3w-pass"), 401, "INVALID_CREDENTIALS"),
        (_change(TEST_PASSWORD, "Brand-n3w-pass", "Brand-n3w-pasS"), 422, "VALIDATION_ERROR"),
        (_change(TEST_PASSWORD, TEST_PASSWORD), 422, "VALIDATION_ERROR"),
        (_change(TEST_PASSWORD, "weakpass"), 422, "VALIDATION_ERROR"),
        (_change(TEST_PASSWORD, "Sh0rt"), 422, "VALIDATION_ERROR"),
        (
            {"current_password": TEST_PASSWORD, "new_password": "Brand-n3w-pass"},
            422,
            "VALIDATION_ERROR",
        ),
        ({**_change(TEST_PASSWORD, "Brand-n3w-pass"), "extra": 1}, 422, "VALIDATION_ERROR"),
        ({}, 422, "VALIDATION_ERROR"),
    ],
)
async def test_change_password_rejections_change_nothing(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    user = await make_user("nora")
    tokens = await api_login(client, "nora")
    problem(await client.post(PASSWORD, json=body, headers=user.headers), status, code)
    await api_login(client, "nora", TEST_PASSWORD)
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200


async def test_change_password_mismatch_points_at_confirm(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user("olga")
    body = _change(TEST_PASSWORD, "Brand-n3w-pass", "Different-1")
    result = problem(
        await client.post(PASSWORD, json=body, headers=user.headers), 422, "VALIDATION_ERROR"
    )
    assert result["errors"][0]["loc"] == ["body", "confirm_password"]


async def test_change_password_with_an_api_key_is_403(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user("pete")
    key = await api_create_key(client, user.headers, ["tasks:write"])
    response = await client.post(
        PASSWORD,
        json=_change(TEST_PASSWORD, "Brand-n3w-pass"),
        headers={"X-API-Key": key["key"]},
    )
    problem(response, 403, "FORBIDDEN")
    await api_login(client, "pete", TEST_PASSWORD)


async def test_change_password_needs_authentication(client: httpx.AsyncClient) -> None:
    response = await client.post(PASSWORD, json=_change(TEST_PASSWORD, "Brand-n3w-pass"))
    problem(response, 401, "NOT_AUTHENTICATED")
