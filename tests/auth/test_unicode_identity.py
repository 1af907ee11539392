"""One normaliser per identifier, used identically on registration, login, update and lookup.

Emails: NFC, the domain as IDNA U-labels, lower-case. Usernames: NFC, lower-case.
Passwords: NFKC before hashing and verifying (NIST SP 800-63B §5.1.1.2), and hashes made
before that rule keep working (and are upgraded at the next login).
"""

from __future__ import annotations

import unicodedata

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from taskmanager.kit.security import _password_hash
from taskmanager.models.users import User
from tests.conftest import UserFactory, problem
from tests.factories import API, STRONG_PASSWORD, api_register, db_execute

TOKEN = f"{API}/auth/token"


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(TOKEN, data={"username": username, "password": password})


@pytest.mark.parametrize(
    ("registered", "stored", "logins"),
    [
        # "José" typed with a combining accent (NFD) is stored composed (NFC).
        (
            "jose\u0301@example.com",
            "jos\u00e9@example.com",
            ["jose\u0301@example.com", "jos\u00e9@example.com", "JOS\u00c9@EXAMPLE.COM"],
        ),
        # A full-width domain is stored as its ASCII form.
        (
            "ann@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
            "ann@example.com",
            ["ann@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "ann@example.com"],
        ),
        # An IDNA A-label domain is stored as U-labels; both spellings log in.
        (
            "bo@xn--bcher-kva.example",
            "bo@b\u00fccher.example",
            ["bo@xn--bcher-kva.example", "bo@b\u00fccher.example", "BO@B\u00dcCHER.example"],
        ),
    ],
)
async def test_email_is_normalised_alike_at_registration_login_and_update(
    client: httpx.AsyncClient, app: FastAPI, registered: str, stored: str, logins: list[str]
) -> None:
    response = await api_register(client, "unicode_user", email=registered)
    assert response.status_code == 201, response.text
    assert response.json()["email"] == stored
    for login in logins:
        answer = await _login(client, login, STRONG_PASSWORD)
        assert answer.status_code == 200, (login, answer.text)
    token = (await _login(client, logins[0], STRONG_PASSWORD)).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    # The same address in another spelling is the same address: taken by someone else...
    other = await api_register(client, "someone_else", email=logins[-1])
    problem(other, 409, "CONFLICT")
    # ...and an update to another spelling of one's own address changes nothing.
    patched = await client.patch(
        f"{API}/users/me",
        json={"email": logins[-1], "current_password": STRONG_PASSWORD},
        headers=headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["email"] == stored


async def test_username_lookup_is_normalised_like_registration(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner = await make_user("owner")
    await make_user("bob_smith")
    project = await client.post(f"{API}/projects", json={"name": "p"}, headers=owner.headers)
    added = await client.post(
        f"{API}/projects/{project.json()['id']}/members",
        json={"username": "  BOB_Smith ", "role": "viewer"},
        headers=owner.headers,
    )
    assert added.status_code == 201, added.text
    assert added.json()["username"] == "bob_smith"


@pytest.mark.parametrize(
    "spelling",
    [
        "Cafe\u0301-Pa55",  # NFD: e + combining acute
        "Caf\u00e9-Pa55",  # NFC
        "Caf\u00e9-\uff30a55",  # full-width P: the same password under NFKC
    ],
)
async def test_passwords_are_compared_in_nfkc(
    client: httpx.AsyncClient, app: FastAPI, spelling: str
) -> None:
    registered = await api_register(client, "cafe_user", password="Caf\u00e9-Pa55")
    assert registered.status_code == 201, registered.text
    response = await _login(client, "cafe_user", spelling)
    assert response.status_code == 200, response.text
    problem(await _login(client, "cafe_user", "Cafe-Pa55"), 401, "INVALID_CREDENTIALS")
    async with app.state.database.snapshot() as session:
        stored = (
            await session.execute(select(User.password_hash).where(User.username == "cafe_user"))
        ).scalar_one()
    assert _password_hash.verify(unicodedata.normalize("NFKC", "Caf\u00e9-Pa55"), stored)


async def test_hashes_from_before_normalisation_still_log_in_and_are_upgraded(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory
) -> None:
    # A password stored raw (NFD, not NFKC-invariant) by an earlier version.
    legacy = "Le\u0301gacy-Pa55"
    user = await make_user("legacy_user")
    await db_execute(
        app,
        update(User).where(User.id == user.id).values(password_hash=_password_hash.hash(legacy)),
    )
    assert (await _login(client, "legacy_user", legacy)).status_code == 200
    async with app.state.database.snapshot() as session:
        upgraded = (
            await session.execute(select(User.password_hash).where(User.id == user.id))
        ).scalar_one()
    # Re-hashed in NFKC form: now every spelling works.
    assert _password_hash.verify(unicodedata.normalize("NFKC", legacy), upgraded)
    composed = unicodedata.normalize("NFC", legacy)
    assert (await _login(client, "legacy_user", composed)).status_code == 200
