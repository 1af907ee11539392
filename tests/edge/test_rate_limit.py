"""Rate limits: per user, per API key, per IP; stricter on auth; shared through Redis."""

from __future__ import annotations

import logging
import random
import secrets
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from taskmanager.kit.db import utcnow
from taskmanager.models.api_keys import ApiKey
from tests.conftest import TEST_PASSWORD, AppFactory, UserFactory, problem, redis_url_or_skip
from tests.factories import api_login, create_api_key, db_execute


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


# ---- identity only from verified credentials (finding 2) -----------------------------------


async def test_random_api_keys_are_counted_per_address(make_app: AppFactory) -> None:
    app, _ = await make_app(
        rate_limit_enabled=True, rate_limit_default="3/minute", rate_limit_auth="100/minute"
    )
    _add_ping(app)
    async with _client(app, _random_ip()) as client:
        statuses = []
        for _ in range(5):
            key = {"X-API-Key": f"tm_{secrets.token_urlsafe(24)}"}  # a fresh made-up key
            statuses.append((await client.get("/api/v1/_test/ping", headers=key)).status_code)
        assert statuses == [200, 200, 200, 429, 429]
        # The address's anonymous quota is the one spent.
        problem(await client.get("/api/v1/_test/ping"), 429, "RATE_LIMITED")
        # Made-up keys on a real route are 401 first, then 429 the same way.
        response = await client.get(
            "/api/v1/tasks", headers={"X-API-Key": f"tm_{secrets.token_urlsafe(24)}"}
        )
        problem(response, 429, "RATE_LIMITED")


async def test_every_credential_of_a_user_shares_one_bucket(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, _ = await make_app(rate_limit_enabled=True, rate_limit_default="4/minute")
    alice = await make_user("alice")
    first = await create_api_key(app, alice, ["tasks:read"])
    second = await create_api_key(app, alice, ["tasks:read"])
    async with _client(app, _random_ip()) as client:
        remaining = []
        for headers in (first, second, alice.headers, first):
            response = await client.get("/api/v1/tasks", headers=headers)
            assert response.status_code == 200, response.text
            remaining.append(int(response.headers["ratelimit-remaining"]))
        assert remaining == [3, 2, 1, 0]
        for headers in (second, alice.headers):
            problem(await client.get("/api/v1/tasks", headers=headers), 429, "RATE_LIMITED")
    # Another address, same user: still the user's bucket.
    async with _client(app, _random_ip()) as elsewhere:
        problem(await elsewhere.get("/api/v1/tasks", headers=first), 429, "RATE_LIMITED")


async def test_a_revoked_key_is_not_served_from_the_limiters_cache(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, client = await make_app(rate_limit_enabled=True, rate_limit_default="100/minute")
    alice = await make_user("alice")
    key = await create_api_key(app, alice, ["tasks:read"])
    assert (await client.get("/api/v1/tasks", headers=key)).status_code == 200
    await db_execute(app, update(ApiKey).values(revoked_at=utcnow()))
    problem(await client.get("/api/v1/tasks", headers=key), 401, "INVALID_CREDENTIALS")


async def test_failed_authentications_count_toward_the_auth_limit(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, _ = await make_app(
        rate_limit_enabled=True, rate_limit_default="100/minute", rate_limit_auth="3/minute"
    )
    alice = await make_user("alice")
    address = _random_ip()
    async with _client(app, address) as client:
        # A bad signature, a token ended by "log out everywhere", a made-up key.
        problem(
            await client.get("/api/v1/tasks", headers={"Authorization": "Bearer x.y.z"}),
            401,
            "INVALID_CREDENTIALS",
        )
        response = await client.post("/api/v1/auth/logout-all", headers=alice.headers)
        assert response.status_code == 204
        problem(
            await client.get("/api/v1/tasks", headers=alice.headers), 401, "INVALID_CREDENTIALS"
        )
        problem(
            await client.get("/api/v1/tasks", headers={"X-API-Key": "tm_made_up"}),
            401,
            "INVALID_CREDENTIALS",
        )
        # The address has failed three times: more bad credentials get 429 at once.
        problem(
            await client.get("/api/v1/tasks", headers={"X-API-Key": "tm_made_up_too"}),
            429,
            "RATE_LIMITED",
        )
    # A good credential from the same address is still served.
    async with _client(app, "127.0.0.1") as elsewhere:
        fresh = await api_login(elsewhere, "alice")
    async with _client(app, address) as client:
        response = await client.get(
            "/api/v1/tasks", headers={"Authorization": f"Bearer {fresh['access_token']}"}
        )
        assert response.status_code == 200, response.text


# ---- logins per account, proxy trust, step-up routes (finding 3) ---------------------------


def _forwarded(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_login_is_limited_per_account_across_rotating_forwarded_addresses(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, _ = await make_app(
        rate_limit_enabled=True,
        rate_limit_auth="1000/minute",
        rate_limit_login_address="5/minute",
        rate_limit_login_account="3/minute",
        forwarded_allow_ips="127.0.0.1",
    )
    await make_user("alice")
    await make_user("bob")
    async with _client(app, "127.0.0.1") as proxy:  # a trusted reverse proxy
        # Alice logs in from home once: that address is known to her account from now on.
        home = _forwarded("198.51.100.7")
        ok = await proxy.post(
            "/api/v1/auth/token", data=_form("alice", TEST_PASSWORD), headers=home
        )
        assert ok.status_code == 200, ok.text
        # An attacker guesses from a new address each time (a botnet, rotating proxies): with
        # the home login (not yet known when it came), the account's ceiling of 3 is reached.
        statuses = []
        for n in range(5):
            response = await proxy.post(
                "/api/v1/auth/token",
                data=_form("alice", f"Guess-{n}-Pass"),
                headers=_forwarded(f"203.0.113.{n + 1}"),
            )
            statuses.append(response.status_code)
        assert statuses == [401, 401, 429, 429, 429]
        limited = problem(response, 429, "RATE_LIMITED")
        assert "account" in limited["detail"]
        assert 1 <= int(response.headers["retry-after"]) <= 60
        # Even the right password from a new address waits...
        response = await proxy.post(
            "/api/v1/auth/token",
            data=_form("alice", TEST_PASSWORD),
            headers=_forwarded("203.0.113.99"),
        )
        problem(response, 429, "RATE_LIMITED")
        # ...but the real user, from an address she logged in from before, is not locked out.
        ok = await proxy.post(
            "/api/v1/auth/token", data=_form("alice", TEST_PASSWORD), headers=home
        )
        assert ok.status_code == 200, ok.text
        # Other accounts are unaffected; an unknown account is throttled like a real one.
        response = await proxy.post(
            "/api/v1/auth/token",
            data=_form("bob", TEST_PASSWORD),
            headers=_forwarded("203.0.113.1"),
        )
        assert response.status_code == 200
        ghosts = [
            (
                await proxy.post(
                    "/api/v1/auth/token",
                    data=_form("ghost", "Guess-Pass-1"),
                    headers=_forwarded(f"192.0.2.{n + 1}"),
                )
            ).status_code
            for n in range(5)
        ]
        assert ghosts == [401, 401, 401, 429, 429]


async def test_login_is_limited_per_account_and_address(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, _ = await make_app(
        rate_limit_enabled=True,
        rate_limit_auth="1000/minute",
        rate_limit_login_address="2/minute",
        rate_limit_login_account="100/minute",
    )
    await make_user("alice")
    async with _client(app, _random_ip()) as attacker, _client(app, _random_ip()) as owner:
        for _ in range(2):
            response = await attacker.post("/api/v1/auth/token", data=_form("alice", "Wr0ng-pass"))
            assert response.status_code == 401
        problem(
            await attacker.post("/api/v1/auth/token", data=_form("alice", TEST_PASSWORD)),
            429,
            "RATE_LIMITED",
        )
        # The owner, elsewhere, is untouched by the attacker's failures.
        ok = await owner.post("/api/v1/auth/token", data=_form("alice", TEST_PASSWORD))
        assert ok.status_code == 200


async def test_forwarded_for_is_ignored_from_untrusted_peers(make_app: AppFactory) -> None:
    app, _ = await make_app(
        rate_limit_enabled=True, rate_limit_auth="2/minute", forwarded_allow_ips="127.0.0.1"
    )
    async with _client(app, _random_ip()) as direct:  # not a trusted proxy
        statuses = [
            (
                await direct.post(
                    "/api/v1/auth/token",
                    data=_form("nobody", "Wr0ng-pass"),
                    headers=_forwarded(f"203.0.113.{n + 1}"),
                )
            ).status_code
            for n in range(3)
        ]
    # Spoofed addresses buy nothing: all three count against the real peer.
    assert statuses == [401, 401, 429]


async def test_forwarded_for_is_believed_from_a_configured_proxy_network(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app, _ = await make_app(
        rate_limit_enabled=True,
        rate_limit_auth="1/minute",
        forwarded_allow_ips="10.20.0.0/16",
        log_level="INFO",
    )
    async with _client(app, "10.20.3.4") as proxy:
        for n in range(3):
            response = await proxy.post(
                "/api/v1/auth/token",
                data=_form("nobody", "Wr0ng-pass"),
                headers=_forwarded(f"203.0.113.{n + 1}"),
            )
            assert response.status_code == 401  # three clients, one attempt each
    clients = {
        r.msg["client"]
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg.get("event") == "request"
    }
    assert clients == {"203.0.113.1", "203.0.113.2", "203.0.113.3"}


async def test_password_checks_of_signed_in_users_count_under_the_auth_limit(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, _ = await make_app(
        rate_limit_enabled=True, rate_limit_default="100/minute", rate_limit_auth="2/minute"
    )
    wrong = "Wr0ng-pass"
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        (
            "POST",
            "/api/v1/users/me/password",
            {
                "current_password": wrong,
                "new_password": "Violet-Tractor-88",
                "confirm_password": "Violet-Tractor-88",
            },
        ),
        (
            "POST",
            "/api/v1/api-keys",
            {"name": "k", "scopes": ["tasks:read"], "current_password": wrong},
        ),
        ("PATCH", "/api/v1/users/me", {"username": "eve", "current_password": wrong}),
        ("DELETE", "/api/v1/users/me", {"current_password": wrong}),
    ]
    for method, path, body in attempts:
        user = await make_user()
        for _ in range(2):
            # Each guess from a new address: the count is the user's, not the address's.
            async with _client(app, _random_ip()) as client:
                response = await client.request(method, path, json=body, headers=user.headers)
            assert response.status_code == 401, (path, response.text)
            assert response.headers["ratelimit-limit"] == "2"
        async with _client(app, _random_ip()) as client:
            response = await client.request(method, path, json=body, headers=user.headers)
        problem(response, 429, "RATE_LIMITED")


def _form(username: str, password: str) -> dict[str, str]:
    return {"username": username, "password": password}
