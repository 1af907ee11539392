"""The ``/api/v1`` routes: every domain router, mounted in the order the docs show them."""

from __future__ import annotations

from fastapi import FastAPI

API_PREFIX = "/api/v1"


def include_api_routers(app: FastAPI) -> None:
    # Imported here so building the app, not importing this module, pulls in the domains.
    from taskmanager.routes import DOMAIN_ROUTERS

    # Each domain router goes straight onto the app: FastAPI matches included routers
    # lazily, and an extra nesting level multiplies the work of every request's match.
    for domain_router in DOMAIN_ROUTERS:
        app.include_router(domain_router, prefix=API_PREFIX)
