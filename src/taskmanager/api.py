"""The ``/api/v1`` router: every domain's routes, in the order the docs show them."""

from __future__ import annotations

from fastapi import APIRouter

API_PREFIX = "/api/v1"


def build_api_router() -> APIRouter:
    # Imported here so building the app, not importing this module, pulls in the domains.
    from taskmanager.routes import DOMAIN_ROUTERS

    router = APIRouter(prefix=API_PREFIX)
    for domain_router in DOMAIN_ROUTERS:
        router.include_router(domain_router)
    return router
