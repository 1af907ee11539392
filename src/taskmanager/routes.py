"""Every domain router, listed once."""

from __future__ import annotations

from fastapi import APIRouter

from taskmanager.api_keys.router import router as api_keys_router
from taskmanager.auth.router import router as auth_router
from taskmanager.comments.router import router as comments_router
from taskmanager.projects.router import router as projects_router
from taskmanager.tasks.router import router as tasks_router
from taskmanager.users.router import router as users_router

# FastAPI tries routes in this order, so the busiest domain goes first; the order the
# docs show is OPENAPI_TAGS', not this one.
DOMAIN_ROUTERS: list[APIRouter] = [
    tasks_router,
    projects_router,
    comments_router,
    auth_router,
    users_router,
    api_keys_router,
]

OPENAPI_TAGS: list[dict[str, str]] = [
    {"name": "auth", "description": "Log in, refresh and log out"},
    {"name": "users", "description": "Accounts: registration, your profile, administration"},
    {"name": "api-keys", "description": "Scoped keys for scripts and integrations"},
    {"name": "projects", "description": "Projects and their members"},
    {"name": "tasks", "description": "Tasks: CRUD, lists, search, export"},
    {"name": "comments", "description": "Comments on tasks"},
    {"name": "operations", "description": "Health, readiness and metrics"},
]
