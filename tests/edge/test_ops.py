"""/health, /ready, /metrics."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from taskmanager.kit.outbox import sequence
from tests.conftest import AppFactory, UserFactory, problem, redis_url_or_skip


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy"}


async def test_ready_without_redis(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "healthy", "redis": "disabled"},
    }


async def test_ready_with_redis(make_app: AppFactory) -> None:
    _, client = await make_app(redis_url=redis_url_or_skip())
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "healthy", "redis": "healthy"}


async def test_ready_reports_a_dead_database(make_app: AppFactory, tmp_path: object) -> None:
    app, client = await make_app()
    await app.state.database.dispose()
    # Point the readiness probe at a database that cannot be opened.
    from taskmanager.kit.config import load_settings
    from taskmanager.kit.db import Database

    broken = Database(
        load_settings(
            database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
            secret_key="x" * 40,
            data_dir=app.state.settings.data_dir,
        )
    )
    app.state.database = broken
    try:
        response = await client.get("/ready")
    finally:
        await broken.dispose()
    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "checks": {"database": "unhealthy", "redis": "disabled"},
    }


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics_by_route_template(make_app: AppFactory) -> None:
    app, client = await make_app()

    @app.get("/api/v1/_test/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    for item_id in (1, 2, 3):
        assert (await client.get(f"/api/v1/_test/items/{item_id}")).status_code == 200
    await client.get("/api/v1/nothing/here/42")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    route = "/api/v1/_test/items/{item_id}"
    assert (
        _sample(text, "taskmanager_http_requests_total", route=route, method="GET", status="200")
        == 3
    )
    assert (
        _sample(
            text,
            "taskmanager_http_request_duration_seconds_count",
            route=route,
            method="GET",
            status="200",
        )
        == 3
    )
    # Raw paths never become labels (unbounded cardinality).
    assert "/api/v1/_test/items/1" not in text
    assert "/api/v1/nothing/here/42" not in text
    assert _sample(text, "taskmanager_http_requests_total", route="<unmatched>", status="404") == 1
    # The scrape itself is in flight while it renders.
    assert _sample(text, "taskmanager_http_requests_in_flight") == 1
    assert _sample(text, "taskmanager_db_pool_size", engine="write") is not None
    assert _sample(text, "taskmanager_db_pool_checked_out", engine="write") is not None


async def test_each_app_has_its_own_registry(make_app: AppFactory) -> None:
    _, first_client = await make_app()
    _, second_client = await make_app()
    for _ in range(2):
        await first_client.get("/health")
    text = (await second_client.get("/metrics")).text
    assert _sample(text, "taskmanager_http_requests_total", route="/health") is None


async def test_metrics_need_the_bearer_token_when_one_is_set(make_app: AppFactory) -> None:
    _, client = await make_app(metrics_token="m3trics-t0ken-for-prometheus")
    body = problem(await client.get("/metrics"), 401, "NOT_AUTHENTICATED")
    assert "Bearer" in body["detail"]
    for wrong in ("Bearer wrong", "Basic bTNOcmljcw==", "Bearer m3trics-t0ken-for-prometheu"):
        response = await client.get("/metrics", headers={"Authorization": wrong})
        problem(response, 401, "INVALID_CREDENTIALS")
        assert response.headers["www-authenticate"] == "Bearer"
    ok = await client.get(
        "/metrics", headers={"Authorization": "Bearer m3trics-t0ken-for-prometheus"}
    )
    assert ok.status_code == 200
    assert "# TYPE" in ok.text
    assert ok.headers["cache-control"] == "private, no-cache"


async def test_metrics_are_open_without_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics")).status_code == 200


async def test_docs_can_be_switched_off(make_app: AppFactory) -> None:
    _, client = await make_app(docs_enabled=False)
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/static/swagger-ui.css"):
        problem(await client.get(path), 404, "RESOURCE_NOT_FOUND")
    assert (await client.get("/health")).status_code == 200


async def test_metrics_show_the_outbox_and_webhook_deliveries(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner = await make_user()
    created = await client.post("/api/v1/tasks", json={"title": "counted"}, headers=owner.headers)
    assert created.status_code == 201

    def sample(text: str, name: str) -> float:
        (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
        return float(line.split()[1])

    # The shared test app runs no dispatcher: the event waits until the test numbers it.
    before = (await client.get("/metrics")).text
    assert sample(before, "taskmanager_events_pending") == 1
    assert sample(before, "taskmanager_events_last_published_seq") == 0
    for status in ("pending", "succeeded", "failed"):
        assert sample(before, f'taskmanager_webhook_deliveries{{status="{status}"}}') == 0
    async with app.state.database.side_transaction() as session:
        assert len(await sequence(session)) == 1
    after = (await client.get("/metrics")).text
    assert sample(after, "taskmanager_events_pending") == 0
    assert sample(after, "taskmanager_events_last_published_seq") == 1
