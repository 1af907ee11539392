"""The application factory. Nothing happens at import time; ``create_app`` builds it all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from fastapi import FastAPI
from starlette.routing import Mount, Route

from taskmanager import __version__, background
from taskmanager.attachments.sweep import sweep_loop
from taskmanager.docs import install_docs, install_openapi
from taskmanager.events.hub import Hub
from taskmanager.idempotency.store import purge_legacy_redis_records
from taskmanager.kit.availability import Breaker
from taskmanager.kit.config import Settings, load_settings
from taskmanager.kit.db import Database
from taskmanager.kit.logging import configure_logging
from taskmanager.kit.mail import Mailer
from taskmanager.kit.problems import install_exception_handlers
from taskmanager.kit.routing import CheckedRoute, match_included_routers_once
from taskmanager.kit.security import configure_password_hashing
from taskmanager.kit.storage import open_storage
from taskmanager.kit.throttle import Counters
from taskmanager.middleware import install_middleware
from taskmanager.middleware.context import API_CSP
from taskmanager.ops.metrics import Metrics
from taskmanager.ops.router import router as ops_router
from taskmanager.registry import include_domains, openapi_tags

if TYPE_CHECKING:
    # Imported where a client is made: without TASKMANAGER_REDIS_URL nothing needs redis-py.
    from redis.asyncio import Redis

DESCRIPTION = """
A self-hostable task-management API.

Authenticate with `Authorization: Bearer <access token>` (from `POST /api/v1/auth/token`;
the **Authorize** button does this for you) or `X-API-Key: <key>`. Every error is
`application/problem+json` (RFC 9457) with a `code` and the `request_id` to quote.
Requests under `/api/v1` are rate limited; see the `RateLimit-*` response headers.
"""

_POOL_SAMPLE_SECONDS = 5.0

log = structlog.get_logger("taskmanager.main")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    database = Database(settings)
    app.state.database = database
    app.state.storage = await open_storage(settings.effective_storage_url)
    # Shared Redis (events, readiness); None means in-process. Callers check the breaker
    # first and report failures to it, so a frozen Redis costs one timeout, not one each.
    app.state.redis_breaker = Breaker("redis", backoff_seconds=settings.outage_backoff_seconds)
    app.state.redis = redis_client(settings) if settings.redis_url else None
    if app.state.redis is not None:
        await _purge_legacy_idempotency_records(app.state.redis)
    # WebSocket subscribers of this process; the background loops number and publish events.
    hub = Hub(
        database,
        settings,
        draining=lambda: bool(getattr(app.state, "draining", False)),
        redis=app.state.redis,
    )
    app.state.hub = hub
    try:
        async with anyio.create_task_group() as tasks:
            if metrics.multiprocess:
                tasks.start_soon(_sample_pools, metrics)
            # Removes attachment objects no row references (a crash between writing and
            # committing); idempotent, so every serving process may run it.
            if settings.background_in_serve:
                tasks.start_soon(sweep_loop, database, app.state.storage)
            async with background.running(
                database,
                settings,
                redis=app.state.redis,
                hub=hub,
                loops=settings.background_in_serve,
            ):
                yield
            tasks.cancel_scope.cancel()
    finally:
        await app.state.counters.aclose()
        if app.state.redis is not None:
            await app.state.redis.aclose()
        await app.state.storage.aclose()
        await database.dispose()
        metrics.mark_process_dead()


async def _purge_legacy_idempotency_records(redis: Redis) -> None:
    """Best effort: an unreachable Redis must not stop the start (its records expire anyway)."""
    try:
        with anyio.fail_after(5):
            removed = await purge_legacy_redis_records(redis)
    except Exception as exc:
        log.warning("legacy_idempotency_purge_failed", error=f"{type(exc).__name__}: {exc}"[:200])
        return
    if removed:
        log.info("legacy_idempotency_records_purged", count=removed)


def redis_client(settings: Settings) -> Redis:
    """A client whose every wait is bounded: connect and socket timeouts, no retries.

    redis-py retries failed commands three times with back-off by default, which turns one
    timeout into four; the breaker (``kit.availability``) is the retry policy instead.
    """
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


async def _sample_pools(metrics: Metrics) -> None:
    while True:
        metrics.sample_pools()
        await anyio.sleep(_POOL_SAMPLE_SECONDS)


def _endpoint_templates(app: FastAPI) -> dict[Any, str]:
    """Path templates of the top-level Starlette routes and mounts, by endpoint."""
    templates: dict[Any, str] = {}
    for route in app.routes:
        if isinstance(route, Route):
            templates[route.endpoint] = route.path_format
        elif isinstance(route, Mount):
            templates[route.app] = route.path + "/{path}"
    return templates


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings)
    app = FastAPI(
        title="Taskmanager",
        openapi_tags=openapi_tags(),
        # Metrics are Prometheus (/metrics); FastAPI's native OpenTelemetry hook would
        # otherwise look up the global providers, reading os.environ, on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        # 415 instead of a confusing 422 when a body comes with the wrong content type.
    )
    # The app's own routes (docs pages) get the same route class as the domains' (HEAD...).
    app.router.route_class = CheckedRoute
    app.state.settings = settings
    app.state.metrics = Metrics(app.state)
    app.state.counters = Counters(settings.redis_url)
    app.state.mailer = Mailer(settings)
    configure_password_hashing(
        concurrency=settings.password_hash_concurrency,
        wait_seconds=settings.password_hash_wait_seconds,
    )
    install_exception_handlers(
        app, postgresql=not settings.is_sqlite, redis=bool(settings.redis_url)
    )
    app.include_router(ops_router)
    include_domains(app)
    # TASKMANAGER_DOCS_ENABLED=false: no /docs, /redoc or /openapi.json (404, like any path).
    docs_csp = install_docs(app) if settings.docs_enabled else API_CSP
    install_openapi(app)
    match_included_routers_once(app.router.routes)
    templates = _endpoint_templates(app)
    install_middleware(app, settings, docs_csp=docs_csp, endpoint_templates=templates)
    return app
