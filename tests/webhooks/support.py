"""Webhook test support: a real HTTP receiver on loopback, a clock the test drives, events.

The receiver is a ``ThreadingHTTPServer`` on 127.0.0.1 (a real socket, a real HTTP parser):
it records every request and answers as the test says, per path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from fastapi import FastAPI

from taskmanager.kit.outbox import EventType, record, sequence
from taskmanager.webhooks.fanout import enqueue_deliveries
from tests.factories import API, TestUser

HOOKS = f"{API}/webhooks"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Bytes to stream after ``body`` (to see whether the client stops reading).
    stream_bytes: int = 0
    # Seconds to wait before answering (a target that hangs).
    delay: float = 0.0
    # Answer only once the test sets it (a target that hangs until then; at most 60 s).
    hold: threading.Event | None = None


class Receiver:
    """Records requests; answers ``answers[path]`` (default 200, empty)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: dict[str, Answer] = {}
        self.streamed: list[int] = []  # bytes of ``stream_bytes`` written before the client left
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the sender died mid-request: nothing was delivered
                with receiver.lock:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                answer = receiver.answers.get(self.path, Answer())
                if answer.delay:
                    time.sleep(answer.delay)
                if answer.hold is not None:
                    answer.hold.wait(60)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body) + answer.stream_bytes))
                self.send_header("connection", "close")
                self.end_headers()
                written = 0
                try:
                    self.wfile.write(answer.body)
                    chunk = b"x" * 65536
                    while written < answer.stream_bytes:
                        self.wfile.write(chunk)
                        written += len(chunk)
                except OSError:
                    pass
                if answer.stream_bytes:
                    receiver.streamed.append(written)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            # The deliverer opens a batch of connections at once; the default backlog of 5
            # would make the kernel drop SYNs and the client retry a second later.
            request_queue_size = 256

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join()


class Clock:
    """The deliverer's clock: the real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta

    def to(self, moment: datetime) -> None:
        """Move forward so that it is at least ``moment``."""
        self.offset += max(timedelta(0), moment - self())


async def emit(
    app: FastAPI,
    project_id: int,
    *,
    type: EventType = EventType.TASK_CREATED,
    actor: TestUser | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Record one event as a service would (its own committed transaction)."""
    async with app.state.database.side_transaction() as session:
        await record(
            session,
            type=type,
            project_id=project_id,
            actor_id=actor.id if actor else None,
            data=data or {"id": 1, "title": "A task"},
            changed=["title"] if type.value.endswith(".updated") else None,
        )


async def dispatch(app: FastAPI) -> int:
    """What the events dispatcher does each round: number events, fan out, one transaction."""
    async with app.state.database.side_transaction() as session:
        events = await sequence(session)
        return await enqueue_deliveries(session, events)


async def create_webhook(
    client: httpx.AsyncClient, user: TestUser, url: str, **fields: Any
) -> dict[str, Any]:
    body = {"url": url, "events": [t.value for t in EventType], **fields}
    response = await client.post(HOOKS, json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def deliveries(
    client: httpx.AsyncClient, user: TestUser, webhook_id: int
) -> list[dict[str, Any]]:
    response = await client.get(
        f"{HOOKS}/{webhook_id}/deliveries", params={"limit": 100}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@dataclass
class Subscription:
    """An owner's project and one of the owner's webhooks (the ``subscribed`` fixture), with
    what a delivery test does with them."""

    client: httpx.AsyncClient
    app: FastAPI
    owner: TestUser
    project: int
    hook: dict[str, Any]

    @property
    def path(self) -> str:
        return f"{HOOKS}/{self.hook['id']}"

    async def publish(self, **event: Any) -> int:
        """Emit one event on the project (``emit``'s options) and dispatch: attempts queued."""
        await emit(self.app, self.project, **event)
        return await dispatch(self.app)

    async def log(self) -> list[dict[str, Any]]:
        """The webhook's delivery log, newest first."""
        return await deliveries(self.client, self.owner, self.hook["id"])

    async def shown(self) -> dict[str, Any]:
        """The webhook as its owner reads it."""
        response = await self.client.get(self.path, headers=self.owner.headers)
        assert response.status_code == 200, response.text
        shown: dict[str, Any] = response.json()
        return shown
