"""Overload: a bounded number of requests in progress; the excess gets a fast 503 (API.md §8).

Requests are held inside a test route on an event, so "the server is at capacity" is a
state the test builds, not a race. Throughput under overload is measured by bench/, not
here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import AppFactory, problem


def add_held_route(app: FastAPI) -> tuple[asyncio.Event, list[asyncio.Event]]:
    release = asyncio.Event()
    entered: list[asyncio.Event] = []

    @app.get("/api/v1/_held")
    async def held() -> dict[str, str]:
        mark = asyncio.Event()
        entered.append(mark)
        mark.set()
        await release.wait()
        return {"status": "done"}

    return release, entered


async def fill(client: httpx.AsyncClient, count: int, entered: list[Any]) -> list[Any]:
    tasks = [asyncio.create_task(client.get("/api/v1/_held")) for _ in range(count)]
    while len(entered) < count:
        await asyncio.sleep(0.01)
    return tasks


async def test_excess_requests_get_503_with_retry_after_and_probes_pass(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app, client = await make_app(max_concurrency=2, admission_timeout_ms=0)
    release, entered = add_held_route(app)
    held = await fill(client, 2, entered)

    shed = [await client.get("/api/v1/tasks") for _ in range(3)]
    for response in shed:
        problem(response, 503, "SERVICE_UNAVAILABLE")
        assert response.headers["retry-after"] == "1"
        assert response.headers["x-request-id"]  # shed answers are ordinary answers
    # Liveness and readiness are never shed: that is when they matter most.
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/ready")).status_code == 200

    release.set()
    assert [(await task).status_code for task in held] == [200, 200]
    assert (await client.get("/api/v1/tasks")).status_code == 401  # admitted again
    episode = [r for r in caplog.records if "load_shedding_started" in r.getMessage()]
    assert len(episode) == 1  # one line for the episode, not one per shed request


async def test_a_waiting_request_gets_the_next_free_slot(make_app: AppFactory) -> None:
    app, client = await make_app(max_concurrency=1, admission_timeout_ms=10_000)
    release, entered = add_held_route(app)
    (first,) = await fill(client, 1, entered)
    second = asyncio.create_task(client.get("/api/v1/_held"))  # waits for admission
    release.set()
    assert (await first).status_code == 200
    assert (await second).status_code == 200  # handed the slot, not shed
    assert len(entered) == 2
