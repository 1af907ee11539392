"""WebSocket helpers: a client on the ASGI app (httpx-ws) and small receive helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport

WS = "/api/v1/ws"
# A bound on waiting for a message that must come, so a broken stream fails the test
# instead of hanging it; never a statement about how fast anything is.
RECEIVE_TIMEOUT = 30.0


@asynccontextmanager
async def ws_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # httpx-ws waits only 1 s for the handshake's answer by default: on a loaded machine the
    # server's (authentication, a query) can take longer, which is no failure of the server.
    async with (
        ASGIWebSocketTransport(app=app, initial_receive_timeout=RECEIVE_TIMEOUT) as transport,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield client


def connect(
    url: str, client: httpx.AsyncClient, headers: dict[str, str] | None = None
) -> AbstractAsyncContextManager[AsyncWebSocketSession]:
    """A WebSocket session on ``client`` (httpx-ws's ``aconnect_ws``, typed)."""
    session: AbstractAsyncContextManager[AsyncWebSocketSession] = aconnect_ws(
        url, client, headers=dict(headers or {})
    )
    return session


async def next_event(ws: AsyncWebSocketSession) -> dict[str, Any]:
    message: dict[str, Any] = await ws.receive_json(timeout=RECEIVE_TIMEOUT)
    return message


async def close_code(ws: AsyncWebSocketSession) -> int:
    """Read until the server closes; return its close code."""
    while True:
        try:
            await ws.receive_text(timeout=RECEIVE_TIMEOUT)
        except WebSocketDisconnect as closed:
            return closed.code


async def messages_until_closed(ws: AsyncWebSocketSession) -> tuple[list[str], int]:
    """Every message the server still sends, then its close code."""
    messages: list[str] = []
    while True:
        try:
            messages.append(await ws.receive_text(timeout=RECEIVE_TIMEOUT))
        except WebSocketDisconnect as closed:
            return messages, closed.code
