"""Slow CSV export readers cannot take the API down, and leave nothing checked out.

Each export is driven straight through the ASGI interface with a client that stops reading
after the first chunk: its ``send`` blocks, exactly as a server's does when a slow socket's
buffer is full. Twenty of them stall mid-stream at once, on a pool of two connections,
while other requests go on being answered; the pool is idle throughout, and disconnects
and the time budget end the streams without leaving a connection checked out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI

from tests.conftest import AppFactory, UserFactory
from tests.factories import TestUser, bulk_tasks

pytestmark = pytest.mark.slow

READERS = 20
TASKS = 1200  # more than two keyset batches


@dataclass
class SlowReader:
    """An ASGI client that reads the first chunk of the body, then stops reading."""

    first_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    status: int = 0
    body: bytearray = field(default_factory=bytearray)
    finished: bool = False

    async def receive(self) -> dict[str, Any]:
        if not hasattr(self, "_sent_request"):
            self._sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            if not self.first_chunk.is_set():
                self.first_chunk.set()
                if self.status == 200:  # a stream: its socket buffer is full, wait for it
                    await self.resume.wait()
            if not message.get("more_body", False):
                self.finished = True


def export_scope(user: TestUser) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/tasks/export",
        "raw_path": b"/api/v1/tasks/export",
        "query_string": b"format=csv",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {user.token}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "root_path": "",
    }


async def pools_checked_out(app: FastAPI) -> int:
    """Connections checked out once the background loops (event dispatch, retention) have
    put back the one they may hold for a moment; a stalled export would hold its own for
    good, so this waits a bounded while for zero and returns what is still out."""
    database = app.state.database
    pools = {database.read_engine.sync_engine.pool, database.write_engine.sync_engine.pool}
    for _ in range(100):
        out = int(sum(pool.checkedout() for pool in pools))
        if out == 0:
            return 0
        await asyncio.sleep(0.05)
    return out


def start_readers(app: FastAPI, user: TestUser) -> tuple[list[SlowReader], list[Any]]:
    readers = [SlowReader() for _ in range(READERS)]
    runs = [asyncio.create_task(app(export_scope(user), r.receive, r.send)) for r in readers]
    return readers, runs


async def finish(runs: list[Any]) -> list[Any]:
    """Every run's outcome (bounded); nothing is left pending for a later test."""
    try:
        return await asyncio.wait_for(asyncio.gather(*runs, return_exceptions=True), 120)
    finally:
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)


@pytest.fixture
async def exporting(
    make_app: AppFactory, make_user: UserFactory, app: FastAPI
) -> Callable[..., Awaitable[tuple[FastAPI, Any, TestUser]]]:
    async def build(**settings: Any) -> tuple[FastAPI, Any, TestUser]:
        user = await make_user()
        await bulk_tasks(
            app,
            [
                {"project_id": user.inbox_id, "title": f"t{i}", "created_by": user.id}
                for i in range(TASKS)
            ],
        )
        slow_app, client = await make_app(db_pool_size=2, **settings)
        return slow_app, client, user

    return build


async def test_twenty_stalled_exports_hold_no_connection_and_others_are_served(
    exporting: Callable[..., Awaitable[tuple[FastAPI, Any, TestUser]]],
) -> None:
    app, client, user = await exporting()
    readers, runs = start_readers(app, user)
    try:
        await asyncio.wait_for(asyncio.gather(*(r.first_chunk.wait() for r in readers)), 60)
    except BaseException:
        await finish(runs)
        raise
    assert all(r.status == 200 for r in readers)
    # Twenty streams stalled on their clients, and not one pooled connection held by them.
    assert await pools_checked_out(app) == 0
    for _ in range(5):
        created = await client.post(
            "/api/v1/tasks", json={"title": "meanwhile"}, headers=user.headers
        )
        assert created.status_code == 201
        read = await client.get(f"/api/v1/tasks/{created.json()['id']}", headers=user.headers)
        assert read.status_code == 200
        listed = await client.get("/api/v1/tasks", headers=user.headers)
        assert listed.status_code == 200
    assert (await client.get("/ready")).status_code == 200

    # Half the clients go away, half read to the end.
    for reader in readers[: READERS // 2]:
        reader.gone.set()
        reader.resume.set()
    for reader in readers[READERS // 2 :]:
        reader.resume.set()
    await finish(runs)
    for reader in readers[READERS // 2 :]:
        assert reader.finished
        # Header line plus every task the reader could see when its batches were read.
        assert reader.body.count(b"\n") >= TASKS + 1
    assert await pools_checked_out(app) == 0


async def test_time_budget_ends_stalled_exports_and_releases_everything(
    exporting: Callable[..., Awaitable[tuple[FastAPI, Any, TestUser]]],
) -> None:
    app, client, user = await exporting(request_timeout_seconds=2)
    readers, runs = start_readers(app, user)
    # Nobody reads on: the budget runs out mid-stream (or, on a starved machine, before
    # the stream started: a 504) and the server gives up on every one of them.
    results = await finish(runs)
    for reader, result in zip(readers, results, strict=True):
        assert not reader.finished or reader.status == 504, reader.status
        assert isinstance(result, Exception) or reader.status == 504, result
    assert await pools_checked_out(app) == 0
    assert (await client.get("/api/v1/tasks", headers=user.headers)).status_code == 200
