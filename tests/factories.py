"""Test data from one place.

Database-level factories (``create_*``) write rows straight through the app's database, so
a test depends on no API but the one it exercises. HTTP helpers (``api_*``) go through the
API and assert the call succeeded. Both take the app (or client) the test runs against.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import Executable, func, insert, select, update

from taskmanager.kit.http import API_PREFIX
from taskmanager.kit.security import create_access_token, digest, hash_password
from taskmanager.models import Base
from taskmanager.models.api_keys import ApiKey
from taskmanager.models.comments import Comment
from taskmanager.models.projects import Project, ProjectMember
from taskmanager.models.tasks import Task
from taskmanager.models.users import User
from taskmanager.projects.inbox import create_inbox

API = API_PREFIX
TASKS = f"{API}/tasks"

# The password every factory user has. Hashed once: Argon2 per test user would dominate
# the suite's time.
TEST_PASSWORD = "Corr3ct-Horse"
# A password that registration accepts, for tests that register through the API.
STRONG_PASSWORD = "Sup3r-secret"
_TEST_PASSWORD_HASH: str | None = None


@dataclass
class TestUser:
    __test__ = False

    id: int
    username: str
    email: str
    role: str
    inbox_id: int
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _user_id(user: TestUser | int) -> int:
    return user if isinstance(user, int) else user.id


# ---- database level -------------------------------------------------------------------------


async def test_password_hash() -> str:
    global _TEST_PASSWORD_HASH
    if _TEST_PASSWORD_HASH is None:
        _TEST_PASSWORD_HASH = await hash_password(TEST_PASSWORD)
    return _TEST_PASSWORD_HASH


def access_token(app: FastAPI, user_id: int, minutes: int = 30) -> str:
    return create_access_token(user_id, app.state.settings.signing_key, timedelta(minutes=minutes))


async def create_user(
    app: FastAPI,
    username: str | None = None,
    *,
    role: str = "user",
    is_active: bool = True,
    email: str | None = None,
) -> TestUser:
    """A user with its Inbox (password ``TEST_PASSWORD``) and a 30-minute access token."""
    username = username or f"user_{uuid.uuid4().hex[:10]}"
    email = email or f"{username}@example.com"
    password_hash = await test_password_hash()
    async with app.state.database.side_transaction() as session:
        user = User(
            email=email,
            username=username,
            password_hash=password_hash,
            role=role,
            is_active=is_active,
        )
        session.add(user)
        await session.flush()
        inbox = await create_inbox(session, user.id)
        user_id, inbox_id = user.id, inbox.id
    return TestUser(user_id, username, email, role, inbox_id, access_token(app, user_id))


async def create_project(
    app: FastAPI, owner: TestUser | int, name: str = "Project", **fields: Any
) -> int:
    """A project owned by ``owner``; returns its id."""
    owner_id = _user_id(owner)
    async with app.state.database.side_transaction() as session:
        project = Project(name=name, created_by=owner_id, **fields)
        session.add(project)
        await session.flush()
        session.add(ProjectMember(project_id=project.id, user_id=owner_id, role="owner"))
        return int(project.id)


async def add_member(app: FastAPI, project_id: int, user: TestUser | int, role: str) -> None:
    async with app.state.database.side_transaction() as session:
        session.add(ProjectMember(project_id=project_id, user_id=_user_id(user), role=role))


async def create_task(
    app: FastAPI, project_id: int, created_by: TestUser | int, title: str = "Task", **fields: Any
) -> int:
    """A task row; returns its id."""
    async with app.state.database.side_transaction() as session:
        task = Task(project_id=project_id, title=title, created_by=_user_id(created_by), **fields)
        session.add(task)
        await session.flush()
        return int(task.id)


async def bulk_tasks(app: FastAPI, rows: list[dict[str, Any]]) -> None:
    """Insert many task rows in one statement (each needs project_id and title)."""
    now = datetime.now(UTC)
    defaults: dict[str, Any] = {
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


async def create_comment(
    app: FastAPI, task_id: int, author: TestUser | int, body: str = "Hi"
) -> int:
    async with app.state.database.side_transaction() as session:
        comment = Comment(task_id=task_id, author_id=_user_id(author), body=body)
        session.add(comment)
        await session.flush()
        return int(comment.id)


async def create_api_key(
    app: FastAPI, user: TestUser | int, scopes: list[str], **fields: Any
) -> dict[str, str]:
    """An API key row for ``user``; returns the ``X-API-Key`` header to send."""
    raw = f"tm_{secrets.token_urlsafe(24)}"
    async with app.state.database.side_transaction() as session:
        session.add(
            ApiKey(
                user_id=_user_id(user),
                name="tests",
                prefix=raw[:8],
                key_hash=digest(raw),
                scopes=scopes,
                **fields,
            )
        )
    return {"X-API-Key": raw}


async def deactivate(app: FastAPI, user: TestUser | int) -> None:
    await db_execute(app, update(User).where(User.id == _user_id(user)).values(is_active=False))


async def db_execute(app: FastAPI, statement: Executable) -> None:
    """Change rows directly, for states a client cannot reach quickly (e.g. expiry)."""
    async with app.state.database.side_transaction() as session:
        await session.execute(statement.execution_options(synchronize_session=False))


async def count_rows(app: FastAPI, model: type[Any], **where: Any) -> int:
    stmt = select(func.count()).select_from(model)
    for column, value in where.items():
        stmt = stmt.where(getattr(model, column) == value)
    async with app.state.database.snapshot() as session:
        return int((await session.execute(stmt)).scalar_one())


async def database_rows(app: FastAPI) -> dict[str, list[Any]]:
    """Every row of every table, by table, in primary-key order: compare before and after
    a request to prove it changed nothing."""
    rows: dict[str, list[Any]] = {}
    async with app.state.database.snapshot() as session:
        for table in Base.metadata.sorted_tables:
            statement = select(table).order_by(*table.primary_key.columns)
            rows[table.name] = [tuple(row) for row in (await session.execute(statement)).all()]
    return rows


async def all_task_rows(app: FastAPI) -> list[Any]:
    async with app.state.database.snapshot() as session:
        return list((await session.execute(select(Task.__table__))).all())


# ---- through the API ------------------------------------------------------------------------


def _json(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    return body


async def api_register(
    client: httpx.AsyncClient,
    username: str,
    *,
    email: str | None = None,
    password: str = STRONG_PASSWORD,
) -> httpx.Response:
    """``POST /users``; the response is returned unchecked (tests assert on it)."""
    return await client.post(
        f"{API}/users",
        json={
            "email": email or f"{username}@example.com",
            "username": username,
            "password": password,
        },
    )


async def api_login_response(
    client: httpx.AsyncClient, username: str, password: str = TEST_PASSWORD
) -> httpx.Response:
    return await client.post(f"{API}/auth/token", data={"username": username, "password": password})


async def api_login(
    client: httpx.AsyncClient, username: str, password: str = TEST_PASSWORD
) -> dict[str, Any]:
    return _json(await api_login_response(client, username, password), 200)


async def api_create_project(
    client: httpx.AsyncClient, owner: TestUser, name: str = "Project", **fields: Any
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/projects", json={"name": name, **fields}, headers=owner.headers
    )
    return _json(response, 201)


async def api_add_member(
    client: httpx.AsyncClient, owner: TestUser, project_id: int, user: TestUser, role: str
) -> None:
    response = await client.post(
        f"{API}/projects/{project_id}/members",
        json={"user_id": user.id, "role": role},
        headers=owner.headers,
    )
    _json(response, 201)


async def api_create_task(
    client: httpx.AsyncClient, user: TestUser, **fields: Any
) -> dict[str, Any]:
    response = await client.post(TASKS, json={"title": "Task", **fields}, headers=user.headers)
    return _json(response, 201)


async def api_get_task(client: httpx.AsyncClient, user: TestUser, task_id: int) -> dict[str, Any]:
    return _json(await client.get(f"{TASKS}/{task_id}", headers=user.headers), 200)


async def api_create_key(
    client: httpx.AsyncClient, headers: dict[str, str], scopes: list[str], **extra: Any
) -> dict[str, Any]:
    body = {"name": "script", "scopes": scopes, "current_password": TEST_PASSWORD, **extra}
    response = await client.post(f"{API}/api-keys", json=body, headers=headers)
    return _json(response, 201)


def etag(task: dict[str, Any]) -> str:
    """The strong ETag the API sends for this task (``"<id>-<version>"``)."""
    return f'"{task["id"]}-{task["version"]}"'


def parse_time(value: str) -> datetime:
    """An RFC 3339 UTC timestamp as the API writes it (always with ``Z``)."""
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


DAY = timedelta(days=1)
