"""``GET /api/v1/ws``: the live event stream (API.md §7).

One connection: authenticate (``?token=``, else the ``Authorization`` or ``X-API-Key``
header, through ``kit.authn`` like every route), check the optional ``project_id`` through
the access gate, take a connection slot, register with the hub, complete the handshake,
replay what ``since`` missed from the outbox, then go live. Every event published after
the handshake completed reaches the client (if its filter admits it). Replay and live meet
without a gap or a repeat: the subscriber is registered (and its queue collecting) before
the replay reads, and anything in the queue at or below the last replayed ``seq`` is
dropped.

The credential is checked again every ``TASKMANAGER_WS_RECHECK_SECONDS``, and at once —
with nothing sent meanwhile — when a transaction that ended the user's credentials commits
(``Hub.recheck``).

Close codes (RFC 6455 §7.4.2 private range mirrors HTTP): 4401 not authenticated or the
credential ended (token expired, signed out everywhere, key revoked), 4403 deactivated or
an API key without ``tasks:read``, 4404 ``project_id`` is not a project the caller can see
(as the HTTP API answers 404), 4408 too slow, 4422 a malformed ``project_id`` or ``since``
or a ``since`` past the newest event, 4429 too many connections, 1001 going away (drain),
1011 the database is unreachable.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime

import anyio
import structlog
from fastapi import APIRouter, WebSocket
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect, WebSocketState

from taskmanager.events.hub import (
    READ_BATCH,
    Hub,
    Published,
    Subscriber,
    newest_seq,
    read_after,
)
from taskmanager.kit.authn import access_claims, authenticate, read_credential
from taskmanager.kit.config import Settings
from taskmanager.kit.db import Database, utcnow
from taskmanager.kit.errors import InvalidCredentials, NotAuthenticated, NotFound
from taskmanager.kit.identity import Principal, Scope
from taskmanager.kit.logging import redact_query
from taskmanager.kit.outbox import format_event_id, parse_event_id
from taskmanager.models.users import User
from taskmanager.projects.access import project_access
from taskmanager.projects.policy import Permission

router = APIRouter(tags=["events"])
log = structlog.get_logger("taskmanager.ws")

NOT_AUTHENTICATED = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404
TOO_SLOW = 4408
INVALID = 4422
TOO_MANY = 4429
GOING_AWAY = 1001
UNAVAILABLE = 1011


@dataclass
class _Closing(Exception):
    code: int
    reason: str


def _auth_headers(websocket: WebSocket) -> list[tuple[bytes, bytes]]:
    """The request headers, with ``?token=`` as the bearer credential when no header has one."""
    headers = list(websocket.scope["headers"])
    token = websocket.query_params.get("token")
    if token and read_credential(websocket.scope) is None:
        headers.append((b"authorization", b"Bearer " + token.encode("latin-1", "replace")))
    return headers


async def _principal(websocket: WebSocket, headers: list[tuple[bytes, bytes]]) -> Principal:
    """The verified caller (``kit.authn.authenticate``, so the ``gen`` cut-off applies)."""
    scope = {"type": "websocket", "headers": headers, "app": websocket.app, "state": {}}
    try:
        principal = await authenticate(scope)
    except (NotAuthenticated, InvalidCredentials) as exc:
        raise _Closing(NOT_AUTHENTICATED, exc.detail) from None
    if not principal.has_scope(Scope.TASKS_READ):
        raise _Closing(FORBIDDEN, "This API key needs the tasks:read scope")
    return principal


def _expires_at(websocket: WebSocket, headers: list[tuple[bytes, bytes]]) -> datetime | None:
    scope = {"type": "websocket", "headers": headers, "app": websocket.app, "state": {}}
    credential = read_credential(scope)
    if credential is None or credential.kind != "bearer":
        return None
    return access_claims(scope, credential.value).expires_at


def _query_int(websocket: WebSocket, name: str) -> int | None:
    value = websocket.query_params.get(name)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18 or int(value) < 1:
        raise _Closing(INVALID, f"{name} must be a positive integer")
    return int(value)


def _since(websocket: WebSocket) -> int | None:
    value = websocket.query_params.get("since")
    if value is None:
        return None
    seq = parse_event_id(value)
    if seq is None:
        raise _Closing(INVALID, "since must be an event id (evt_ followed by 16 digits)")
    return seq


class _Stream:
    """One accepted connection, from authentication to close."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.settings: Settings = websocket.app.state.settings
        self.database: Database = websocket.app.state.database
        self.hub: Hub = websocket.app.state.hub
        self.sent = 0
        self.user_id: int | None = None

    async def run(self) -> int:
        """Serve until closed; returns the close code sent (1000 when the client left)."""
        websocket = self.websocket
        try:
            if self.hub.going_away.is_set():
                raise _Closing(GOING_AWAY, "The server is shutting down")
            headers = _auth_headers(websocket)
            principal = await _principal(websocket, headers)
            self.user_id = principal.user_id
            project_id = _query_int(websocket, "project_id")
            since = _since(websocket)
            if since is not None:
                await self._check_since(since)
            if project_id is not None:
                await self._check_project(principal, project_id)
            if not self.hub.admit(principal.user_id):
                raise _Closing(TOO_MANY, "Too many connections for this user")
            try:
                await self._serve(principal, headers, project_id, since)
            finally:
                self.hub.release(principal.user_id)
        except _Closing as closing:
            await self._close(closing.code, closing.reason)
            return closing.code
        except Exception as exc:  # the database is unreachable
            log.warning("websocket_failed", error=_describe(exc))
            await self._close(UNAVAILABLE, "The service is unavailable; reconnect later")
            return UNAVAILABLE
        return 1000

    async def _close(self, code: int, reason: str) -> None:
        """Close with ``code``; a refusal is accepted first, since only an open WebSocket
        carries a close code (before the handshake the server could only answer HTTP 403)."""
        # The close frame queues behind what a slow client has not read yet; it gets as
        # long to read it as a silent client gets to answer a ping, then it is cut off.
        with anyio.move_on_after(self.settings.ws_ping_seconds * 2, shield=True):
            # The client may be gone already.
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                if self.websocket.client_state is WebSocketState.CONNECTING:
                    await self.websocket.accept()
                await self.websocket.close(code, reason[:120])

    async def _check_since(self, since: int) -> None:
        """4422 for an id past the newest event. Every id a client was sent is at or below
        it (``seq`` only grows), so one above is not from this stream — another
        deployment, or one restored from a backup — and serving it would mute the socket:
        live events at or below it count as already seen. Refused rather than clamped, so
        the client learns its position is unknown here and resynchronises."""
        newest = await newest_seq(self.database)
        if since > newest:
            newest_id = format_event_id(newest)
            raise _Closing(INVALID, f"since is ahead of the event stream (newest: {newest_id})")

    async def _check_project(self, principal: Principal, project_id: int) -> None:
        async with self.database.snapshot() as session:
            try:
                await project_access(session, principal, project_id, Permission.VIEW)
            except NotFound:
                raise _Closing(NOT_FOUND, f"Project {project_id} not found") from None

    async def _serve(
        self,
        principal: Principal,
        headers: list[tuple[bytes, bytes]],
        project_id: int | None,
        since: int | None,
    ) -> None:
        subscriber = Subscriber(
            user_id=principal.user_id,
            is_admin=principal.is_admin,
            project_id=project_id,
            queue_size=self.settings.ws_queue_size,
        )
        # Registered first, so nothing published during the replay is missed; and before
        # the handshake completes, so a client that is connected misses nothing either.
        await self.hub.subscribe(subscriber)
        outcome: list[_Closing] = []
        try:
            await self.websocket.accept()
            async with anyio.create_task_group() as tasks:

                def end(code: int, reason: str) -> None:
                    if not outcome:
                        outcome.append(_Closing(code, reason))
                    tasks.cancel_scope.cancel()

                async def send() -> None:
                    try:
                        await self._send(subscriber, project_id, since)
                    except (WebSocketDisconnect, OSError, RuntimeError):
                        tasks.cancel_scope.cancel()  # the client is gone
                    except Exception as exc:
                        log.warning("websocket_replay_failed", error=_describe(exc))
                        end(UNAVAILABLE, "The event store is unavailable; reconnect with since")

                async def receive() -> None:
                    await self._receive()
                    tasks.cancel_scope.cancel()  # the client left

                async def overflow() -> None:
                    await subscriber.overflowed.wait()
                    end(TOO_SLOW, "Too slow: the connection's event queue overflowed")

                async def going_away() -> None:
                    await self.hub.going_away.wait()
                    end(GOING_AWAY, "The server is shutting down")

                async def expiry() -> None:
                    expires_at = _expires_at(self.websocket, headers)
                    if expires_at is not None:
                        await anyio.sleep(max(0.0, (expires_at - utcnow()).total_seconds()))
                        end(NOT_AUTHENTICATED, "The access token expired")

                async def recheck() -> None:
                    # At once when the hub holds the connection (credentials of its user
                    # ended), else every TASKMANAGER_WS_RECHECK_SECONDS as a backstop.
                    while True:
                        with anyio.move_on_after(self.settings.ws_recheck_seconds):
                            await subscriber.recheck_now.wait()
                        subscriber.recheck_now.clear()
                        closing = await self._still_allowed(principal, headers)
                        if isinstance(closing, _Closing):
                            end(closing.code, closing.reason)
                            return
                        if closing is not None:  # the caller as they are now
                            subscriber.is_admin = closing.is_admin
                        if not subscriber.recheck_now.is_set():  # no newer hold meanwhile
                            subscriber.cleared.set()

                for job in (send, receive, overflow, going_away, expiry, recheck):
                    tasks.start_soon(job)
        finally:
            self.hub.unsubscribe(subscriber)
        if outcome:
            raise outcome[0]

    async def _send(
        self, subscriber: Subscriber, project_id: int | None, since: int | None
    ) -> None:
        websocket = self.websocket
        through = 0  # the highest seq already sent or passed over by the replay
        if since is not None:
            through = since
            while True:
                events = await read_after(self.database, through, project_id=project_id)
                for event in events:
                    assert event.seq is not None
                    through = event.seq
                    item = Published.of(event)
                    if subscriber.wants(item):
                        await subscriber.cleared.wait()
                        await websocket.send_text(item.text)
                        self.sent += 1
                if len(events) < READ_BATCH:
                    break
        while True:
            item = await subscriber.queue.get()
            if item.seq <= through:
                continue  # already replayed
            through = item.seq
            await subscriber.cleared.wait()  # held while the credential is checked again
            await websocket.send_text(item.text)
            self.sent += 1

    async def _receive(self) -> None:
        """Read (and ignore) what the client sends, until it disconnects."""
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
        except WebSocketDisconnect:
            return

    async def _still_allowed(
        self, principal: Principal, headers: list[tuple[bytes, bytes]]
    ) -> _Closing | Principal | None:
        """4403 once the user is deactivated, 4401 once the credential stopped working; else
        the caller as the credential stands now (a role change shows here), or None when the
        database cannot say (keep serving; check again later)."""
        try:
            return await _principal(self.websocket, headers)
        except _Closing as closing:
            refused = closing
        except Exception as exc:
            # The database is down: keep serving what is already published; check again later.
            log.warning("websocket_recheck_failed", error=_describe(exc))
            return None
        try:
            async with self.database.snapshot() as session:
                active = await session.scalar(
                    select(User.is_active).where(User.id == principal.user_id)
                )
        except Exception as exc:
            log.warning("websocket_recheck_failed", error=_describe(exc))
            return None
        if active is False:
            return _Closing(FORBIDDEN, "The account is deactivated")
        return refused


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


@router.websocket("/ws")
async def stream(websocket: WebSocket) -> None:
    """The live event stream: one JSON message per event (API.md §7)."""
    started = time.perf_counter()
    connection = _Stream(websocket)
    code = await connection.run()
    query = websocket.scope.get("query_string", b"").decode("latin-1")
    log.info(
        "websocket",
        path=websocket.url.path,
        query=redact_query(query, frozenset({"project_id", "since"})) if query else None,
        close_code=code,
        events_sent=connection.sent,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
        user_id=connection.user_id,
    )
