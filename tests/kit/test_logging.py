"""One access-log line per request, with the request id on every line and no secrets."""

from __future__ import annotations

import logging
import re
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


def _access_line(caplog: pytest.LogCaptureFixture, request_id: str) -> dict[str, Any]:
    """The one access-log line of the request with this X-Request-ID."""
    [entry] = [
        line
        for line in _rendered(caplog)
        if line.get("request_id") == request_id and line["logger"] == "taskmanager.access"
    ]
    return entry


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
    # /users/me declares no query parameters: every value is redacted (allow-list).
    assert refused_entry["query"] == "token=[REDACTED]&api_key=[REDACTED]&page=[REDACTED]"
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
    declared = frozenset({"page", "sort", "q", "token", "code", "cursor"})
    assert redact_query("", declared) == ""
    assert redact_query("page=2&sort=asc", declared) == "page=2&sort=asc"
    redacted = redact_query("token=abc&refresh_token=def&code=ghi&q=hello&X-Api-Key=jkl", declared)
    for secret in ("abc", "def", "ghi", "jkl"):
        assert f"={secret}" not in redacted
    assert "q=hello" in redacted
    # Nothing declared: nothing in clear.
    assert redact_query("page=2&q=hello") == "page=[REDACTED]&q=[REDACTED]"


async def test_console_format(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    _, client = await make_app(log_level="INFO", log_format="console")
    await client.get("/health", headers={"X-Request-ID": "req-console"})
    formatter = log_formatter()
    assert formatter is not None
    text = "\n".join(formatter.format(r) for r in caplog.records)
    assert "req-console" in text
    assert not text.lstrip().startswith("{")


@pytest.mark.parametrize(
    "name",
    ["jwt", "auth", "bearer", "pwd", "passwd", "sig", "session_id", "a", "q_extra", "X-Custom"],
)
async def test_undeclared_query_parameters_are_redacted(
    make_app: AppFactory, make_user: UserFactory, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.INFO)
    _, client = await make_app(log_level="INFO")
    user = await make_user()
    secret = "leaked-S3CRET-value"
    request_id = f"req-odd-{name}"
    await client.get(
        "/api/v1/tasks",
        params={name: secret, "status": "pending"},
        headers={**user.headers, "X-Request-ID": request_id},
    )
    entry = _access_line(caplog, request_id)
    assert secret not in entry["query"]
    assert f"{name}=[REDACTED]" in entry["query"]
    assert "status=pending" in entry["query"]  # declared by the route: in clear


async def test_a_semicolon_cannot_smuggle_a_token_and_odd_names_are_masked(
    make_app: AppFactory, make_user: UserFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, client = await make_app(log_level="INFO")
    user = await make_user()
    await client.get(
        "/api/v1/tasks?status=pending;token=abc123secret&tm_Qx7bY2zSECRETKEY0123456789abcdefghij=1",
        headers={**user.headers, "X-Request-ID": "req-smuggle"},
    )
    entry = _access_line(caplog, "req-smuggle")
    assert "abc123secret" not in entry["query"]
    assert "SECRETKEY" not in entry["query"]


async def test_cursors_are_logged_as_a_short_digest(
    make_app: AppFactory, make_user: UserFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, client = await make_app(log_level="INFO")
    user = await make_user()
    for n in range(3):
        created = await client.post(
            "/api/v1/tasks", json={"title": f"Confidential merger {n}"}, headers=user.headers
        )
        assert created.status_code == 201
    first = await client.get(
        "/api/v1/tasks", params={"limit": 1, "sort_by": "title"}, headers=user.headers
    )
    cursor = first.json()["next_cursor"]
    assert cursor
    await client.get(
        "/api/v1/tasks",
        params={"cursor": cursor},
        headers={**user.headers, "X-Request-ID": "req-cursor"},
    )
    entry = _access_line(caplog, "req-cursor")
    assert cursor not in entry["query"]
    assert re.fullmatch(r"cursor=sha256:[0-9a-f]{12}", entry["query"]), entry["query"]
    assert "Confidential" not in orjson.dumps(entry).decode()


async def test_unmatched_routes_log_no_query_values(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, client = await make_app(log_level="INFO")
    await client.get(
        "/api/v1/nowhere", params={"q": "hello"}, headers={"X-Request-ID": "req-nowhere"}
    )
    entry = _access_line(caplog, "req-nowhere")
    assert entry["query"] == "q=[REDACTED]"
