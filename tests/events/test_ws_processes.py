"""The stream across real ``taskmanager serve`` processes (sockets, Redis, separate memory)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from tests.conftest import TestDatabase, redis_url_or_skip
from tests.events.ws_support import RECEIVE_TIMEOUT
from tests.factories import STRONG_PASSWORD
from tests.serve_support import start_server, stop_server

SECRET = "events-process-secret-key-0123456789abcdef"


async def _account(base: str, username: str) -> str:
    """Register through the API and log in; returns an access token."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        created = await client.post(
            "/api/v1/users",
            json={
                "email": f"{username}@example.com",
                "username": username,
                "password": STRONG_PASSWORD,
            },
        )
        assert created.status_code == 201, created.text
        login = await client.post(
            "/api/v1/auth/token", data={"username": username, "password": STRONG_PASSWORD}
        )
        assert login.status_code == 200, login.text
        token: str = login.json()["access_token"]
        return token


async def _receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), RECEIVE_TIMEOUT))
    return message


async def _create(client: httpx.AsyncClient, token: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/tasks",
        json={"title": "Task", **fields},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@contextmanager
def _two_servers(
    database: TestDatabase, tmp_path: Path, **settings: str
) -> Iterator[tuple[str, str]]:
    """Two ``serve`` processes sharing the database and Redis, with these extra settings;
    (the second's HTTP base URL, the first's WebSocket URL)."""
    shared = {
        "TASKMANAGER_DATABASE_URL": database.url,
        "TASKMANAGER_REDIS_URL": redis_url_or_skip(),
        "TASKMANAGER_DATA_DIR": str(tmp_path / "data"),
        "TASKMANAGER_SECRET_KEY": SECRET,
        "TASKMANAGER_RATE_LIMIT_ENABLED": "false",
        "TASKMANAGER_LOG_LEVEL": "WARNING",
        **settings,
    }
    first, first_port = start_server(tmp_path, shared)
    try:
        second, second_port = start_server(tmp_path, shared)
        try:
            yield f"http://127.0.0.1:{second_port}", f"ws://127.0.0.1:{first_port}/api/v1/ws"
        finally:
            stop_server(second)
    finally:
        stop_server(first)


@pytest.mark.postgres_only
async def test_a_change_through_one_process_reaches_a_socket_on_another(
    app: FastAPI, database: TestDatabase, tmp_path: Path
) -> None:
    # Far longer than the receive bound: the events must come through Redis.
    servers = _two_servers(database, tmp_path, TASKMANAGER_EVENT_POLL_SECONDS="60")
    with servers as (writer_base, stream_base):
        token = await _account(writer_base, "crossproc")
        stream = f"{stream_base}?token={token}"
        async with httpx.AsyncClient(base_url=writer_base, timeout=30) as writer:
            async with ws_connect(stream) as ws:
                task = await _create(writer, token, title="Through the other process")
                seen = await _receive(ws)
            assert (seen["type"], seen["data"]) == ("task.created", task)

            # Disconnected: 100 changes through the second process.
            missed = [(await _create(writer, token, title=f"Missed {n}"))["id"] for n in range(100)]
            async with ws_connect(f"{stream}&since={seen['id']}") as ws:
                replayed = [await _receive(ws) for _ in missed]
                live = await _create(writer, token, title="Live again")
                following = await _receive(ws)
        assert [e["data"]["id"] for e in replayed] == missed
        ids = [e["id"] for e in replayed]
        assert ids == sorted(set(ids))
        assert following["data"]["id"] == live["id"]
        assert following["id"] > ids[-1]


@pytest.mark.postgres_only
async def test_signing_out_through_one_process_closes_a_socket_on_another(
    app: FastAPI, database: TestDatabase, tmp_path: Path
) -> None:
    """Ended credentials reach every process through Redis: the socket closes at once, not
    at the periodic recheck (an hour away here)."""
    servers = _two_servers(database, tmp_path, TASKMANAGER_WS_RECHECK_SECONDS="3600")
    with servers as (writer_base, stream_base):
        token = await _account(writer_base, "signout")
        stream = f"{stream_base}?token={token}"
        async with (
            httpx.AsyncClient(base_url=writer_base, timeout=30) as writer,
            ws_connect(stream) as ws,
        ):
            task = await _create(writer, token, title="Seen")
            assert (await _receive(ws))["data"]["id"] == task["id"]
            response = await writer.post(
                "/api/v1/auth/logout-all", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 204, response.text
            _, closed = await _drain(ws)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 4401


async def _drain(ws: ClientConnection) -> tuple[int, websockets.ConnectionClosed]:
    """Read until the server closes: (messages read, how it closed)."""
    count = 0
    while True:
        try:
            await asyncio.wait_for(ws.recv(), RECEIVE_TIMEOUT)
        except websockets.ConnectionClosed as closed:
            return count, closed
        except TimeoutError:
            raise AssertionError(f"no close after {count} messages") from None
        count += 1


def _slow_socket(port: int) -> socket.socket:
    """A connected socket with a tiny receive buffer, so unread data backs up to the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_a_slow_reader_is_dropped_while_a_fast_one_keeps_receiving(tmp_path: Path) -> None:
    settings = {
        "TASKMANAGER_DATA_DIR": str(tmp_path / "data"),
        "TASKMANAGER_SECRET_KEY": SECRET,
        "TASKMANAGER_RATE_LIMIT_ENABLED": "false",
        "TASKMANAGER_WS_QUEUE_SIZE": "32",
        # Keep-alive out of the picture: the slow client answers no ping while it stalls.
        "TASKMANAGER_WS_PING_SECONDS": "600",
        "TASKMANAGER_LOG_LEVEL": "WARNING",
        "TASKMANAGER_DB_POOL_TIMEOUT_SECONDS": "60",
    }
    server, port = start_server(tmp_path, settings)
    changes = 2000
    try:
        base = f"http://127.0.0.1:{port}"
        token = await _account(base, "slowfast")
        stream = f"ws://127.0.0.1:{port}/api/v1/ws?token={token}"
        async with (
            httpx.AsyncClient(base_url=base, timeout=60) as writer,
            ws_connect(stream, compression=None) as fast,
            # Flow control on: once 1 message is buffered it stops reading the socket.
            # No compression: the events must fill the socket buffers byte for byte.
            ws_connect(
                stream, sock=_slow_socket(port), max_queue=1, ping_interval=None, compression=None
            ) as slow,
        ):
            received: list[int] = []

            async def read_fast() -> None:
                while len(received) < changes:
                    received.append((await _receive(fast))["data"]["id"])

            reader = asyncio.create_task(read_fast())
            created: list[int] = []
            padding = "x" * 1900  # about 2.5 KB per event: the slow socket's buffers fill
            for start in range(0, changes, 10):
                batch = [
                    _create(writer, token, title=f"Change {n}", description=padding)
                    for n in range(start, start + 10)
                ]
                created.extend(task["id"] for task in await asyncio.gather(*batch))
            await asyncio.wait_for(reader, RECEIVE_TIMEOUT)
            assert sorted(received) == sorted(created)
            slow_count, closed = await _drain(slow)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 4408
        assert slow_count < changes
    finally:
        stop_server(server)
