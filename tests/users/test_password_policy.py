"""New passwords refuse what attackers try first, and say why (finding 8).

The rules apply wherever a password is chosen (registration, change, reset); logins never
re-judge a stored password, so accounts created under an older policy keep working.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from taskmanager.kit.passwords import password_problem
from tests.conftest import TEST_PASSWORD, UserFactory, problem
from tests.factories import api_login, api_register, db_execute

API = "/api/v1"


def _password_error(body: dict[str, object]) -> str:
    errors = body["errors"]
    assert isinstance(errors, list)
    messages = [e["msg"] for e in errors if e["loc"] == ["body", "password"]]
    assert messages, errors
    return str(messages[0])


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("Password1", "too easy to guess"),
        ("Passw0rd", "too easy to guess"),
        ("Qwerty123", "too easy to guess"),
        ("Aaaaaaa1", "too easy to guess"),
        ("Welcome1", "too easy to guess"),
        ("Zoe-the-Zebra9", "username"),
        ("Xx-privatebox-1", "email"),
        ("short1A", "at least 8"),
        ("nouppercase1", "upper-case"),
        ("A" + "b1" * 64, "at most 128"),
        # Length is counted after NFKC: each "ﬀ" ligature is two letters.
        ("\ufb00" * 62 + "Qz9-xy", "at most 128"),
    ],
)
async def test_registration_refuses_guessable_passwords_with_the_reason(
    client: httpx.AsyncClient, app: FastAPI, password: str, reason: str
) -> None:
    response = await api_register(client, "zoe", email="privatebox@example.com", password=password)
    message = _password_error(problem(response, 422, "VALIDATION_ERROR"))
    assert reason in message, message


async def test_a_strong_password_is_accepted(client: httpx.AsyncClient, app: FastAPI) -> None:
    response = await api_register(client, "yan", password="Violet-Tractor-88")
    assert response.status_code == 201, response.text
    await api_login(client, "yan", "Violet-Tractor-88")


async def test_password_change_applies_the_policy_with_the_account_identifiers(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user("walter")
    for new, reason in (("Password1", "too easy"), ("My-walter-Pass9", "username")):
        response = await client.post(
            f"{API}/users/me/password",
            json={
                "current_password": TEST_PASSWORD,
                "new_password": new,
                "confirm_password": new,
            },
            headers=user.headers,
        )
        body = problem(response, 422, "VALIDATION_ERROR")
        assert any(
            e["loc"] == ["body", "new_password"] and reason in e["msg"] for e in body["errors"]
        ), body
    await api_login(client, "walter", TEST_PASSWORD)  # unchanged


async def test_existing_weak_passwords_still_log_in(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    from sqlalchemy import update

    from taskmanager.kit.security import hash_password
    from taskmanager.models.users import User

    user = await make_user("legacy")
    await db_execute(
        app,
        update(User)
        .where(User.id == user.id)
        .values(password_hash=await hash_password("Password1")),
    )
    await api_login(client, "legacy", "Password1")


def test_the_policy_function_is_the_one_place() -> None:
    assert password_problem("Violet-Tractor-88") is None
    assert password_problem("Violet-Tractor-88", username="violet") == (
        "must not contain the username"
    )
    assert password_problem("Violet-Tractor-88", email="tractor@example.com") == (
        "must not contain the email address's local part"
    )
    # Identifiers shorter than 3 characters are not searched for.
    assert password_problem("Violet-Tractor-88", email="vi@example.com") is None
