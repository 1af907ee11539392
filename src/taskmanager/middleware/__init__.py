"""Pure ASGI middleware, installed in one place so the order is visible.

Starlette wraps in reverse order of ``add_middleware``: the last added is the outermost.
From the network inwards:

0. uvicorn's ``ProxyHeadersMiddleware`` — the client address and scheme from
   ``X-Forwarded-For``/``-Proto``, believed only from ``TASKMANAGER_FORWARDED_ALLOW_IPS``
   (the same rule ``taskmanager serve`` gives uvicorn; applying it twice changes nothing).
   Outermost, so the access log, rate limits and login throttling all see one address.
1. ``LoadSheddingMiddleware`` — at most ``max_concurrency`` requests in progress; the
   excess waits briefly, then gets a fast 503. Before the context, and its 503 is built by
   hand (request id, timing, security and CORS headers, a metrics count, no per-request log
   line): under overload, what a refusal costs is taken from the admitted requests.
2. ``RequestContextMiddleware`` — request id, X-Process-Time, security headers, access log,
   metrics. Outside the rest so that every response, including CORS preflights and the errors
   below, carries them and is logged and counted once.
3. ``OriginGatedCORSMiddleware`` (Starlette's CORS, only for requests with an Origin):
   answers preflights and adds CORS headers to everything inside it, so a browser
   can read a 429/413/504 too.
4. ``RequestGuardMiddleware`` — header-section size (431), rate limit, body-size limit,
   request time budget, 503 for an unreachable dependency, and the problem+json 500 for
   anything unhandled.
5. (innermost, slot below) idempotency: replays stored POST responses. Inside the guard, so
   a replay is rate limited and size limited like any request, and the time budget covers it.

Then Starlette's ExceptionMiddleware (problems.py handlers) and the router.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from taskmanager.idempotency.middleware import IdempotencyMiddleware
from taskmanager.kit.config import Settings
from taskmanager.middleware.context import RequestContextMiddleware, api_security_headers
from taskmanager.middleware.cors import OriginGatedCORSMiddleware
from taskmanager.middleware.guard import RequestGuardMiddleware
from taskmanager.middleware.rate_limit import RateLimiter
from taskmanager.middleware.shedding import LoadSheddingMiddleware

EXPOSED_HEADERS = [
    "X-Request-ID",
    "X-Process-Time",
    "ETag",
    "Location",
    "X-Total-Count",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Retry-After",
    "Idempotent-Replayed",
    "Content-Disposition",
]
ALLOWED_HEADERS = [
    "Authorization",
    "Content-Type",
    "X-API-Key",
    "X-Request-ID",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
]


def install_middleware(
    app: FastAPI,
    settings: Settings,
    *,
    docs_csp: str,
    endpoint_templates: dict[Any, str],
) -> None:
    """Install every middleware, innermost first."""
    # ---- (innermost) idempotency slot: the idempotency helper adds its ONE line here ----
    app.add_middleware(IdempotencyMiddleware)

    # ---- limits: rate, body size, time budget; 500 of last resort ----
    limiter = RateLimiter(settings, app.state.counters) if settings.rate_limit_enabled else None
    app.state.rate_limiter = limiter
    app.add_middleware(RequestGuardMiddleware, settings=settings, limiter=limiter)

    # ---- CORS: only configured origins; credentials never together with "*" ----
    wildcard = "*" in settings.allowed_origins
    app.add_middleware(
        OriginGatedCORSMiddleware,
        allow_origins=settings.allowed_origins,
        allow_credentials=not wildcard,
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )

    # ---- request context: id, timing, security headers, access log, metrics ----
    app.add_middleware(
        RequestContextMiddleware,
        metrics=app.state.metrics,
        docs_csp=docs_csp,
        endpoint_templates=endpoint_templates,
    )

    # ---- overload: bounded requests in progress, brief admission wait, 503 ----
    app.add_middleware(
        LoadSheddingMiddleware,
        limit=settings.effective_max_concurrency,
        admission_timeout_seconds=settings.admission_timeout_ms / 1000,
        metrics=app.state.metrics,
        security_headers=api_security_headers(),
        allowed_origins=settings.allowed_origins,
    )

    # ---- (outermost of all) who the client is, behind trusted proxies only ----
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
