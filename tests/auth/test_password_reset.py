"""Password reset by email, end to end against a real SMTP server on loopback (aiosmtpd).

The mail arrives; its link's token works once and for 30 minutes; a used, wrong or expired
token changes nothing; the request answers 202 whether or not the account exists; without
SMTP the mail goes to the log in development and the request answers 503 in production.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from sqlalchemy import select, update

from taskmanager.kit.config import load_settings
from taskmanager.kit.db import utcnow
from taskmanager.kit.mail import Mailer
from taskmanager.kit.security import digest
from taskmanager.models.auth import PasswordResetToken
from tests.conftest import TEST_PASSWORD, AppFactory, UserFactory, problem
from tests.factories import api_login, api_login_response, bearer, create_api_key, deactivate

API = "/api/v1"
RESET = f"{API}/auth/password-reset"
CONFIRM = f"{RESET}/confirm"
NEW_PASSWORD = "Violet-Tractor-88"
LINK = re.compile(r"https://app\.example\.com/reset\?token=([A-Za-z0-9_-]+)")


@dataclass
class Inbox:
    messages: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 Message accepted for delivery"

    async def wait_for(self, count: int) -> list[Message]:
        # Delivery is awaited by the request already; this only absorbs thread hand-over.
        for _ in range(200):
            if len(self.messages) >= count:
                break
            await asyncio.sleep(0.01)
        return self.messages


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
async def mail_app(
    make_app: AppFactory, smtp: tuple[Inbox, int]
) -> tuple[FastAPI, httpx.AsyncClient]:
    _, port = smtp
    return await make_app(
        smtp_url=f"smtp://127.0.0.1:{port}",
        mail_from="Taskmanager <noreply@example.com>",
        password_reset_url="https://app.example.com/reset?token={token}",
    )


def _token(message: Message) -> str:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    found = LINK.search(body.decode())
    assert found, body
    return found.group(1)


async def _confirm(client: httpx.AsyncClient, token: str, password: str = NEW_PASSWORD) -> Any:
    return await client.post(
        CONFIRM, json={"token": token, "new_password": password, "confirm_password": password}
    )


async def test_reset_end_to_end(
    mail_app: tuple[FastAPI, httpx.AsyncClient],
    smtp: tuple[Inbox, int],
    make_user: UserFactory,
) -> None:
    app, client = mail_app
    inbox, _ = smtp
    user = await make_user("alice")
    old_pair = await api_login(client, "alice")
    key = await create_api_key(app, user, ["tasks:read"])

    response = await client.post(RESET, json={"email": "Alice@Example.com"})
    assert response.status_code == 202
    [message] = await inbox.wait_for(1)
    assert message["To"] == "alice@example.com"
    assert message["X-Envelope-To"] == "alice@example.com"
    assert message["From"] == "Taskmanager <noreply@example.com>"
    assert "Reset" in message["Subject"]
    token = _token(message)

    # Hashed at rest: only the digest is stored, valid for 30 minutes.
    async with app.state.database.snapshot() as session:
        [row] = (await session.execute(select(PasswordResetToken))).scalars().all()
    assert row.token_hash == digest(token)
    assert token not in repr(row.__dict__)
    lifetime = row.expires_at - row.created_at
    assert 29 * 60 < lifetime.total_seconds() <= 30 * 60

    # A wrong token, and a token with a password the policy refuses, change nothing.
    body = problem(await _confirm(client, token[:-2] + "xx"), 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["body", "token"]
    body = problem(await _confirm(client, token, "Password1"), 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["body", "new_password"]
    body = problem(await _confirm(client, token, "My-alice-pass9"), 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["body", "new_password"]
    await api_login(client, "alice", TEST_PASSWORD)

    # The token works once.
    assert (await _confirm(client, token)).status_code == 204
    problem(await api_login_response(client, "alice", TEST_PASSWORD), 401, "INVALID_CREDENTIALS")
    await api_login(client, "alice", NEW_PASSWORD)
    # Every session ended as for a password change; API keys survive.
    problem(await client.get(f"{API}/users/me", headers=user.headers), 401, "INVALID_CREDENTIALS")
    old_access = bearer(old_pair["access_token"])
    problem(await client.get(f"{API}/users/me", headers=old_access), 401, "INVALID_CREDENTIALS")
    problem(
        await client.post(f"{API}/auth/refresh", json={"refresh_token": old_pair["refresh_token"]}),
        401,
        "INVALID_CREDENTIALS",
    )
    assert (await client.get(f"{API}/users/me", headers=key)).status_code == 200

    # Used: refused, and the password stays what the first use set.
    body = problem(await _confirm(client, token, "Another-Pass-77"), 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["body", "token"]
    await api_login(client, "alice", NEW_PASSWORD)


async def test_an_expired_token_changes_nothing(
    mail_app: tuple[FastAPI, httpx.AsyncClient],
    smtp: tuple[Inbox, int],
    make_user: UserFactory,
) -> None:
    app, client = mail_app
    inbox, _ = smtp
    await make_user("bob")
    assert (await client.post(RESET, json={"email": "bob@example.com"})).status_code == 202
    token = _token((await inbox.wait_for(1))[0])
    async with app.state.database.side_transaction() as session:
        await session.execute(
            update(PasswordResetToken)
            .where(PasswordResetToken.token_hash == digest(token))
            .values(expires_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    body = problem(await _confirm(client, token), 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["body", "token"]
    await api_login(client, "bob", TEST_PASSWORD)


async def test_a_later_reset_spends_the_earlier_links(
    mail_app: tuple[FastAPI, httpx.AsyncClient],
    smtp: tuple[Inbox, int],
    make_user: UserFactory,
) -> None:
    _, client = mail_app
    inbox, _ = smtp
    await make_user("cat")
    for _ in range(2):
        assert (await client.post(RESET, json={"email": "cat@example.com"})).status_code == 202
    first, second = (_token(m) for m in await inbox.wait_for(2))
    assert first != second
    assert (await _confirm(client, second)).status_code == 204
    problem(await _confirm(client, first, "Another-Pass-77"), 422, "VALIDATION_ERROR")
    await api_login(client, "cat", NEW_PASSWORD)


async def test_no_oracle_unknown_and_inactive_accounts_get_202_and_no_mail(
    mail_app: tuple[FastAPI, httpx.AsyncClient],
    smtp: tuple[Inbox, int],
    make_user: UserFactory,
) -> None:
    app, client = mail_app
    inbox, _ = smtp
    sleepy = await make_user("sleepy")
    await deactivate(app, sleepy)
    for email in ("nobody@example.com", "sleepy@example.com", "not an address"):
        response = await client.post(RESET, json={"email": email})
        assert response.status_code == 202
        assert response.content == b""
    await asyncio.sleep(0.05)
    assert inbox.messages == []


async def test_mails_per_account_are_capped(
    mail_app: tuple[FastAPI, httpx.AsyncClient],
    smtp: tuple[Inbox, int],
    make_user: UserFactory,
) -> None:
    _, client = mail_app
    inbox, _ = smtp
    await make_user("dee")
    for _ in range(5):
        assert (await client.post(RESET, json={"email": "dee@example.com"})).status_code == 202
    await inbox.wait_for(3)
    await asyncio.sleep(0.05)
    assert len(inbox.messages) == 3


async def test_without_smtp_development_logs_the_mail(
    make_app: AppFactory, make_user: UserFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    _, client = await make_app(env="development")
    await make_user("eve")
    assert (await client.post(RESET, json={"email": "eve@example.com"})).status_code == 202
    logged = [
        r.msg
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg.get("event") == "mail_written_to_log"
    ]
    assert len(logged) == 1
    assert logged[0]["to"] == "eve@example.com"
    token = re.search(r"token=([A-Za-z0-9_-]+)", logged[0]["text"])
    assert token is not None
    assert (await _confirm(client, token.group(1))).status_code == 204


async def test_without_smtp_production_answers_503(
    make_app: AppFactory, make_user: UserFactory, tmp_path: Path
) -> None:
    production = load_settings(
        env="production",
        secret_key="p" * 48,
        database_url="postgresql+asyncpg://db.example.com/taskmanager",
        data_dir=tmp_path,
        allowed_origins=["https://app.example.com"],
        metrics_token="m" * 32,
    )
    mailer = Mailer(production)
    assert not mailer.available
    app, client = await make_app()
    app.state.mailer = mailer  # this server's mail, as production without SMTP has it
    await make_user("fin")
    for email in ("fin@example.com", "nobody@example.com"):
        response = await client.post(RESET, json={"email": email})
        problem(response, 503, "SERVICE_UNAVAILABLE")
        assert response.headers["retry-after"]


async def test_smtp_failure_is_logged_and_still_202(
    make_app: AppFactory, make_user: UserFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    _, client = await make_app(
        smtp_url=f"smtp://127.0.0.1:{_free_port()}", mail_from="noreply@example.com"
    )
    await make_user("gil")
    assert (await client.post(RESET, json={"email": "gil@example.com"})).status_code == 202
    assert any(
        isinstance(r.msg, dict) and r.msg.get("event") == "password_reset_mail_failed"
        for r in caplog.records
    )
