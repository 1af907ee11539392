"""The domain registry: every resource the API serves, one line each.

Adding a resource is a folder with its router, one line here, its table in ``models/`` and a
migration (README, "Adding a resource"). The app mounts the routers under ``/api/v1`` and
builds the OpenAPI tag list from this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, FastAPI

from taskmanager.api_keys.router import router as api_keys
from taskmanager.attachments.router import router as attachments
from taskmanager.auth.router import router as auth
from taskmanager.comments.router import router as comments
from taskmanager.events.router import router as events
from taskmanager.kit.http import API_PREFIX
from taskmanager.projects.router import router as projects
from taskmanager.tasks.router import router as tasks
from taskmanager.users.router import router as users
from taskmanager.webhooks.openapi import webhook_catalogue
from taskmanager.webhooks.router import router as webhooks


@dataclass(frozen=True, slots=True)
class Domain:
    tag: str  # the OpenAPI tag, also the first part of every operation id
    description: str
    router: APIRouter
    # Matched first: FastAPI tries routes in order, and most requests are for these.
    hot: bool = False


# In the order the docs show them.
DOMAINS: tuple[Domain, ...] = (
    Domain("auth", "Log in, refresh and log out", auth),
    Domain("users", "Accounts: registration, your profile, administration", users),
    Domain("api-keys", "Scoped keys for scripts and integrations", api_keys),
    Domain("projects", "Projects and their members", projects, hot=True),
    Domain("tasks", "Tasks: CRUD, lists, search, export", tasks, hot=True),
    Domain("comments", "Comments on tasks", comments),
    Domain("events", "The live event stream (WebSocket /api/v1/ws)", events),
    Domain("webhooks", "Signed event deliveries to your URLs (Standard Webhooks)", webhooks),
    Domain("attachments", "Files attached to tasks", attachments),
)


def include_domains(app: FastAPI) -> None:
    """Mount every domain router under the API prefix, the busiest first."""
    # Straight onto the app: FastAPI matches included routers lazily, and an extra nesting
    # level multiplies the work of every request's match. Tasks before projects: its
    # /projects/{id}/tasks is the busier of the two.
    for domain in sorted(DOMAINS, key=lambda d: (not d.hot, d.tag != "tasks")):
        app.include_router(domain.router, prefix=API_PREFIX)
    # The OpenAPI ``webhooks`` section: what the server sends, one entry per event type.
    app.webhooks.include_router(webhook_catalogue())


def openapi_tags() -> list[dict[str, str]]:
    return [{"name": d.tag, "description": d.description} for d in DOMAINS] + [
        {"name": "operations", "description": "Health, readiness and metrics"}
    ]
