"""``Idempotency-Key`` on POST (API.md §6): a retry gets the first answer, and runs nothing.

Pure ASGI, innermost. For a keyed POST it:

1. answers 409 at once if a request with the same key is running in this process;
2. looks the key up (a snapshot read). A stored answer is replayed — after the body, hashed
   as it streams and never buffered, proves to be the same request (else 422
   ``IDEMPOTENCY_KEY_REUSED``) and the caller's credential proves valid *now*
   (``kit.authn.authenticate``; a revoked key or a deactivated user gets 401, not the answer);
3. otherwise runs the request with a ``kit.transaction`` hook: on PostgreSQL the key is
   locked by the first statement of the request's write transaction (409 for a concurrent
   request in another process) — not before, so a request holds no pooled connection
   while it does what needs none (an upload streaming to the object store); just before
   the transaction commits the key is checked again (422, or a replay for a request that
   lost a race — its change is rolled back) and the final answer is inserted in that same
   transaction. A crash at any point leaves either the change *and* its answer, or
   neither, so a retry never runs twice (the database is the system of record; Redis is
   not used here, so its outages change nothing);
4. a final answer that did not commit with a transaction (a 404; a route without a request
   session) is stored afterwards in a short transaction of its own: nothing was changed that
   a retry could duplicate.

Never stored: answers carrying a credential (``Cache-Control: no-store``, or a token, key or
secret field), so no secret sits in the table and a keyed retry of a login or refresh runs
again under the normal rules (a spent refresh token is re-use, and revokes its family);
non-final answers (400/401/403/409/413/415/422/429, 5xx: the key stays free for a corrected
retry); streamed answers and answers over 1 MiB. If the store cannot be reached the request
is refused with 503 rather than run unguarded (fail closed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import orjson
import structlog
from sqlalchemy import Connection, event
from starlette.datastructures import Headers
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskmanager.idempotency.store import IdempotencyStore, KeyScope, Record, StoredResponse
from taskmanager.kit import authn, transaction
from taskmanager.kit.authn import claimed_caller
from taskmanager.kit.errors import (
    Conflict,
    DomainError,
    IdempotencyKeyReused,
    InvalidCredentials,
    ValidationFailed,
)
from taskmanager.kit.http import API_PREFIX
from taskmanager.kit.problems import dependency_problem, scope_problem
from taskmanager.kit.security import digest

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# The route column's width; longer paths are stored by digest.
_MAX_ROUTE_LENGTH = 300
# The answer's own headers, replayed with it (API.md §6: Location, ETag and the caching
# headers). Per-request ones (request id, timing, rate limits) are added afresh outside.
_STORED_HEADERS = frozenset(
    {"content-type", "location", "etag", "last-modified", "cache-control", "expires", "vary"}
)
# Answers that say "this request, as sent, could not run now": not final, so not stored.
_NOT_FINAL = frozenset({400, 401, 403, 409, 413, 415, 422, 429})
# Responses bigger than this are passed through unstored (POST answers are small JSON).
_MAX_STORED_RESPONSE = 1024 * 1024
# Top-level fields that hold a credential in this API's answers (tokens, API keys, webhook
# secrets). Belt and braces: those answers also carry Cache-Control: no-store.
_CREDENTIAL_FIELDS = frozenset(
    {"access_token", "refresh_token", "id_token", "token", "key", "secret", "client_secret"}
)
PURGE_INTERVAL = timedelta(minutes=10)
_IN_PROGRESS = "A request with this Idempotency-Key is still being processed"

log = structlog.get_logger("taskmanager.idempotency")


async def _refuse(exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer a check that failed: a DomainError (the caller's credential; the database known
    to be down) as its problem, a dependency that failed as 503; anything else is re-raised."""
    if isinstance(exc, DomainError):
        await scope_problem(scope, exc)(scope, receive, send)
        return
    unavailable = dependency_problem(scope, exc)
    if unavailable is None:
        raise exc
    await unavailable(scope, receive, send)


def is_final(status: int) -> bool:
    """Whether a response is an answer worth replaying for 24 hours."""
    return 200 <= status < 300 or (400 <= status < 500 and status not in _NOT_FINAL)


def valid_key(value: str) -> bool:
    """1 to 255 visible ASCII characters (RFC 9110 ``VCHAR``)."""
    return 0 < len(value) <= MAX_KEY_LENGTH and all("!" <= ch <= "~" for ch in value)


def carries_credential(headers: list[tuple[str, str]], body: bytes) -> bool:
    """Whether an answer must never be stored: ``no-store``, or a credential in its body."""
    for name, value in headers:
        if name == "cache-control" and "no-store" in value.lower():
            return True
    if not body.startswith(b"{"):
        return False
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and not _CREDENTIAL_FIELDS.isdisjoint(parsed)


def storable(
    status: int, raw_headers: list[tuple[bytes, bytes]], body: bytes
) -> StoredResponse | None:
    """The answer as it would be stored, or None when it must not be."""
    if not is_final(status) or len(body) > _MAX_STORED_RESPONSE:
        return None
    headers = [
        (name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in raw_headers
    ]
    kept = [(name, value) for name, value in headers if name in _STORED_HEADERS]
    if carries_credential(kept, body):
        return None
    return StoredResponse(status, kept, body)


def get_store(app: Any) -> IdempotencyStore:
    """The app's store, built on first use from the app's database."""
    state = app.state
    store: IdempotencyStore | None = getattr(state, "idempotency_store", None)
    if store is None:
        store = IdempotencyStore(state.database, purge_interval=PURGE_INTERVAL)
        state.idempotency_store = store
    return store


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


class Fingerprint:
    """What makes two requests "the same": content type, query string and body bytes.

    The body is hashed as it streams through ``receive`` — uploads are never buffered.
    """

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self._receive = receive
        self._hasher = hashlib.sha256()
        content_type = Headers(scope=scope).get("content-type", "").encode()
        for part in (content_type, scope.get("query_string", b"")):
            self._hasher.update(len(part).to_bytes(8, "big"))
            self._hasher.update(part)
        self.complete = False
        self.disconnected = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._hasher.update(message.get("body", b""))
            if not message.get("more_body", False):
                self.complete = True
        elif message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    async def finish(self) -> str:
        """The request's hash, reading (and discarding) whatever the route left unread."""
        while not self.complete and not self.disconnected:
            await self.receive()
        return self._hasher.hexdigest()


class _Replay(Exception):
    """Raised from the request's transaction when another request already answered."""

    def __init__(self, record: Record) -> None:
        super().__init__("replay")
        self.record = record


class KeyedRequest:
    """The ``kit.transaction`` hook of one keyed request: lock, re-check, record."""

    def __init__(self, store: IdempotencyStore, key_scope: KeyScope, fingerprint: Fingerprint):
        self.store = store
        self.key_scope = key_scope
        self.fingerprint = fingerprint
        self.response: Response | None = None
        self.recorded = False

    async def begin(self, session: Any) -> None:
        # PostgreSQL: the key's advisory lock, held to the end of the transaction, so a second
        # request with this key in another process learns that this one is running. Taken
        # by the transaction's first statement, not now: the session exists before the route
        # runs, and a lock taken now would hold a pooled connection (idle in transaction)
        # through the request's slow parts before its first query — an upload's whole
        # stream, a password hash. (SQLite's one writer already serialises them.)
        if self.store.locks:
            event.listen(session.sync_session, "after_begin", self._lock, once=True)

    def _lock(self, _session: Any, _transaction: Any, connection: Connection) -> None:
        if not self.store.lock_on(connection, self.key_scope):
            raise Conflict(_IN_PROGRESS, headers={"Retry-After": "1"})

    def response_ready(self, response: Response) -> None:
        self.response = response

    async def before_commit(self, session: Any) -> None:
        # Checked again inside the transaction, just before it commits: a request that
        # committed this key meanwhile (another process, on SQLite) wins, and this one's
        # change is rolled back and its answer replayed instead.
        request_hash = await self.fingerprint.finish()
        record = await self.store.find_in(session, self.key_scope)
        if record is not None:
            if record.request_hash != request_hash:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used with a different request"
                )
            raise _Replay(record)
        response = self.response
        if response is None or isinstance(response, StreamingResponse):
            return
        stored = storable(response.status_code, list(response.raw_headers), bytes(response.body))
        if stored is None:
            return
        await self.store.insert(session, self.key_scope, request_hash, stored)
        self.recorded = True


@dataclass
class _Capture:
    """A final answer that did not commit with a transaction, held until it is stored."""

    start: Message | None = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    passed_through: bool = False


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._running: set[KeyScope] = set()

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
        caller = caller_of(scope)
        if caller is None:
            await self.app(scope, receive, send)
            return
        key_scope = KeyScope(caller, route_of(scope), keys[0])
        if key_scope in self._running:
            conflict = Conflict(_IN_PROGRESS, headers={"Retry-After": "1"})
            await scope_problem(scope, conflict)(scope, receive, send)
            return
        store = get_store(scope["app"])
        fingerprint = Fingerprint(scope, receive)
        self._running.add(key_scope)
        try:
            try:
                record = await store.find(key_scope)
            except Exception as exc:
                # Fail closed: running unguarded could run a retry twice.
                await _refuse(exc, scope, receive, send)
                return
            if record is not None:
                await self._answer(record, await fingerprint.finish(), scope, receive, send)
                return
            keyed = KeyedRequest(store, key_scope, fingerprint)
            transaction.attach(scope, keyed)
            try:
                await self._run(scope, send, keyed)
            except _Replay as replay:
                await self._answer(replay.record, await fingerprint.finish(), scope, receive, send)
        finally:
            self._running.discard(key_scope)
            await self._maintain(store)

    async def _invalid_key(self, scope: Scope, receive: Receive, send: Send) -> None:
        msg = (
            f"Idempotency-Key must be one header of 1 to {MAX_KEY_LENGTH} visible ASCII characters"
        )
        response = scope_problem(scope, ValidationFailed.field(("header", "Idempotency-Key"), msg))
        await response(scope, receive, send)

    async def _answer(
        self, record: Record, request_hash: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Replay a stored answer to the same request from a caller valid now; else refuse."""
        if record.request_hash != request_hash:
            reused = IdempotencyKeyReused(
                "This Idempotency-Key was already used with a different request"
            )
            await scope_problem(scope, reused)(scope, receive, send)
            return
        if authn.read_credential(scope) is not None:
            try:
                await authn.authenticate(scope)
            except Exception as exc:
                await _refuse(exc, scope, receive, send)
                return
        stored = record.response
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

    async def _run(self, scope: Scope, send: Send, keyed: KeyedRequest) -> None:
        capture = _Capture()

        async def capturing_send(message: Message) -> None:
            if capture.passed_through:
                await send(message)
                return
            if message["type"] == "http.response.start":
                if keyed.recorded or not is_final(message["status"]):
                    capture.passed_through = True
                    await send(message)
                    return
                capture.start = message
                return
            if message["type"] != "http.response.body" or capture.start is None:
                await send(message)
                return
            chunk: bytes = message.get("body", b"")
            capture.chunks.append(chunk)
            capture.size += len(chunk)
            more = bool(message.get("more_body", False))
            if capture.size > _MAX_STORED_RESPONSE:
                await self._flush(capture, send, more_body=more)
                return
            if more:
                return
            start = capture.start
            stored = storable(
                start["status"], list(start.get("headers", [])), b"".join(capture.chunks)
            )
            if stored is not None:
                await self._record_separately(keyed, stored)
            await self._flush(capture, send, more_body=False)

        await self.app(scope, keyed.fingerprint.receive, capturing_send)

    @staticmethod
    async def _record_separately(keyed: KeyedRequest, stored: StoredResponse) -> None:
        # Shielded: a client that went away must not stop its answer from being kept.
        with anyio.CancelScope(shield=True):
            try:
                request_hash = await keyed.fingerprint.finish()
                await keyed.store.record_separately(keyed.key_scope, request_hash, stored)
            except Exception as exc:
                # Nothing was changed that a retry could duplicate; the answer still goes out.
                log.warning("idempotency_record_failed", error=f"{type(exc).__name__}: {exc}"[:200])

    @staticmethod
    async def _flush(capture: _Capture, send: Send, *, more_body: bool) -> None:
        assert capture.start is not None
        await send(capture.start)
        await send(
            {"type": "http.response.body", "body": b"".join(capture.chunks), "more_body": more_body}
        )
        capture.chunks = []
        capture.passed_through = True

    @staticmethod
    async def _maintain(store: IdempotencyStore) -> None:
        try:
            await store.maintain()
        except Exception as exc:
            log.warning(
                "idempotency_maintenance_failed", error=f"{type(exc).__name__}: {exc}"[:200]
            )
