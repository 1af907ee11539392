"""Load shedding: a bounded number of requests in progress per worker (API.md §8, Overload).

Beyond ``TASKMANAGER_MAX_CONCURRENCY`` requests in progress, a request waits at most
``TASKMANAGER_ADMISSION_TIMEOUT_MS`` for a slot (first come, first served) and otherwise
gets a fast 503 ``SERVICE_UNAVAILABLE`` with ``Retry-After: 1``. Without it, overload turns
into queueing everywhere at once — the event loop, the connection pool, the database — so
every client waits seconds and the pool timeouts then fail requests that already did work;
with it, admitted requests keep their normal latency and the excess learns at once to come
back later. ``/health``, ``/ready`` and ``/metrics`` are never shed: operators and load
balancers need them most when the server is busiest.

A slot is handed directly from a finishing request to the oldest waiter, so a burst cannot
overtake requests that were already waiting.

It is the outermost layer and its 503 is built by hand, because under overload the cost of
each refusal is what decides how much capacity is left for the admitted requests: a shed
request gets its request id, ``X-Process-Time``, the security headers, CORS for an allowed
origin and a metrics count like any answer, but no access-log line of its own — one warning
is logged when shedding starts and one, with the count, when it stops.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable

import orjson
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from taskmanager.kit.errors import ServiceUnavailable
from taskmanager.kit.problems import PROBLEM_CONTENT_TYPE
from taskmanager.middleware.context import request_id_from
from taskmanager.ops.metrics import Metrics

EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})
RETRY_AFTER_SECONDS = 1
SHED_ROUTE = "<shed>"  # the metrics label of refused requests
# Set in the request's scope state on a shed request, for the HTTP server (``serving``).
SHED_STATE_KEY = "taskmanager.shed"
_DETAIL = "The server is at capacity; retry shortly"
# Shedding that pauses this long ends an episode (one log line each way per episode).
_EPISODE_GAP_SECONDS = 5.0

log = structlog.get_logger("taskmanager.shedding")


class LoadSheddingMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        admission_timeout_seconds: float,
        metrics: Metrics,
        security_headers: Iterable[tuple[bytes, bytes]],
        allowed_origins: Iterable[str],
    ) -> None:
        self.app = app
        self.limit = limit
        self.wait = admission_timeout_seconds
        self.metrics = metrics
        self.headers = [
            (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
            (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
            *security_headers,
        ]
        origins = set(allowed_origins)
        self.any_origin = "*" in origins
        self.origins = {origin.encode() for origin in origins}
        self.in_progress = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.shed_total = 0
        self._episode_shed = 0
        self._last_shed = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        if not await self._admit():
            self._note_shed()
            scope.setdefault("state", {})[SHED_STATE_KEY] = True
            await self._refuse(scope, send, start)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._release()

    async def _refuse(self, scope: Scope, send: Send, start: float) -> None:
        """A 503 problem with Retry-After, built directly (see the module docstring)."""
        request_id = request_id_from(scope)
        body = orjson.dumps(
            {
                "type": "about:blank",
                "title": ServiceUnavailable.title(),
                "status": ServiceUnavailable.status,
                "detail": _DETAIL,
                "code": ServiceUnavailable.code,
                "request_id": request_id,
            }
        )
        headers = [
            *self.headers,
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"x-process-time", b"%.4f" % (time.perf_counter() - start)),
        ]
        for name, value in scope["headers"]:
            if name == b"origin":
                if self.any_origin or value in self.origins:
                    headers.append((b"access-control-allow-origin", value))
                    headers.append((b"access-control-expose-headers", b"Retry-After, X-Request-ID"))
                headers.append((b"vary", b"Origin"))
                break
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        self.metrics.observe(SHED_ROUTE, scope["method"], 503, time.perf_counter() - start)

    def _drop_stale(self) -> None:
        waiters = self._waiters
        while waiters and waiters[0].done():
            waiters.popleft()

    async def _admit(self) -> bool:
        """Take a slot, waiting briefly for one; False when none came free in time."""
        self._drop_stale()
        if self.in_progress < self.limit and not self._waiters:
            self.in_progress += 1
            return True
        if self.wait <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait):
                await waiter
        except TimeoutError:
            # The slot may have been handed over just as the wait ran out: then it is ours.
            return waiter.done() and not waiter.cancelled()
        return True

    def _release(self) -> None:
        """Hand the slot to the oldest live waiter, or give it back."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_progress -= 1

    def _note_shed(self) -> None:
        now = time.monotonic()
        self.shed_total += 1
        if now - self._last_shed > _EPISODE_GAP_SECONDS:
            if self._episode_shed:
                log.warning("load_shedding_stopped", shed=self._episode_shed)
            self._episode_shed = 0
            log.warning(
                "load_shedding_started",
                max_concurrency=self.limit,
                admission_timeout_ms=round(self.wait * 1000),
            )
        self._episode_shed += 1
        self._last_shed = now
