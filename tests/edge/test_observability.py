"""Answers given before any route ran (a 429 from the rate limit, an idempotent replay) are
logged and counted under their route template and the caller's user id, like any other."""

from __future__ import annotations

import logging

import orjson
import pytest

from taskmanager.kit.logging import log_formatter
from tests.conftest import AppFactory, UserFactory
from tests.factories import API, TASKS


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    formatter = log_formatter()
    assert formatter is not None
    lines = [orjson.loads(formatter.format(record)) for record in caplog.records]
    return [line for line in lines if line["logger"] == "taskmanager.access"]


def _metric(text: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith("taskmanager_http_requests_total{") and all(
            f'{key}="{value}"' in line for key, value in labels.items()
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_rate_limited_requests_carry_their_route_and_user(
    make_app: AppFactory, make_user: UserFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, client = await make_app(
        rate_limit_enabled=True, rate_limit_default="2/minute", log_level="INFO"
    )
    user = await make_user("limited")
    task = await client.post(TASKS, json={"title": "t"}, headers=user.headers)
    assert task.status_code == 201
    url = f"{TASKS}/{task.json()['id']}"
    assert (await client.get(url, headers=user.headers)).status_code == 200
    limited = await client.get(url, headers=user.headers)
    assert limited.status_code == 429
    line = next(
        line
        for line in _access_lines(caplog)
        if line["request_id"] == limited.headers["x-request-id"]
    )
    assert line["status"] == 429
    assert line["route"] == f"{API}/tasks/{{task_id}}"
    assert line["user_id"] == user.id
    metrics = (await client.get("/metrics")).text  # /metrics is never rate limited
    assert _metric(metrics, route=f"{API}/tasks/{{task_id}}", method="GET", status="429") == 1
    assert _metric(metrics, route="<unmatched>", status="429") == 0


async def test_idempotent_replays_carry_their_route_and_user(
    make_app: AppFactory, make_user: UserFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _, client = await make_app(log_level="INFO")
    user = await make_user("replayer")
    headers = {**user.headers, "Idempotency-Key": "replay-1"}
    first = await client.post(f"{API}/projects", json={"name": "p"}, headers=headers)
    replay = await client.post(f"{API}/projects", json={"name": "p"}, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    line = next(
        line
        for line in _access_lines(caplog)
        if line["request_id"] == replay.headers["x-request-id"]
    )
    assert line["route"] == f"{API}/projects"
    assert line["user_id"] == user.id
    metrics = (await client.get("/metrics")).text
    assert _metric(metrics, route=f"{API}/projects", method="POST", status="201") == 2


async def test_an_unknown_path_is_still_unmatched(make_app: AppFactory) -> None:
    _, client = await make_app()
    assert (await client.get(f"{API}/no/such/thing")).status_code == 404
    metrics = (await client.get("/metrics")).text
    assert _metric(metrics, route="<unmatched>", status="404") == 1
