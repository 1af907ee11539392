"""Sessions end when they should, and strict access-token claims (issue "Credentials stay
secret": findings 4 and 7).

An access token stops at once — on every route, the fast task read included — after a
password change, a password reset, "log out everywhere", a deactivation and a reactivation;
API keys survive a password change. Creating an API key and changing the login identifiers
need the current password. Refresh families end after TASKMANAGER_SESSION_MAX_DAYS.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import select, update

from taskmanager.kit import security
from taskmanager.kit.db import utcnow
from taskmanager.models.auth import RefreshToken
from taskmanager.models.users import User
from tests.conftest import TEST_PASSWORD, AppFactory, UserFactory, problem
from tests.factories import api_create_task, api_login, bearer, create_api_key, db_execute

API = "/api/v1"
ME = f"{API}/users/me"
NEW_PASSWORD = "Brand-n3w-pass"


async def _task_reads(client: httpx.AsyncClient, headers: dict[str, str], task_id: int) -> int:
    """Status of the fast read (GET /tasks/{id}) and of a normal route (GET /users/me)."""
    fast = await client.get(f"{API}/tasks/{task_id}", headers=headers)
    normal = await client.get(ME, headers=headers)
    assert fast.status_code == normal.status_code, (fast.text, normal.text)
    return fast.status_code


async def _ended(client: httpx.AsyncClient, headers: dict[str, str], task_id: int) -> None:
    for response in (
        await client.get(f"{API}/tasks/{task_id}", headers=headers),
        await client.get(ME, headers=headers),
        await client.get(f"{API}/tasks", headers=headers),
        await client.post(f"{API}/tasks", json={"title": "x"}, headers=headers),
        await client.post(
            f"{API}/api-keys",
            json={"name": "k", "scopes": ["tasks:read"], "current_password": TEST_PASSWORD},
            headers=headers,
        ),
    ):
        problem(response, 401, "INVALID_CREDENTIALS")


async def test_password_change_ends_older_access_tokens_on_every_route(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("alice")
    old = bearer((await api_login(client, "alice"))["access_token"])
    task = await api_create_task(client, user)
    key = await create_api_key(app, user, ["tasks:read"])
    assert await _task_reads(client, old, task["id"]) == 200
    response = await client.post(
        f"{ME}/password",
        json={
            "current_password": TEST_PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
        },
        headers=old,
    )
    assert response.status_code == 204, response.text
    await _ended(client, old, task["id"])
    await _ended(client, user.headers, task["id"])
    # API keys survive a password change, like personal access tokens elsewhere.
    assert (await client.get(f"{API}/tasks/{task['id']}", headers=key)).status_code == 200
    # A new login works at once, on the fast read too.
    fresh = bearer((await api_login(client, "alice", NEW_PASSWORD))["access_token"])
    assert await _task_reads(client, fresh, task["id"]) == 200


async def test_logout_all_ends_every_session_and_keeps_api_keys(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("bob")
    task = await api_create_task(client, user)
    first, second = await api_login(client, "bob"), await api_login(client, "bob")
    key = await create_api_key(app, user, ["tasks:read"])
    response = await client.post(f"{API}/auth/logout-all", headers=bearer(first["access_token"]))
    assert response.status_code == 204
    assert response.content == b""
    for pair in (first, second):
        await _ended(client, bearer(pair["access_token"]), task["id"])
        problem(
            await client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}),
            401,
            "INVALID_CREDENTIALS",
        )
    assert (await client.get(f"{API}/tasks/{task['id']}", headers=key)).status_code == 200
    # An API key cannot end the owner's sessions; anonymous callers get 401.
    problem(await client.post(f"{API}/auth/logout-all", headers=key), 403, "FORBIDDEN")
    problem(await client.post(f"{API}/auth/logout-all"), 401, "NOT_AUTHENTICATED")
    fresh = bearer((await api_login(client, "bob"))["access_token"])
    assert await _task_reads(client, fresh, task["id"]) == 200


async def test_deactivation_and_reactivation_end_older_access_tokens(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    admin = await make_user("root", role="admin")
    user = await make_user("carol")
    task = await api_create_task(client, user)
    old = bearer((await api_login(client, "carol"))["access_token"])
    response = await client.patch(
        f"{API}/users/{user.id}", json={"is_active": False}, headers=admin.headers
    )
    assert response.status_code == 200
    await _ended(client, old, task["id"])
    # A token minted while deactivated (login is refused, but say one leaked) stays dead too.
    response = await client.patch(
        f"{API}/users/{user.id}", json={"is_active": True}, headers=admin.headers
    )
    assert response.status_code == 200
    await _ended(client, old, task["id"])
    await _ended(client, user.headers, task["id"])
    fresh = bearer((await api_login(client, "carol"))["access_token"])
    assert await _task_reads(client, fresh, task["id"]) == 200


async def test_a_refresh_after_logout_all_issues_nothing_that_works(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    await make_user("dan")
    pair = await api_login(client, "dan")
    await client.post(f"{API}/auth/logout-all", headers=bearer(pair["access_token"]))
    problem(
        await client.post(f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}),
        401,
        "INVALID_CREDENTIALS",
    )


# ---- step-up: the current password, asked again ---------------------------------------------


@pytest.mark.parametrize(
    ("extra", "status", "code"),
    [
        ({}, 422, "VALIDATION_ERROR"),
        ({"current_password": ""}, 422, "VALIDATION_ERROR"),
        ({"current_password": "Wrong-passw0rd"}, 401, "INVALID_CREDENTIALS"),
    ],
)
async def test_api_key_creation_needs_the_current_password(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    app: FastAPI,
    extra: dict[str, Any],
    status: int,
    code: str,
) -> None:
    user = await make_user("erin")
    response = await client.post(
        f"{API}/api-keys",
        json={"name": "k", "scopes": ["tasks:read"], **extra},
        headers=user.headers,
    )
    problem_body = problem(response, status, code)
    if status == 422:
        assert ["body", "current_password"] in [e["loc"] for e in problem_body["errors"]]
    assert (await client.get(f"{API}/api-keys", headers=user.headers)).json() == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"email": "new@example.com"}, 422, "VALIDATION_ERROR"),
        ({"username": "newname", "current_password": "Wrong-passw0rd"}, 401, "INVALID_CREDENTIALS"),
        ({"current_password": TEST_PASSWORD}, 400, "MALFORMED_REQUEST"),
    ],
)
async def test_identifier_changes_need_the_current_password(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    user = await make_user("fay")
    problem(await client.patch(ME, json=body, headers=user.headers), status, code)
    me = (await client.get(ME, headers=user.headers)).json()
    assert (me["username"], me["email"]) == ("fay", "fay@example.com")


async def test_a_wrong_current_password_reveals_nothing_about_taken_addresses(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user("gus")
    await make_user("hal")
    # Without the password, a taken and a free address get the same 401 (not 409).
    for email in ("hal@example.com", "free@example.com"):
        problem(
            await client.patch(
                ME,
                json={"email": email, "current_password": "Wrong-passw0rd"},
                headers=user.headers,
            ),
            401,
            "INVALID_CREDENTIALS",
        )


# ---- strict claims ---------------------------------------------------------------------------


def _token(app: FastAPI, **claims: Any) -> dict[str, str]:
    now = int(datetime.now(UTC).timestamp())
    payload = {
        "sub": "1",
        "type": "access",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "gen": 0,
    } | claims
    payload = {k: v for k, v in payload.items() if v is not None}
    return bearer(jwt.encode(payload, app.state.settings.signing_key, algorithm="HS256"))


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"sub": "1" + "0" * 29}, id="30-digit-sub"),
        pytest.param({"sub": "9223372036854775808"}, id="sub-over-bigint"),
        pytest.param({"sub": "\u0661"}, id="arabic-indic-digit-sub"),
        pytest.param({"sub": "\uff11"}, id="fullwidth-digit-sub"),
        pytest.param({"sub": "01"}, id="leading-zero-sub"),
        pytest.param({"sub": "0"}, id="zero-sub"),
        pytest.param({"sub": "-1"}, id="negative-sub"),
        pytest.param({"sub": " 1"}, id="spaced-sub"),
        pytest.param({"sub": 1}, id="numeric-sub"),
        pytest.param({"exp": int(datetime.now(UTC).timestamp()) + 10 * 365 * 86400}, id="10y"),
        pytest.param({"iat": int(datetime.now(UTC).timestamp()) + 3600}, id="iat-in-future"),
        pytest.param({"gen": None}, id="no-generation"),
        pytest.param({"gen": "0"}, id="string-generation"),
        pytest.param({"gen": True}, id="boolean-generation"),
        pytest.param({"gen": 1}, id="stale-generation-ahead"),
        pytest.param({"type": "refresh"}, id="wrong-type"),
    ],
)
async def test_bad_claims_are_401_never_500(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI, claims: dict[str, Any]
) -> None:
    user = await make_user("ida")
    task = await api_create_task(client, user)
    headers = _token(app, **({"sub": str(user.id)} | claims))
    problem(await client.get(ME, headers=headers), 401, "INVALID_CREDENTIALS")
    problem(
        await client.get(f"{API}/tasks/{task['id']}", headers=headers), 401, "INVALID_CREDENTIALS"
    )


async def test_a_token_within_the_configured_lifetime_is_accepted(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("jay")
    minutes = app.state.settings.access_token_expire_minutes
    now = int(datetime.now(UTC).timestamp())
    ok = _token(app, sub=str(user.id), iat=now, exp=now + minutes * 60)
    assert (await client.get(ME, headers=ok)).status_code == 200
    too_long = _token(app, sub=str(user.id), iat=now, exp=now + minutes * 60 + 1)
    problem(await client.get(ME, headers=too_long), 401, "INVALID_CREDENTIALS")


# ---- refresh families end -------------------------------------------------------------------


async def test_a_refresh_family_ends_after_session_max_days(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, client = await make_app(session_max_days=30, refresh_token_expire_days=14)
    await make_user("kim")
    pair = await api_login(client, "kim")
    async with app.state.database.snapshot() as session:
        row = (await session.execute(select(RefreshToken))).scalar_one()
    # The family's end is fixed at login, 30 days on; each token lives 14 days within it.
    assert abs((row.family_expires_at - row.created_at) - timedelta(days=30)) < timedelta(minutes=1)
    assert abs((row.expires_at - row.created_at) - timedelta(days=14)) < timedelta(minutes=1)

    # Rotation keeps the family's end, and caps the new token's life at it.
    family_end = utcnow() + timedelta(days=3)
    async with app.state.database.side_transaction() as session:
        await session.execute(update(RefreshToken).values(family_expires_at=family_end))
    rotated = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text
    async with app.state.database.snapshot() as session:
        newest = (
            await session.execute(select(RefreshToken).order_by(RefreshToken.id.desc()).limit(1))
        ).scalar_one()
    assert abs(newest.family_expires_at - family_end) < timedelta(seconds=1)
    assert newest.expires_at <= family_end + timedelta(seconds=1)

    # Past the family's end, however fresh the token: 401.
    async with app.state.database.side_transaction() as session:
        await session.execute(
            update(RefreshToken).values(family_expires_at=utcnow() - timedelta(seconds=1))
        )
    problem(
        await client.post(
            f"{API}/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]}
        ),
        401,
        "INVALID_CREDENTIALS",
    )


# ---- Argon2 under load, and hashes from older parameters ------------------------------------


async def test_a_login_storm_beyond_the_hashing_slots_gets_503(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    await make_user("lee")
    security.configure_password_hashing(concurrency=1, wait_seconds=0.05)
    slot = security._semaphore()
    await slot.acquire()  # one login's hash in progress
    try:
        response = await client.post(
            f"{API}/auth/token", data={"username": "lee", "password": TEST_PASSWORD}
        )
        problem(response, 503, "SERVICE_UNAVAILABLE")
        assert response.headers["retry-after"] == "1"
    finally:
        slot.release()
        security.configure_password_hashing(concurrency=2, wait_seconds=2.0)
    await api_login(client, "lee")


async def test_hashes_from_older_parameters_still_log_in_and_are_upgraded(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("moe")
    # RFC 9106's low-memory profile, what this service stored before (m=64 MiB, t=3, p=4).
    legacy = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4).hash(TEST_PASSWORD)
    await db_execute(app, update(User).where(User.id == user.id).values(password_hash=legacy))
    await api_login(client, "moe")
    async with app.state.database.snapshot() as session:
        stored = (
            await session.execute(select(User.password_hash).where(User.id == user.id))
        ).scalar_one()
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
