"""Rate limits (fixed windows, ``kit.throttle.Counters``): in-process, or shared through Redis.

Who is counted — only a *verified* credential names a user:
- a bearer token whose signature checks out: its user (``user:<id>``);
- an API key found live in the database: its owner (``user:<id>``), so every token and key
  of one user share that user's bucket. Verified keys are remembered per process for a few
  seconds (``kit.authn.verified_user_id``), so the limiter costs no query per request, and
  a lookup it does make is reused by the route;
- anyone else — no credential, or one that does not verify — the client address. A bad
  credential also counts as a failed authentication against the address's auth limit, as
  does any 401 a route gives (a token ended by "log out everywhere", a wrong
  ``current_password``): once that limit is spent, the address gets 429.

The unauthenticated credential routes (login, refresh, registration, password reset) are
counted per address under the stricter ``rate_limit_auth``; the routes that check a password
of a signed-in user (password change, API-key creation, changing or deleting the account)
under the same limit per user. Logins are further throttled per account in ``auth.throttle``.

The client address is ``scope["client"]`` as ``ProxyHeadersMiddleware`` left it: taken from
``X-Forwarded-For`` only when the peer is in ``TASKMANAGER_FORWARDED_ALLOW_IPS`` — the rule
``taskmanager serve`` also gives uvicorn.

If Redis fails the counters degrade to this process (``kit.throttle``): never a 500, never a
stall.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from limits import RateLimitItem, parse
from starlette.types import Scope

from taskmanager.kit.authn import verified_user_id
from taskmanager.kit.config import Settings
from taskmanager.kit.errors import InvalidCredentials
from taskmanager.kit.http import API_PREFIX, location
from taskmanager.kit.throttle import Counters, Window

# Unauthenticated routes that accept a credential or mint one: per address, auth limit.
PUBLIC_AUTH_ROUTES = frozenset(
    {
        ("POST", location("auth", "token")),
        ("POST", location("auth", "refresh")),
        ("POST", location("users")),
        ("POST", location("auth", "password-reset")),
        ("POST", location("auth", "password-reset", "confirm")),
    }
)
# Signed-in routes that verify the current password: per user, auth limit.
STEP_UP_ROUTES = frozenset(
    {
        ("POST", location("users", "me", "password")),
        ("PATCH", location("users", "me")),
        ("DELETE", location("users", "me")),
        ("POST", location("api-keys")),
    }
)
_FAILURE_COUNTED = "auth_failure_counted"

log = structlog.get_logger("taskmanager.rate_limit")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    @classmethod
    def of(cls, window: Window) -> Decision:
        return cls(
            allowed=not window.exceeded,
            limit=window.limit,
            remaining=window.remaining,
            reset_seconds=window.reset_seconds,
        )

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_seconds).encode()),
        ]
        if not self.allowed:
            out.append((b"retry-after", str(self.reset_seconds).encode()))
        return out


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimiter:
    """Decides whether a request may proceed, and what to tell the client about its quota."""

    def __init__(self, settings: Settings, counters: Counters) -> None:
        self.default_limit: RateLimitItem = parse(settings.rate_limit_default)
        self.auth_limit: RateLimitItem = parse(settings.rate_limit_auth)
        self.counters = counters

    @property
    def shared(self) -> bool:
        return self.counters.shared is not None

    async def _caller(self, scope: Scope) -> tuple[int | None, bool]:
        """(verified user id or None, whether the credential failed to verify)."""
        try:
            return await verified_user_id(scope), False
        except InvalidCredentials:
            return None, True
        except Exception as exc:
            # The key could not be looked up (database down): count by address; the route
            # answers for the database itself.
            log.debug("rate_limit_identity_unavailable", error=type(exc).__name__)
            return None, False

    async def check(self, scope: Scope) -> Decision | None:
        """The decision for a request; None when it is not limited (not under the API)."""
        path: str = scope["path"]
        if not path.startswith(API_PREFIX):
            return None
        route = (scope["method"], path.rstrip("/") or "/")
        address = client_ip(scope)
        if route in PUBLIC_AUTH_ROUTES:
            # Counted up front: a failure here needs no second count after the response.
            scope.setdefault("state", {})[_FAILURE_COUNTED] = True
            return Decision.of(await self.counters.hit(self.auth_limit, "auth:ip:" + address))
        user_id, failed = await self._caller(scope)
        if failed:
            scope.setdefault("state", {})[_FAILURE_COUNTED] = True
            failures = await self.counters.hit(self.auth_limit, "auth:ip:" + address)
            if failures.exceeded:
                return Decision.of(failures)
        caller = f"user:{user_id}" if user_id is not None else "ip:" + address
        if route in STEP_UP_ROUTES:
            return Decision.of(await self.counters.hit(self.auth_limit, "auth:" + caller))
        return Decision.of(await self.counters.hit(self.default_limit, caller))

    async def after_response(self, scope: Scope, status: int) -> None:
        """A 401 the route gave (a credential it refused, a wrong current password) counts as
        a failed authentication against the address's auth limit."""
        if status != 401 or scope.get("state", {}).get(_FAILURE_COUNTED):
            return
        await self.counters.hit(self.auth_limit, "auth:ip:" + client_ip(scope))
