"""``GET /users/{id}``: ``{id, username}`` to users who share a project with that user, the
full record to administrators (and to the user themselves), 404 to anyone else."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.conftest import UserFactory, problem
from tests.factories import API, add_member, create_api_key, create_project

FULL = {"id", "email", "username", "role", "is_active", "created_at"}


async def test_who_sees_whom(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, bob, carol = await make_user("alice"), await make_user("bob"), await make_user("carol")
    admin = await make_user("root", role="admin")
    project = await create_project(app, alice)
    await add_member(app, project, bob, "viewer")
    url = f"{API}/users/{bob.id}"

    shared = await client.get(url, headers=alice.headers)
    assert shared.status_code == 200
    assert shared.json() == {"id": bob.id, "username": "bob"}
    assert shared.headers["etag"]
    # Either direction of a shared project.
    back = await client.get(f"{API}/users/{alice.id}", headers=bob.headers)
    assert back.json() == {"id": alice.id, "username": "alice"}

    full = await client.get(url, headers=admin.headers)
    assert set(full.json()) == FULL
    assert full.json()["email"] == "bob@example.com"
    assert set((await client.get(url, headers=bob.headers)).json()) == FULL  # oneself

    # No shared project, or no such user: the same 404.
    stranger = problem(await client.get(url, headers=carol.headers), 404, "RESOURCE_NOT_FOUND")
    missing = problem(
        await client.get(f"{API}/users/999999", headers=carol.headers), 404, "RESOURCE_NOT_FOUND"
    )
    assert stranger["detail"].replace(str(bob.id), "N") == missing["detail"].replace("999999", "N")
    # An admin's key without the admin scope is an ordinary user.
    key = await create_api_key(app, admin, ["projects:read"])
    problem(await client.get(url, headers=key), 404, "RESOURCE_NOT_FOUND")


async def test_each_representation_has_its_own_etag(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """A strong ETag names one representation (RFC 9110 §8.8.3): ``{id, username}`` and the
    full record of the same version are told apart, so a caller whose view widens is not
    sent a 304 for the narrower copy, and that copy's ETag is no precondition for a write."""
    alice, bob = await make_user("alice"), await make_user("bob")
    admin = await make_user("root", role="admin")
    project = await create_project(app, alice)
    await add_member(app, project, bob, "viewer")
    url = f"{API}/users/{bob.id}"

    public = (await client.get(url, headers=alice.headers)).headers["etag"]
    full = (await client.get(url, headers=admin.headers)).headers["etag"]
    mine = (await client.get(f"{API}/users/me", headers=bob.headers)).headers["etag"]
    assert full == mine
    assert public != full

    def conditional(etag: str) -> dict[str, str]:
        return {"If-None-Match": etag}

    assert (await client.get(url, headers=alice.headers | conditional(public))).status_code == 304
    assert (await client.get(url, headers=admin.headers | conditional(full))).status_code == 304
    widened = await client.get(url, headers=admin.headers | conditional(public))
    assert widened.status_code == 200
    assert set(widened.json()) == FULL
    narrowed = await client.get(url, headers=alice.headers | conditional(full))
    assert narrowed.status_code == 200
    assert narrowed.json() == {"id": bob.id, "username": "bob"}
    problem(
        await client.patch(
            url, json={"role": "admin"}, headers=admin.headers | {"If-Match": public}
        ),
        412,
        "PRECONDITION_FAILED",
    )
    assert (
        await client.patch(url, json={"role": "admin"}, headers=admin.headers | {"If-Match": full})
    ).status_code == 200
    # A change is a new version of both.
    again = await client.get(url, headers=alice.headers | conditional(public))
    assert again.status_code == 200
    assert again.headers["etag"] not in (public, full)
