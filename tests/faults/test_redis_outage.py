"""Redis frozen (SIGSTOP) or killed: the API keeps its promises and recovers on its own.

A private ``redis-server`` on a spare port backs the app (rate limits, readiness). Keyed
retries never run twice and a reused key with another body is still refused — idempotency
records live in the database, so Redis has no say in them — every route family keeps
answering within the contract's 3 s, and ``/ready`` reports Redis without waiting for it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from taskmanager.models.tasks import Task
from tests.conftest import AppFactory, UserFactory, problem
from tests.factories import create_task
from tests.faults.services import PrivateRedis
from tests.faults.test_database_outage import World, families, within_contract

pytestmark = pytest.mark.slow


@pytest.fixture
async def redis_world(
    make_app: AppFactory, make_user: UserFactory, app: FastAPI, tmp_path: Path
) -> AsyncIterator[tuple[World, PrivateRedis]]:
    redis = PrivateRedis(tmp_path)
    with redis.running():
        faulty, client = await make_app(
            redis_url=redis.url,
            rate_limit_enabled=True,
            rate_limit_default="100000/minute",
            rate_limit_auth="100000/minute",
            outage_backoff_seconds=0.2,
        )
        user = await make_user()
        task_id = await create_task(app, user.inbox_id, user, title="before")
        yield World(faulty, client, user, task_id), redis


async def count_titled(app: FastAPI, title: str) -> int:
    async with app.state.database.snapshot() as session:
        statement = select(func.count()).select_from(Task).where(Task.title == title)
        return int((await session.execute(statement)).scalar_one())


async def ready_becomes(client: httpx.AsyncClient, status: int) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        response = await within_contract(lambda c: c.get("/ready"), client)
        if response.status_code == status:
            return response
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.1)


async def check_promises_without_redis(world: World) -> None:
    client, auth = world.client, world.user.headers
    ready = await within_contract(lambda c: c.get("/ready"), client)
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "healthy", "redis": "unhealthy"}

    title = f"keyed-{uuid.uuid4().hex[:8]}"
    key = {"Idempotency-Key": uuid.uuid4().hex, **auth}
    first = await within_contract(
        lambda c: c.post("/api/v1/tasks", json={"title": title}, headers=key), client
    )
    assert first.status_code == 201, first.text
    retry = await within_contract(
        lambda c: c.post("/api/v1/tasks", json={"title": title}, headers=key), client
    )
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    other = await within_contract(
        lambda c: c.post("/api/v1/tasks", json={"title": "other"}, headers=key), client
    )
    problem(other, 422, "IDEMPOTENCY_KEY_REUSED")
    assert await count_titled(world.app, title) == 1

    for family, request in families(world).items():
        response = await within_contract(request, client)
        assert response.status_code < 500, (family, response.text)


async def test_frozen_redis(redis_world: tuple[World, PrivateRedis]) -> None:
    world, redis = redis_world
    await ready_becomes(world.client, 200)
    redis.freeze()
    try:
        await check_promises_without_redis(world)
    finally:
        redis.thaw()
    await ready_becomes(world.client, 200)


async def test_killed_redis_then_back(redis_world: tuple[World, PrivateRedis]) -> None:
    world, redis = redis_world
    await ready_becomes(world.client, 200)
    redis.kill()
    await check_promises_without_redis(world)
    redis.start()  # the same port: the app reconnects without a restart
    await ready_becomes(world.client, 200)
