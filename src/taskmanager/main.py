"""The application factory. Nothing happens at import time; ``create_app`` builds it all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis

from taskmanager import __version__
from taskmanager.api import build_api_router
from taskmanager.config import Settings, load_settings
from taskmanager.db import Database
from taskmanager.logging import configure_logging
from taskmanager.middleware import install_middleware
from taskmanager.problems import install_exception_handlers

DESCRIPTION = """
A self-hostable task-management API.

Authenticate with `Authorization: Bearer <access token>` (from `POST /api/v1/auth/token`)
or `X-API-Key: <key>`. Every error is `application/problem+json` (RFC 9457).
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    database = Database(settings)
    app.state.database = database
    # Shared by rate limits, idempotency records and readiness; None means in-process.
    app.state.redis = (
        Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        if settings.redis_url
        else None
    )
    try:
        yield
    finally:
        if app.state.redis is not None:
            await app.state.redis.aclose()
        await database.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings)
    app = FastAPI(
        title="Taskmanager",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    install_exception_handlers(app)
    app.include_router(build_api_router())
    install_middleware(app, settings)
    return app
