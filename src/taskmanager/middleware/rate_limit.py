"""Rate limits (fixed windows, the ``limits`` library): in-process, or shared through Redis.

Who is counted:
- a valid bearer token: its user (``user:<id>``), so one user's limit follows them across IPs;
- an API key: the key itself, by its SHA-256 digest (``key:<digest>``), never the secret;
- anyone else, including a bad credential: the client IP.
The login, refresh and registration endpoints are always counted per IP under the stricter
``rate_limit_auth`` limit, since their callers are not authenticated yet.

If Redis fails the limiter fails open: requests are served unlimited, a warning is logged at
most once per ``_WARN_INTERVAL`` and Redis is not retried for ``_RETRY_AFTER_FAILURE`` seconds
(so a dead Redis does not add a connect timeout to every request).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from redis.asyncio import ConnectionPool
from starlette.types import Scope

from taskmanager.kit.authn import claimed_caller
from taskmanager.kit.config import Settings
from taskmanager.kit.errors import InvalidCredentials
from taskmanager.kit.http import API_PREFIX, location

_AUTH_ROUTES = frozenset(
    {
        ("POST", location("auth", "token")),
        ("POST", location("auth", "refresh")),
        ("POST", location("users")),
    }
)
_WARN_INTERVAL = 60.0
_RETRY_AFTER_FAILURE = 5.0
_REDIS_TIMEOUT = 0.5

log = structlog.get_logger("taskmanager.rate_limit")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_seconds).encode()),
        ]
        if not self.allowed:
            out.append((b"retry-after", str(self.reset_seconds).encode()))
        return out


def _limits_uri(redis_url: str) -> str:
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


class RateLimiter:
    """Decides whether a request may proceed, and what to tell the client about its quota."""

    def __init__(self, settings: Settings) -> None:
        self.default_limit: RateLimitItem = parse(settings.rate_limit_default)
        self.auth_limit: RateLimitItem = parse(settings.rate_limit_auth)
        self._pool: ConnectionPool | None = None
        self.storage: Storage
        if settings.redis_url:
            self._pool = ConnectionPool.from_url(
                settings.redis_url,
                socket_timeout=_REDIS_TIMEOUT,
                socket_connect_timeout=_REDIS_TIMEOUT,
            )
            self.storage = RedisStorage(
                _limits_uri(settings.redis_url),
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix="taskmanager:ratelimit",
                # Our own pool (short timeouts), so shutdown can close it.
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
        else:
            self.storage = MemoryStorage()
        self.shared = self._pool is not None
        self._down_until = 0.0
        self._last_warning = -math.inf

    def _identity(self, scope: Scope) -> str:
        try:
            caller = claimed_caller(scope)
        except InvalidCredentials:
            caller = None  # the route will refuse it; until then the caller is just an IP
        return caller or "ip:" + client_ip(scope)

    async def check(self, scope: Scope) -> Decision | None:
        """The decision for a request, or None when it is not limited (or Redis is down)."""
        path: str = scope["path"]
        if not path.startswith(API_PREFIX):
            return None
        if (scope["method"], path.rstrip("/") or "/") in _AUTH_ROUTES:
            item, key = self.auth_limit, "auth:ip:" + client_ip(scope)
        else:
            item, key = self.default_limit, self._identity(scope)
        now = time.time()
        if now < self._down_until:
            return None
        storage_key = item.key_for(key)
        try:
            count = await self.storage.incr(storage_key, item.get_expiry())
            expires_at = await self.storage.get_expiry(storage_key)
        except Exception as exc:  # any storage failure: serve rather than refuse
            self._storage_failed(exc, now)
            return None
        return Decision(
            allowed=count <= item.amount,
            limit=item.amount,
            remaining=max(0, item.amount - count),
            reset_seconds=min(item.get_expiry(), max(1, math.ceil(expires_at - time.time()))),
        )

    def _storage_failed(self, exc: Exception, now: float) -> None:
        self._down_until = now + _RETRY_AFTER_FAILURE
        if now - self._last_warning >= _WARN_INTERVAL:
            self._last_warning = now
            log.warning(
                "rate_limit_storage_unavailable",
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
                action="serving requests without rate limits until it recovers",
            )

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
