"""``Idempotency-Key`` on POST: the first final answer is stored and replayed to retries.

Pure ASGI. It runs innermost (inside request id, rate and body limits), buffers the request
body to fingerprint it, claims the key in its own short transaction, runs the request, and
stores the response *before* passing it on, so a client that saw an answer always gets the
same answer on retry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskmanager.idempotency.store import (
    Claimed,
    DatabaseStore,
    IdempotencyStore,
    InProgress,
    KeyScope,
    Mismatch,
    RedisStore,
    Replay,
    StoredResponse,
    StoreUnavailable,
)
from taskmanager.kit.authn import claimed_caller
from taskmanager.kit.config import Settings
from taskmanager.kit.errors import (
    Conflict,
    IdempotencyKeyReused,
    InvalidCredentials,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
)
from taskmanager.kit.http import API_PREFIX
from taskmanager.kit.problems import scope_problem
from taskmanager.kit.security import digest

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# The route column's width; longer paths are stored by digest.
_MAX_ROUTE_LENGTH = 300
# Headers that are part of the answer itself; per-request ones (request id, timing, rate
# limits) are added afresh by the outer middleware on every replay.
_STORED_HEADERS = frozenset({"content-type", "location", "etag", "last-modified"})
# Answers that say "this request, as sent, could not run now": not final, so not stored,
# and the claim is dropped so a corrected or later retry runs for real.
_NOT_FINAL = frozenset({400, 401, 403, 409, 413, 415, 422, 429})
# Responses bigger than this are passed through unstored (POST answers are small JSON).
_MAX_STORED_RESPONSE = 1024 * 1024
PURGE_INTERVAL = timedelta(minutes=10)

log = structlog.get_logger("taskmanager.idempotency")


def is_final(status: int) -> bool:
    """Whether a response is an answer worth replaying for 24 hours."""
    return 200 <= status < 300 or (400 <= status < 500 and status not in _NOT_FINAL)


def valid_key(value: str) -> bool:
    """1 to 255 visible ASCII characters (RFC 9110 ``VCHAR``)."""
    return 0 < len(value) <= MAX_KEY_LENGTH and all("!" <= ch <= "~" for ch in value)


def get_store(app: Any) -> IdempotencyStore:
    """The app's store, built on first use from what the lifespan set up."""
    state = app.state
    store: IdempotencyStore | None = getattr(state, "idempotency_store", None)
    if store is None:
        redis = getattr(state, "redis", None)
        if redis is not None:
            store = RedisStore(redis)
        else:
            store = DatabaseStore(state.database, purge_interval=PURGE_INTERVAL)
        state.idempotency_store = store
    return store


def claim_lease(settings: Settings) -> timedelta:
    # Outlives any request the time budget lets run, yet frees the key soon after a crash.
    return timedelta(seconds=settings.request_timeout_seconds * 2 + 30)


def caller_of(scope: Scope) -> str | None:
    """Whose key this is; None when the credential is bad (the route will answer 401)."""
    try:
        caller = claimed_caller(scope)
    except InvalidCredentials:
        return None
    if caller is None:
        client = scope.get("client")
        return f"ip:{client[0] if client else 'unknown'}"[:64]
    return caller


def route_of(scope: Scope) -> str:
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    # Some servers and test transports include the query string in raw_path.
    path = raw_path.split(b"?", 1)[0].decode("latin-1")
    route = f"{scope['method']} {path}"
    if len(route) > _MAX_ROUTE_LENGTH:
        route = f"{scope['method']} sha256:{digest(path)}"
    return route


def request_fingerprint(scope: Scope, body: bytes) -> str:
    """What makes two requests "the same": content type, query string and body bytes."""
    headers = Headers(scope=scope)
    fingerprint = hashlib.sha256()
    for part in (headers.get("content-type", "").encode(), scope.get("query_string", b"")):
        fingerprint.update(len(part).to_bytes(8, "big"))
        fingerprint.update(part)
    fingerprint.update(body)
    return fingerprint.hexdigest()


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying_receive(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # waits for the disconnect, as the server's would

    return replay


@dataclass
class _Capture:
    """The downstream response, held back until it is complete (or too big to keep)."""

    start: Message | None = None
    chunks: list[bytes] | None = None
    size: int = 0
    passed_through: bool = False
    finished: bool = False


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].startswith(API_PREFIX + "/")
        ):
            await self.app(scope, receive, send)
            return
        keys = Headers(scope=scope).getlist(HEADER)
        if not keys:
            await self.app(scope, receive, send)
            return
        if len(keys) > 1 or not valid_key(keys[0]):
            await self._invalid_key(scope, receive, send)
            return
        app = scope["app"]
        settings: Settings = app.state.settings
        caller = caller_of(scope)
        if caller is None:
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive, settings.max_upload_bytes)
        except _ClientGone:
            return
        except _BodyTooLarge:
            response = scope_problem(
                scope,
                PayloadTooLarge(f"Request body is larger than {settings.max_upload_bytes} bytes"),
            )
            await response(scope, receive, send)
            return
        receive = _replaying_receive(body, receive)
        key_scope = KeyScope(caller, route_of(scope), keys[0])
        store = get_store(app)
        try:
            outcome = await store.claim(
                key_scope, request_fingerprint(scope, body), claim_lease(settings)
            )
        except StoreUnavailable as exc:
            # Redis is an optimisation here; losing it must not take the API down with it.
            log.warning("idempotency_store_unavailable", error=str(exc)[:200])
            await self.app(scope, receive, send)
            return
        except Exception:
            log.exception("idempotency_claim_failed")
            response = scope_problem(
                scope,
                ServiceUnavailable(
                    "The idempotency store is unavailable; try again shortly",
                    headers={"Retry-After": "5"},
                ),
            )
            await response(scope, receive, send)
            return
        if isinstance(outcome, Claimed):
            try:
                await self._run(scope, receive, send, store, key_scope, outcome.token)
            finally:
                await self._maintain(store)
            return
        await self._answer_without_running(outcome, scope, receive, send)

    async def _invalid_key(self, scope: Scope, receive: Receive, send: Send) -> None:
        msg = (
            f"Idempotency-Key must be one header of 1 to {MAX_KEY_LENGTH} visible ASCII characters"
        )
        response = scope_problem(scope, ValidationFailed.field(("header", "Idempotency-Key"), msg))
        await response(scope, receive, send)

    async def _answer_without_running(
        self, outcome: InProgress | Mismatch | Replay, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if isinstance(outcome, Replay):
            stored = outcome.response
            await send(
                {
                    "type": "http.response.start",
                    "status": stored.status_code,
                    "headers": [
                        *((n.encode("latin-1"), v.encode("latin-1")) for n, v in stored.headers),
                        (b"content-length", str(len(stored.body)).encode()),
                        (REPLAYED_HEADER.lower().encode(), b"true"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": stored.body, "more_body": False})
            return
        if isinstance(outcome, Mismatch):
            response = scope_problem(
                scope,
                IdempotencyKeyReused(
                    "This Idempotency-Key was already used with a different request"
                ),
            )
        else:
            response = scope_problem(
                scope,
                Conflict(
                    "A request with this Idempotency-Key is still being processed",
                    headers={"Retry-After": "1"},
                ),
            )
        await response(scope, receive, send)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        store: IdempotencyStore,
        key_scope: KeyScope,
        token: str,
    ) -> None:
        capture = _Capture()
        settled = False

        async def settle(response: StoredResponse | None) -> None:
            """Store the answer (or drop the claim) exactly once."""
            nonlocal settled
            if settled:
                return
            settled = True
            # Shielded: a cancelled request (client gone, time budget) must still not leave
            # its claim blocking retries until the lease runs out.
            with anyio.CancelScope(shield=True):
                try:
                    if response is None:
                        await store.release(key_scope, token)
                    else:
                        await store.complete(key_scope, token, response)
                except Exception as exc:
                    # The claim's lease expires on its own; the answer itself is still good.
                    log.warning("idempotency_settle_failed", error=str(exc)[:200])

        async def capturing_send(message: Message) -> None:
            if capture.passed_through:
                await send(message)
                return
            if message["type"] == "http.response.start":
                capture.start = message
                capture.chunks = []
                if not is_final(message["status"]):
                    await settle(None)
                    capture.passed_through = True
                    await send(message)
                return
            if message["type"] != "http.response.body" or capture.start is None:
                await send(message)
                return
            assert capture.chunks is not None
            chunk: bytes = message.get("body", b"")
            capture.chunks.append(chunk)
            capture.size += len(chunk)
            more = bool(message.get("more_body", False))
            if capture.size > _MAX_STORED_RESPONSE:
                await settle(None)
                await self._flush(capture, send, more_body=more)
                capture.passed_through = True
                return
            if more:
                return
            await settle(self._stored(capture))
            await self._flush(capture, send, more_body=False)
            capture.finished = True

        try:
            await self.app(scope, receive, capturing_send)
        finally:
            if not capture.finished:
                await settle(None)

    @staticmethod
    def _stored(capture: _Capture) -> StoredResponse:
        assert capture.start is not None
        assert capture.chunks is not None
        headers = [
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in capture.start.get("headers", [])
            if name.decode("latin-1").lower() in _STORED_HEADERS
        ]
        return StoredResponse(capture.start["status"], headers, b"".join(capture.chunks))

    @staticmethod
    async def _flush(capture: _Capture, send: Send, *, more_body: bool) -> None:
        assert capture.start is not None
        assert capture.chunks is not None
        await send(capture.start)
        await send(
            {"type": "http.response.body", "body": b"".join(capture.chunks), "more_body": more_body}
        )
        capture.chunks = []

    @staticmethod
    async def _maintain(store: IdempotencyStore) -> None:
        try:
            await store.maintain()
        except Exception as exc:
            log.warning("idempotency_maintenance_failed", error=str(exc)[:200])
