"""Rate limits: per user, per API key, per IP; stricter on auth; shared through Redis."""

from __future__ import annotations

import logging
import random
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import AppFactory, UserFactory, problem, redis_url_or_skip


def _add_ping(app: FastAPI) -> None:
    @app.get("/api/v1/_test/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}


def _client(app: FastAPI, ip: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 4321)), base_url="http://testserver"
    )


def _random_ip() -> str:
    # A fresh "client" per test keeps runs apart in a shared Redis.
    return "10." + ".".join(str(random.randint(0, 255)) for _ in range(3))


async def test_429_after_the_limit_with_headers(make_app: AppFactory) -> None:
    app, client = await make_app(rate_limit_enabled=True, rate_limit_default="3/minute")
    _add_ping(app)
    remaining = []
    for _ in range(3):
        response = await client.get("/api/v1/_test/ping")
        assert response.status_code == 200
        assert response.headers["ratelimit-limit"] == "3"
        assert 1 <= int(response.headers["ratelimit-reset"]) <= 60
        remaining.append(int(response.headers["ratelimit-remaining"]))
    assert remaining == [2, 1, 0]
    limited = await client.get("/api/v1/_test/ping")
    body = problem(limited, 429, "RATE_LIMITED")
    assert body["request_id"] == limited.headers["x-request-id"]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["ratelimit-remaining"] == "0"
    assert limited.headers["ratelimit-limit"] == "3"


async def test_ops_routes_are_not_limited(make_app: AppFactory) -> None:
    _, client = await make_app(rate_limit_enabled=True, rate_limit_default="2/minute")
    for path in ["/health"] * 4 + ["/ready", "/metrics", "/openapi.json", "/docs", "/redoc"]:
        response = await client.get(path)
        assert response.status_code == 200, path
        assert "ratelimit-limit" not in response.headers


async def test_disabled_means_no_limits(make_app: AppFactory) -> None:
    app, client = await make_app(rate_limit_enabled=False, rate_limit_default="1/minute")
    _add_ping(app)
    for _ in range(3):
        response = await client.get("/api/v1/_test/ping")
        assert response.status_code == 200
        assert "ratelimit-limit" not in response.headers


async def test_limits_are_per_user(make_app: AppFactory, make_user: UserFactory) -> None:
    app, client = await make_app(rate_limit_enabled=True, rate_limit_default="2/minute")
    _add_ping(app)
    alice, bob = await make_user("alice"), await make_user("bob")
    for _ in range(2):
        assert (await client.get("/api/v1/_test/ping", headers=alice.headers)).status_code == 200
    problem(await client.get("/api/v1/_test/ping", headers=alice.headers), 429, "RATE_LIMITED")
    # Same IP, another user: their own quota.
    assert (await client.get("/api/v1/_test/ping", headers=bob.headers)).status_code == 200
    # Anonymous callers from that IP are counted apart from both users.
    assert (await client.get("/api/v1/_test/ping")).status_code == 200


async def test_bad_token_is_counted_per_ip(make_app: AppFactory) -> None:
    app, client = await make_app(rate_limit_enabled=True, rate_limit_default="1/minute")
    _add_ping(app)
    assert (await client.get("/api/v1/_test/ping")).status_code == 200
    # An invalid token cannot buy a fresh quota.
    bad = {"Authorization": "Bearer not.a.token"}
    problem(await client.get("/api/v1/_test/ping", headers=bad), 429, "RATE_LIMITED")


async def test_auth_endpoints_have_their_own_stricter_limit(make_app: AppFactory) -> None:
    app, client = await make_app(
        rate_limit_enabled=True, rate_limit_default="100/minute", rate_limit_auth="2/minute"
    )
    _add_ping(app)
    form = {"username": "nobody", "password": "Wrong-passw0rd"}
    for _ in range(2):
        response = await client.post("/api/v1/auth/token", data=form)
        assert response.status_code == 401
        assert response.headers["ratelimit-limit"] == "2"
    problem(await client.post("/api/v1/auth/token", data=form), 429, "RATE_LIMITED")
    problem(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": "x" * 20}),
        429,
        "RATE_LIMITED",
    )
    problem(
        await client.post(
            "/api/v1/users",
            json={"email": "a@example.com", "username": "abc", "password": "Passw0rd!"},
        ),
        429,
        "RATE_LIMITED",
    )
    # Everything else is still under the default limit.
    response = await client.get("/api/v1/_test/ping")
    assert response.status_code == 200
    assert response.headers["ratelimit-limit"] == "100"


async def test_limits_shared_across_apps_through_redis(make_app: AppFactory) -> None:
    redis_url = redis_url_or_skip()
    settings: dict[str, Any] = {
        "rate_limit_enabled": True,
        "rate_limit_default": "3/minute",
        "redis_url": redis_url,
    }
    first_app, _ = await make_app(**settings)
    second_app, _ = await make_app(**settings)
    _add_ping(first_app)
    _add_ping(second_app)
    ip = _random_ip()
    async with _client(first_app, ip) as first, _client(second_app, ip) as second:
        assert (await first.get("/api/v1/_test/ping")).status_code == 200
        assert (await second.get("/api/v1/_test/ping")).status_code == 200
        response = await first.get("/api/v1/_test/ping")
        assert response.headers["ratelimit-remaining"] == "0"
        # The other process has seen all three.
        problem(await second.get("/api/v1/_test/ping"), 429, "RATE_LIMITED")


async def test_redis_down_degrades_to_in_process_limits_and_ready_reports_it(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app, client = await make_app(
        rate_limit_enabled=True,
        rate_limit_default="2/minute",
        redis_url="redis://127.0.0.1:1/0",  # nothing listens there
    )
    _add_ping(app)
    statuses = []
    for _ in range(4):
        response = await client.get("/api/v1/_test/ping")
        statuses.append(response.status_code)
        assert response.headers["ratelimit-limit"] == "2"
    # Still limited — by this process alone — rather than open or failing.
    assert statuses == [200, 200, 429, 429]
    warnings = [
        r
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg.get("event") == "rate_limit_storage_unavailable"
    ]
    assert len(warnings) == 1  # not once per request
    ready = await client.get("/ready")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "not_ready",
        "checks": {"database": "healthy", "redis": "unhealthy"},
    }
