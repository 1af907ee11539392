"""Counters for rate limits and login throttling (fixed windows, the ``limits`` library).

Kept in Redis when ``TASKMANAGER_REDIS_URL`` is set, so every process shares them, else in
this process. When Redis fails (refused, timed out, frozen), the counters degrade to this
process's memory rather than fail or stall: limits still hold per process, a warning is
logged at most once a minute, and Redis is tried again after a back-off that doubles from
5 s up to 60 s while it keeps failing. Each Redis call is bounded by a short timeout.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisStorage, Storage

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool

log = structlog.get_logger("taskmanager.rate_limit")

_WARN_INTERVAL = 60.0
_FIRST_BACKOFF = 5.0
_MAX_BACKOFF = 60.0
REDIS_TIMEOUT_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class Window:
    """One counter after a hit: how many in this window, of how many allowed, and when it
    resets (seconds from now, at least 1)."""

    count: int
    limit: int
    reset_seconds: int

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)


def _limits_uri(redis_url: str) -> str:
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


class Counters:
    """Fixed-window counters shared through Redis, or in process; never raises for storage."""

    def __init__(self, redis_url: str) -> None:
        self.local: Storage = MemoryStorage()
        self._pool: ConnectionPool | None = None
        self.shared: Storage | None = None
        if redis_url:
            from redis.asyncio import ConnectionPool  # only with Redis (start-up cost)

            self._pool = ConnectionPool.from_url(
                redis_url,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            self.shared = RedisStorage(
                _limits_uri(redis_url),
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix="taskmanager:ratelimit",
                # Our own pool (short timeouts), so shutdown can close it.
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
        self._down_until = 0.0
        self._backoff = _FIRST_BACKOFF
        self._last_warning = -math.inf

    @property
    def degraded(self) -> bool:
        """True while Redis is configured but being bypassed after a failure."""
        return self.shared is not None and time.monotonic() < self._down_until

    def _storage(self) -> Storage:
        if self.shared is not None and time.monotonic() >= self._down_until:
            return self.shared
        return self.local

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._down_until = now + self._backoff
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
        if now - self._last_warning >= _WARN_INTERVAL:
            self._last_warning = now
            log.warning(
                "rate_limit_storage_unavailable",
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
                action="counting in this process until Redis answers again",
            )

    def _recovered(self, storage: Storage) -> None:
        if storage is self.shared:
            self._backoff = _FIRST_BACKOFF

    async def hit(self, item: RateLimitItem, key: str) -> Window:
        """Count one event against ``item`` for ``key`` and return the window after it."""
        storage_key = item.key_for(key)
        expiry = item.get_expiry()
        storage = self._storage()
        try:
            count = await storage.incr(storage_key, expiry)
            expires_at = await storage.get_expiry(storage_key)
        except Exception as exc:  # any storage failure: count here instead
            if storage is self.local:
                raise
            self._failed(exc)
            storage = self.local
            count = await storage.incr(storage_key, expiry)
            expires_at = await storage.get_expiry(storage_key)
        else:
            self._recovered(storage)
        reset = min(expiry, max(1, math.ceil(expires_at - time.time())))
        return Window(count=count, limit=item.amount, reset_seconds=reset)

    async def count(self, item: RateLimitItem, key: str) -> int:
        """Events counted against ``item`` for ``key`` in the current window (no hit)."""
        storage = self._storage()
        try:
            return await storage.get(item.key_for(key))
        except Exception as exc:
            if storage is self.local:
                raise
            self._failed(exc)
            return await self.local.get(item.key_for(key))

    async def clear(self, item: RateLimitItem, key: str) -> None:
        storage = self._storage()
        try:
            await storage.clear(item.key_for(key))
        except Exception as exc:
            if storage is self.local:
                raise
            self._failed(exc)
            await self.local.clear(item.key_for(key))

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
