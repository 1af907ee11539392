"""Administration of users: listing, roles, (de)activation and its immediate effect."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import UserFactory, problem
from tests.factories import api_create_key, api_login, bearer

USERS = "/api/v1/users"
ME = "/api/v1/users/me"


async def test_list_users_is_paginated_and_ordered(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    admin = await make_user("root", role="admin")
    others = [await make_user(f"user{i}") for i in range(4)]
    response = await client.get(USERS, headers=admin.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 5
    assert (body["skip"], body["limit"]) == (0, 20)
    assert [u["id"] for u in body["items"]] == [admin.id] + [u.id for u in others]
    assert all("password" not in str(item) for item in body["items"])
    page = (await client.get(USERS, params={"skip": 1, "limit": 2}, headers=admin.headers)).json()
    assert [u["id"] for u in page["items"]] == [others[0].id, others[1].id]
    assert (page["total"], page["skip"], page["limit"]) == (5, 1, 2)
    for skip in (50, 2**53 - 1):  # the largest offset (I-JSON safe integers)
        beyond = (await client.get(USERS, params={"skip": skip}, headers=admin.headers)).json()
        assert beyond["items"] == []
        assert beyond["total"] == 5


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"skip": -1}, {"limit": "ten"}, {"skip": 2**53}],
)
async def test_list_users_bad_params_are_422(
    client: httpx.AsyncClient, make_user: UserFactory, params: dict[str, Any]
) -> None:
    admin = await make_user("root", role="admin")
    problem(await client.get(USERS, params=params, headers=admin.headers), 422, "VALIDATION_ERROR")


async def test_non_admins_cannot_administer(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user("mallory")
    victim = await make_user("victim")
    problem(await client.get(USERS, headers=user.headers), 403, "FORBIDDEN")
    for body in ({"role": "admin"}, {"is_active": False}):
        problem(
            await client.patch(f"{USERS}/{victim.id}", json=body, headers=user.headers),
            403,
            "FORBIDDEN",
        )
        problem(
            await client.patch(f"{USERS}/{user.id}", json=body, headers=user.headers),
            403,
            "FORBIDDEN",
        )
    assert (await client.get(ME, headers=user.headers)).json()["role"] == "user"
    assert (await client.get(ME, headers=victim.headers)).status_code == 200
    problem(await client.get(USERS), 401, "NOT_AUTHENTICATED")


async def test_admin_rights_through_an_api_key_need_the_admin_scope(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    admin = await make_user("root", role="admin")
    scoped = await api_create_key(client, admin.headers, ["admin"])
    unscoped = await api_create_key(client, admin.headers, ["tasks:read"])
    assert (await client.get(USERS, headers={"X-API-Key": scoped["key"]})).status_code == 200
    problem(await client.get(USERS, headers={"X-API-Key": unscoped["key"]}), 403, "FORBIDDEN")


async def test_promote_and_demote(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    admin = await make_user("root", role="admin")
    user = await make_user("quinn")
    response = await client.patch(
        f"{USERS}/{user.id}", json={"role": "admin"}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"
    # The promotion applies to the access token already issued.
    assert (await client.get(USERS, headers=user.headers)).status_code == 200
    # With two admins, one may step down.
    response = await client.patch(
        f"{USERS}/{admin.id}", json={"role": "user"}, headers=user.headers
    )
    assert response.status_code == 200
    problem(await client.get(USERS, headers=admin.headers), 403, "FORBIDDEN")


async def test_last_active_admin_is_kept(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    admin = await make_user("root", role="admin")
    await make_user("former", role="admin", is_active=False)
    for body in ({"role": "user"}, {"is_active": False}, {"role": "user", "is_active": False}):
        problem(
            await client.patch(f"{USERS}/{admin.id}", json=body, headers=admin.headers),
            409,
            "CONFLICT",
        )
    me = (await client.get(ME, headers=admin.headers)).json()
    assert (me["role"], me["is_active"]) == ("admin", True)
    # A no-op on the last admin is fine.
    response = await client.patch(
        f"{USERS}/{admin.id}", json={"role": "admin", "is_active": True}, headers=admin.headers
    )
    assert response.status_code == 200


async def test_two_admins_demoting_each_other_at_once_keep_one(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    first = await make_user("first", role="admin")
    second = await make_user("second", role="admin")
    responses = await asyncio.gather(
        client.patch(f"{USERS}/{second.id}", json={"role": "user"}, headers=first.headers),
        client.patch(f"{USERS}/{first.id}", json={"role": "user"}, headers=second.headers),
    )
    statuses = sorted(r.status_code for r in responses)
    # The second request either sees its caller demoted (403) or the last-admin rule (409).
    assert statuses[0] == 200
    assert statuses[1] in (403, 409), [r.text for r in responses]
    roles = {(await client.get(ME, headers=u.headers)).json()["role"] for u in (first, second)}
    assert roles == {"admin", "user"}


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "MALFORMED_REQUEST"),
        ({"role": "superuser"}, 422, "VALIDATION_ERROR"),
        ({"role": None}, 422, "VALIDATION_ERROR"),
        ({"is_active": "maybe"}, 422, "VALIDATION_ERROR"),
        ({"is_active": None}, 422, "VALIDATION_ERROR"),
        ({"username": "renamed"}, 422, "VALIDATION_ERROR"),
        ({"email": "x@example.com"}, 422, "VALIDATION_ERROR"),
        ({"id": 7}, 422, "VALIDATION_ERROR"),
    ],
)
async def test_admin_patch_bad_bodies_change_nothing(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    admin = await make_user("root", role="admin")
    user = await make_user("rita")
    before = (await client.get(ME, headers=user.headers)).json()
    response = await client.patch(f"{USERS}/{user.id}", json=body, headers=admin.headers)
    problem(response, status, code)
    assert (await client.get(ME, headers=user.headers)).json() == before


@pytest.mark.parametrize("user_id", ["999999", "0", "-1", "abc", str(2**63)])
async def test_admin_patch_unknown_or_invalid_id(
    client: httpx.AsyncClient, make_user: UserFactory, user_id: str
) -> None:
    admin = await make_user("root", role="admin")
    response = await client.patch(
        f"{USERS}/{user_id}", json={"is_active": False}, headers=admin.headers
    )
    if user_id in ("999999", "-1", "abc"):
        # No such user; and no digits, no user id: that path names nothing.
        problem(response, 404, "RESOURCE_NOT_FOUND")
    else:
        problem(response, 422, "VALIDATION_ERROR")


async def test_deactivation_locks_out_every_credential_at_once(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    admin = await make_user("root", role="admin")
    user = await make_user("sam")
    tokens = await api_login(client, "sam")
    key = await api_create_key(client, bearer(tokens["access_token"]), ["tasks:read"])
    access = bearer(tokens["access_token"])
    api_key = {"X-API-Key": key["key"]}
    assert (await client.get(ME, headers=access)).status_code == 200
    assert (await client.get(ME, headers=api_key)).status_code == 200

    response = await client.patch(
        f"{USERS}/{user.id}", json={"is_active": False}, headers=admin.headers
    )
    assert response.status_code == 200
    assert response.json()["is_active"] is False

    problem(await client.get(ME, headers=access), 401, "INVALID_CREDENTIALS")
    problem(await client.get(ME, headers=user.headers), 401, "INVALID_CREDENTIALS")
    problem(await client.get(ME, headers=api_key), 401, "INVALID_CREDENTIALS")
    problem(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
        401,
        "INVALID_CREDENTIALS",
    )
    problem(
        await client.post("/api/v1/auth/token", data={"username": "sam", "password": "x"}),
        401,
        "INVALID_CREDENTIALS",
    )

    response = await client.patch(
        f"{USERS}/{user.id}", json={"is_active": True}, headers=admin.headers
    )
    assert response.json()["is_active"] is True
    # Keys work again; access tokens issued before the reactivation and the refresh tokens
    # revoked on deactivation do not (API.md §3).
    problem(await client.get(ME, headers=access), 401, "INVALID_CREDENTIALS")
    problem(await client.get(ME, headers=user.headers), 401, "INVALID_CREDENTIALS")
    assert (await client.get(ME, headers=api_key)).status_code == 200
    problem(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
        401,
        "INVALID_CREDENTIALS",
    )
    await api_login(client, "sam")


async def test_admin_listing_shows_deactivated_users(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    admin = await make_user("root", role="admin")
    user = await make_user("tess", is_active=False)
    items = (await client.get(USERS, headers=admin.headers)).json()["items"]
    assert {u["id"]: u["is_active"] for u in items} == {admin.id: True, user.id: False}
