"""Login, access-token verification, refresh-token rotation and logout, through HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import select, update

from taskmanager.kit.db import utcnow
from taskmanager.kit.security import create_access_token, digest
from taskmanager.models.auth import RefreshToken
from taskmanager.models.users import User
from tests.conftest import TEST_PASSWORD, UserFactory, problem
from tests.factories import api_login, api_login_response, bearer, db_execute

ME = "/api/v1/users/me"


async def test_login_by_username_or_email_any_case(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("alice")
    for name in ("alice", "ALICE", "alice@example.com", "Alice@Example.COM"):
        response = await api_login_response(client, name)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == app.state.settings.access_token_expire_minutes * 60
        assert response.headers["cache-control"] == "no-store"
        me = await client.get(ME, headers=bearer(body["access_token"]))
        assert me.status_code == 200
        assert me.json()["id"] == user.id


async def test_bad_logins_are_indistinguishable(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    await make_user("alice")
    await make_user("sleepy", is_active=False)
    details = set()
    for username, password in [
        ("alice", "Wrong-passw0rd"),
        ("nobody", TEST_PASSWORD),
        ("sleepy", TEST_PASSWORD),
        ("alice", "x" * 1024),
    ]:
        body = problem(
            await api_login_response(client, username, password), 401, "INVALID_CREDENTIALS"
        )
        details.add(body["detail"])
    assert len(details) == 1


async def test_login_fields_over_their_documented_length_are_422_for_everyone(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    # The form's limits are in the schema; refused before any lookup or hash, for a real
    # account and an unknown one alike (so the answer tells nothing about either).
    await make_user("alice")
    for username, password in [
        ("alice", "x" * 1025),
        ("nobody", "x" * 1025),
        ("x" * 321, TEST_PASSWORD),
    ]:
        body = problem(
            await api_login_response(client, username, password), 422, "VALIDATION_ERROR"
        )
        assert body["errors"][0]["type"] == "string_too_long"


@pytest.mark.parametrize(
    "form",
    [{}, {"username": "alice"}, {"password": TEST_PASSWORD}, {"username": "", "password": "x"}],
)
async def test_login_missing_fields_is_422(
    client: httpx.AsyncClient, make_user: UserFactory, form: dict[str, str]
) -> None:
    await make_user("alice")
    problem(await client.post("/api/v1/auth/token", data=form), 422, "VALIDATION_ERROR")


async def test_login_with_json_body_is_a_client_error(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    await make_user("alice")
    response = await client.post(
        "/api/v1/auth/token", json={"username": "alice", "password": TEST_PASSWORD}
    )
    assert response.status_code in (415, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_login_upgrades_an_outdated_hash(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("alice")
    weak = Argon2Hasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(TEST_PASSWORD)
    await db_execute(app, update(User).where(User.id == user.id).values(password_hash=weak))
    await api_login(client, "alice")
    async with app.state.database.snapshot() as session:
        stored = (
            await session.execute(select(User.password_hash).where(User.id == user.id))
        ).scalar_one()
    assert stored != weak
    assert stored.startswith("$argon2id$")
    await api_login(client, "alice")  # the new hash verifies the same password


async def test_no_credentials_is_401_not_authenticated(client: httpx.AsyncClient) -> None:
    response = await client.get(ME)
    problem(response, 401, "NOT_AUTHENTICATED")
    assert response.headers["www-authenticate"] == "Bearer"


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(user_id: int, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "type": "access",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    for key, value in changes.items():
        if value is None:
            claims.pop(key)
        else:
            claims[key] = value
    return claims


TokenMaker = Callable[[int, str, str], str]

TAMPERED: dict[str, TokenMaker] = {
    "alg_none": lambda uid, key, _: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(uid))}.",
    "alg_none_with_signature": lambda uid, key, _: (
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(uid))}.c2lnbmF0dXJl"
    ),
    "hs512_same_key": lambda uid, key, _: jwt.encode(_claims(uid), key, algorithm="HS512"),
    "hs384_same_key": lambda uid, key, _: jwt.encode(_claims(uid), key, algorithm="HS384"),
    "wrong_key": lambda uid, key, _: jwt.encode(
        _claims(uid), "another-secret-key-that-is-long-enough!", algorithm="HS256"
    ),
    "expired": lambda uid, key, _: jwt.encode(
        _claims(uid, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
        key,
        algorithm="HS256",
    ),
    "missing_exp": lambda uid, key, _: jwt.encode(_claims(uid, exp=None), key, algorithm="HS256"),
    "missing_sub": lambda uid, key, _: jwt.encode(_claims(uid, sub=None), key, algorithm="HS256"),
    "missing_jti": lambda uid, key, _: jwt.encode(_claims(uid, jti=None), key, algorithm="HS256"),
    "missing_type": lambda uid, key, _: jwt.encode(_claims(uid, type=None), key, algorithm="HS256"),
    "wrong_type": lambda uid, key, _: jwt.encode(
        _claims(uid, type="refresh"), key, algorithm="HS256"
    ),
    "non_numeric_sub": lambda uid, key, _: jwt.encode(
        _claims(uid, sub="alice"), key, algorithm="HS256"
    ),
    "unknown_user": lambda uid, key, _: create_access_token(uid + 1000, key, timedelta(minutes=5)),
    "payload_swapped": lambda uid, key, _: (
        lambda good: ".".join([good.split(".")[0], _b64(_claims(uid + 1)), good.split(".")[2]])
    )(create_access_token(uid, key, timedelta(minutes=5))),
    "garbage": lambda uid, key, _: "not-a-jwt",
    "refresh_token_as_bearer": lambda uid, key, refresh: refresh,
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_tampered_access_tokens_are_rejected(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI, case: str
) -> None:
    user = await make_user("alice")
    refresh_token = (await api_login(client, "alice"))["refresh_token"]
    token = TAMPERED[case](user.id, app.state.settings.signing_key, refresh_token)
    problem(await client.get(ME, headers=bearer(token)), 401, "INVALID_CREDENTIALS")


@pytest.mark.parametrize("header", ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer    ", "Token abc"])
async def test_malformed_authorization_header_is_401(
    client: httpx.AsyncClient, header: str
) -> None:
    response = await client.get(ME, headers={"Authorization": header})
    problem(response, 401, "INVALID_CREDENTIALS")
    assert response.headers["www-authenticate"] == "Bearer"


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_and_the_old_token_is_spent(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    await make_user("alice")
    first = await api_login(client, "alice")
    response = await _refresh(client, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert response.headers["cache-control"] == "no-store"
    assert second["refresh_token"] != first["refresh_token"]
    assert second["token_type"] == "bearer"
    assert (await client.get(ME, headers=bearer(second["access_token"]))).status_code == 200
    # The new refresh token keeps rotating.
    third = await _refresh(client, second["refresh_token"])
    assert third.status_code == 200
    # Only digests are stored, never the token itself.
    async with app.state.database.snapshot() as session:
        hashes = set((await session.execute(select(RefreshToken.token_hash))).scalars())
        families = set((await session.execute(select(RefreshToken.family_id))).scalars())
    assert digest(first["refresh_token"]) in hashes
    assert first["refresh_token"] not in hashes
    assert len(families) == 1


async def test_reusing_a_spent_refresh_token_revokes_the_family(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    await make_user("alice")
    first = await api_login(client, "alice")
    other_login = await api_login(client, "alice")  # a separate family
    second = (await _refresh(client, first["refresh_token"])).json()
    problem(await _refresh(client, first["refresh_token"]), 401, "INVALID_CREDENTIALS")
    # The newer token of the same family was revoked with it ...
    problem(await _refresh(client, second["refresh_token"]), 401, "INVALID_CREDENTIALS")
    # ... but another login's family is untouched.
    assert (await _refresh(client, other_login["refresh_token"])).status_code == 200


async def test_concurrent_refresh_with_one_token_succeeds_once(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    await make_user("alice")
    token = (await api_login(client, "alice"))["refresh_token"]
    responses = await asyncio.gather(*(_refresh(client, token) for _ in range(3)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 401, 401], [r.text for r in responses]
    for r in responses:
        if r.status_code == 401:
            problem(r, 401, "INVALID_CREDENTIALS")


@pytest.mark.parametrize(
    "body",
    [{}, {"refresh_token": ""}, {"refresh_token": 5}, {"refresh_token": "a" * 513}, {"x": "y"}],
)
async def test_refresh_bad_bodies_are_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    problem(await client.post("/api/v1/auth/refresh", json=body), 422, "VALIDATION_ERROR")


async def test_refresh_with_invalid_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/refresh", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    problem(response, 400, "MALFORMED_REQUEST")


async def test_unknown_refresh_token_is_401(client: httpx.AsyncClient) -> None:
    problem(await _refresh(client, "made-up-token"), 401, "INVALID_CREDENTIALS")


async def test_expired_refresh_token_is_401(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    await make_user("alice")
    token = (await api_login(client, "alice"))["refresh_token"]
    await db_execute(
        app,
        update(RefreshToken)
        .where(RefreshToken.token_hash == digest(token))
        .values(expires_at=utcnow() - timedelta(seconds=1)),
    )
    problem(await _refresh(client, token), 401, "INVALID_CREDENTIALS")


async def test_refresh_tokens_expire_after_the_configured_days(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    await make_user("alice")
    before = utcnow()
    token = (await api_login(client, "alice"))["refresh_token"]
    async with app.state.database.snapshot() as session:
        expires_at = (
            await session.execute(
                select(RefreshToken.expires_at).where(RefreshToken.token_hash == digest(token))
            )
        ).scalar_one()
    days = timedelta(days=app.state.settings.refresh_token_expire_days)
    assert before + days - timedelta(seconds=5) <= expires_at <= utcnow() + days


async def test_logout_revokes_the_refresh_token_family(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    await make_user("alice")
    first = await api_login(client, "alice")
    second = (await _refresh(client, first["refresh_token"])).json()
    response = await client.post(
        "/api/v1/auth/logout", json={"refresh_token": second["refresh_token"]}
    )
    assert response.status_code == 204
    assert response.content == b""
    problem(await _refresh(client, second["refresh_token"]), 401, "INVALID_CREDENTIALS")


async def test_logout_with_unknown_token_is_still_204(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/logout", json={"refresh_token": "no-such-token"})
    assert response.status_code == 204


async def test_logout_bad_body_is_422(client: httpx.AsyncClient) -> None:
    problem(await client.post("/api/v1/auth/logout", json={}), 422, "VALIDATION_ERROR")


async def test_refresh_for_inactive_user_is_401(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user("alice")
    token = (await api_login(client, "alice"))["refresh_token"]
    # Deactivated behind the service's back: the refresh itself still checks the user.
    await db_execute(app, update(User).where(User.id == user.id).values(is_active=False))
    problem(await _refresh(client, token), 401, "INVALID_CREDENTIALS")


@pytest.mark.parametrize("username", ["a\x00b", "x" * 320, "alice\n"])
async def test_odd_usernames_at_login_are_401(
    client: httpx.AsyncClient, make_user: UserFactory, username: str
) -> None:
    await make_user("alice")
    problem(await api_login_response(client, username), 401, "INVALID_CREDENTIALS")
