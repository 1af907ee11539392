"""Every domain router, listed once."""

from __future__ import annotations

from fastapi import APIRouter

from taskmanager.api_keys.router import router as api_keys_router
from taskmanager.auth.router import router as auth_router
from taskmanager.comments.router import router as comments_router
from taskmanager.projects.router import router as projects_router
from taskmanager.tasks.router import router as tasks_router
from taskmanager.users.router import router as users_router

DOMAIN_ROUTERS: list[APIRouter] = [
    auth_router,
    users_router,
    api_keys_router,
    projects_router,
    tasks_router,
    comments_router,
]
