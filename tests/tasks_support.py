"""Helpers for the task tests: projects, members and bulk rows set up straight in the database.

Set up directly so the task tests depend only on the tasks API they exercise.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import insert, select, update

from taskmanager.kit.security import digest
from taskmanager.models.api_keys import ApiKey
from taskmanager.models.projects import Project, ProjectMember
from taskmanager.models.tasks import Task
from taskmanager.models.users import User
from tests.conftest import TestUser

API = "/api/v1"
TASKS = f"{API}/tasks"


async def new_project(app: FastAPI, owner: TestUser, name: str = "Project") -> int:
    async with app.state.database.side_transaction() as session:
        project = Project(name=name, created_by=owner.id)
        session.add(project)
        await session.flush()
        session.add(ProjectMember(project_id=project.id, user_id=owner.id, role="owner"))
        await session.commit()
        return project.id


async def add_member(app: FastAPI, project_id: int, user: TestUser, role: str) -> None:
    async with app.state.database.side_transaction() as session:
        session.add(ProjectMember(project_id=project_id, user_id=user.id, role=role))
        await session.commit()


async def deactivate(app: FastAPI, user: TestUser) -> None:
    async with app.state.database.side_transaction() as session:
        await session.execute(update(User).where(User.id == user.id).values(is_active=False))
        await session.commit()


async def api_key(app: FastAPI, user: TestUser, scopes: list[str]) -> dict[str, str]:
    """An API key for ``user`` with these scopes; returns the header to send."""
    raw = f"tm_{secrets.token_urlsafe(24)}"
    async with app.state.database.side_transaction() as session:
        session.add(
            ApiKey(
                user_id=user.id,
                name="tests",
                prefix=raw[:8],
                key_hash=digest(raw),
                scopes=scopes,
                last_used_at=datetime.now(UTC),
            )
        )
        await session.commit()
    return {"X-API-Key": raw}


async def bulk_tasks(app: FastAPI, rows: list[dict[str, Any]]) -> None:
    """Insert many task rows in one statement (each needs project_id and title)."""
    now = datetime.now(UTC)
    defaults = {
        "description": None,
        "status": "pending",
        "priority": 1,
        "due_date": None,
        "tags": [],
        "assignee_id": None,
        "created_by": None,
        "created_at": now,
        "updated_at": now,
        "completed_at": None,
        "version": 1,
    }
    async with app.state.database.side_transaction() as session:
        await session.execute(insert(Task), [{**defaults, **row} for row in rows])
        await session.commit()


async def all_task_rows(app: FastAPI) -> list[Any]:
    async with app.state.database.snapshot() as session:
        return list((await session.execute(select(Task.__table__))).all())


async def create(client: httpx.AsyncClient, user: TestUser, **fields: Any) -> dict[str, Any]:
    body = {"title": "Task", **fields}
    response = await client.post(TASKS, json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


async def fetch(client: httpx.AsyncClient, user: TestUser, task_id: int) -> dict[str, Any]:
    response = await client.get(f"{TASKS}/{task_id}", headers=user.headers)
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


def etag(task: dict[str, Any]) -> str:
    return f'"{task["id"]}-{task["version"]}"'


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


DAY = timedelta(days=1)
