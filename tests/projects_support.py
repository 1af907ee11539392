"""Helpers shared by the project, member, comment and authorization tests."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
from fastapi import FastAPI

from taskmanager.kit.security import digest
from taskmanager.models.api_keys import ApiKey
from taskmanager.models.comments import Comment
from taskmanager.models.tasks import Task
from tests.conftest import TestUser

API = "/api/v1"


async def create_project(
    client: httpx.AsyncClient, owner: TestUser, name: str = "Project", **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/projects", json={"name": name, **fields}, headers=owner.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def add_member(
    client: httpx.AsyncClient, owner: TestUser, project_id: int, user: TestUser, role: str
) -> None:
    response = await client.post(
        f"{API}/projects/{project_id}/members",
        json={"user_id": user.id, "role": role},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text


async def insert_api_key(app: FastAPI, user: TestUser, scopes: list[str]) -> dict[str, str]:
    """An API key row for ``user`` (inserted directly); returns the X-API-Key header."""
    raw = f"tm_{secrets.token_urlsafe(24)}"
    async with app.state.database.side_transaction() as session:
        session.add(
            ApiKey(
                user_id=user.id, name="test", prefix=raw[:8], key_hash=digest(raw), scopes=scopes
            )
        )
        await session.commit()
    return {"X-API-Key": raw}


async def insert_task(
    app: FastAPI, project_id: int, created_by: int, title: str = "Task", **fields: Any
) -> int:
    """A task row inserted directly, independent of the tasks API."""
    async with app.state.database.side_transaction() as session:
        task = Task(project_id=project_id, title=title, created_by=created_by, **fields)
        session.add(task)
        await session.flush()
        task_id = task.id
        await session.commit()
    return task_id


async def insert_comment(app: FastAPI, task_id: int, author_id: int, body: str = "Hi") -> int:
    async with app.state.database.side_transaction() as session:
        comment = Comment(task_id=task_id, author_id=author_id, body=body)
        session.add(comment)
        await session.flush()
        comment_id = comment.id
        await session.commit()
    return comment_id


async def count_rows(app: FastAPI, model: type[Any], **where: Any) -> int:
    from sqlalchemy import func, select

    stmt = select(func.count()).select_from(model)
    for column, value in where.items():
        stmt = stmt.where(getattr(model, column) == value)
    async with app.state.database.snapshot() as session:
        return int((await session.execute(stmt)).scalar_one())
