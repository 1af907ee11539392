"""One access-log line per request, with the request id on every line and no secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog
from fastapi import FastAPI

from taskmanager.kit.logging import configure_logging, log_formatter, redact_query
from tests.conftest import AppFactory, UserFactory


@pytest.fixture(autouse=True)
def _restore_logging(request: pytest.FixtureRequest) -> Iterator[None]:
    """These tests raise the level or switch the format; put the suite's config back."""
    app: FastAPI | None = request.getfixturevalue("app") if "app" in request.fixturenames else None
    yield
    if app is not None:
        configure_logging(app.state.settings)


def _rendered(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    formatter = log_formatter()
    assert formatter is not None
    return [orjson.loads(formatter.format(record)) for record in caplog.records]


def _add_routes(app: FastAPI) -> None:
    log = structlog.get_logger("taskmanager.test")

    @app.get("/api/v1/_test/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        log.info("inside_handler", password="hunter2", headers={"Authorization": "Bearer x"})
        return {"id": item_id}


async def test_access_log_line(
    make_app: AppFactory, make_user: UserFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app, client = await make_app(log_level="INFO")
    _add_routes(app)
    user = await make_user()
    response = await client.get(
        "/api/v1/users/me",
        headers={**user.headers, "X-Request-ID": "req-log-1", "Cookie": "session=abc"},
    )
    assert response.status_code == 200
    # Unknown parameters are refused (422), and still logged with credentials redacted.
    refused = await client.get(
        "/api/v1/users/me?token=s3cr3t-token&api_key=k3y&page=2",
        headers={**user.headers, "X-Request-ID": "req-log-2"},
    )
    assert refused.status_code == 422
    lines = [line for line in _rendered(caplog) if line.get("request_id") == "req-log-1"]
    access = [line for line in lines if line["logger"] == "taskmanager.access"]
    assert len(access) == 1
    entry = access[0]
    assert entry["method"] == "GET"
    assert entry["route"] == "/api/v1/users/me"
    assert entry["status"] == 200
    assert entry["duration_ms"] >= 0
    assert entry["user_id"] == user.id
    assert entry["client"] == "127.0.0.1"
    assert entry["query"] is None
    (refused_entry,) = [
        line
        for line in _rendered(caplog)
        if line.get("request_id") == "req-log-2" and line["logger"] == "taskmanager.access"
    ]
    assert refused_entry["status"] == 422
    assert refused_entry["route"] == "/api/v1/users/me"
    assert "page=2" in refused_entry["query"]
    assert "s3cr3t-token" not in refused_entry["query"]
    assert "k3y" not in refused_entry["query"]
    lines += [line for line in _rendered(caplog) if line.get("request_id") == "req-log-2"]
    raw = orjson.dumps(lines).decode()
    for secret in ("s3cr3t-token", "k3y", user.token, "session=abc"):
        assert secret not in raw


async def test_every_line_carries_the_request_id_and_secrets_are_masked(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app, client = await make_app(log_level="INFO")
    _add_routes(app)
    await client.get("/api/v1/_test/items/7", headers={"X-Request-ID": "req-log-2"})
    lines = _rendered(caplog)
    inside = [line for line in lines if line["event"] == "inside_handler"]
    assert len(inside) == 1
    assert inside[0]["request_id"] == "req-log-2"
    assert inside[0]["password"] == "[REDACTED]"
    assert inside[0]["headers"]["Authorization"] == "[REDACTED]"
    access = [line for line in lines if line["logger"] == "taskmanager.access"]
    assert access[-1]["route"] == "/api/v1/_test/items/{item_id}"
    assert "hunter2" not in orjson.dumps(lines).decode()


async def test_login_password_never_logged(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, client = await make_app(log_level="DEBUG")
    await client.post(
        "/api/v1/auth/token", data={"username": "nobody", "password": "Sup3r-secret-pw"}
    )
    formatter = log_formatter()
    assert formatter is not None
    assert all("Sup3r-secret-pw" not in formatter.format(r) for r in caplog.records)


def test_redact_query() -> None:
    assert redact_query("") == ""
    assert redact_query("page=2&sort=asc") == "page=2&sort=asc"
    redacted = redact_query("token=abc&refresh_token=def&code=ghi&q=hello&X-Api-Key=jkl")
    for secret in ("abc", "def", "ghi", "jkl"):
        assert f"={secret}" not in redacted
    assert "q=hello" in redacted


async def test_console_format(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    _, client = await make_app(log_level="INFO", log_format="console")
    await client.get("/health", headers={"X-Request-ID": "req-console"})
    formatter = log_formatter()
    assert formatter is not None
    text = "\n".join(formatter.format(r) for r in caplog.records)
    assert "req-console" in text
    assert not text.lstrip().startswith("{")
