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
overtake requests that were already waiting. One warning line is logged when shedding starts
and one (with the count) when it stops.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from taskmanager.kit.errors import ServiceUnavailable
from taskmanager.kit.problems import scope_problem

EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics"})
RETRY_AFTER_SECONDS = 1
# Shedding that pauses this long ends an episode (one log line each way per episode).
_EPISODE_GAP_SECONDS = 5.0

log = structlog.get_logger("taskmanager.shedding")


class LoadSheddingMiddleware:
    def __init__(self, app: ASGIApp, *, limit: int, admission_timeout_seconds: float) -> None:
        self.app = app
        self.limit = limit
        self.wait = admission_timeout_seconds
        self.in_progress = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.shed_total = 0
        self._episode_shed = 0
        self._last_shed = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if not await self._admit():
            self._note_shed()
            error = ServiceUnavailable(
                "The server is at capacity; retry shortly",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
            await scope_problem(scope, error)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._release()

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
