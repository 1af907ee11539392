"""The yardstick: bare FastAPI routes that do one route's database work and nothing else.

No authentication, middleware, events or error mapping: each route runs the statements a
hand-written endpoint needs for the same answer (the caller's user id comes in the query
string instead of a token) and returns the rows as FastAPI's default JSON. Served by the same
uvicorn as the real app, so a ratio measures our stack, not the server.

Environment: ``BENCH_DSN`` (``postgresql://...`` for asyncpg or ``sqlite:///path`` for
aiosqlite), ``BENCH_POOL_SIZE`` (PostgreSQL pool, default 32, like the app's),
``BENCH_SQLITE_READERS`` (read connections, default 8, like the app's) and
``BENCH_SQLITE_SYNCHRONOUS`` (default FULL, like the app), ``BENCH_PASSWORD_HASH`` (the hash
the login route verifies, made with the app's Argon2 parameters: bench/passwords.py),
``BENCH_ECHO_REQUEST_ID=1`` (echo ``X-Request-ID`` so the overload scenario can time each
answer).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

import aiosqlite
import asyncpg
import jwt
from fastapi import FastAPI, Form, HTTPException, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.passwords import password_hasher

DSN = os.environ["BENCH_DSN"]
SQLITE = DSN.startswith("sqlite:///")
COLUMNS = (
    "id, project_id, title, description, status, priority, due_date, tags, assignee_id, "
    "created_by, created_at, updated_at, completed_at, version"
)
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite
TOKEN_KEY = "bench-baseline-signing-key-0123456789abcdef"


def param(n: int) -> str:
    """The n-th (1-based) query parameter in the driver's syntax."""
    return f"?{n}" if SQLITE else f"${n}"


def typed(n: int, pg_type: str) -> str:
    """PostgreSQL cannot infer a parameter's type in ``INSERT ... SELECT``; SQLite needs none."""
    return param(n) if SQLITE else f"${n}::{pg_type}"


def timestamp(value: datetime) -> Any:
    return value.astimezone(UTC).strftime(SQLITE_TIME) if SQLITE else value


def visible(user: str) -> str:
    return f"project_id IN (SELECT project_id FROM project_members WHERE user_id = {user})"


GET_SQL = f"SELECT {COLUMNS} FROM tasks WHERE id = {param(1)}"
# Insert into a project the caller may write to and read the row back, in one statement.
INSERT_SQL = (
    "INSERT INTO tasks (project_id, title, description, status, priority, tags, created_by, "
    f"created_at, updated_at, version) SELECT {typed(1, 'bigint')}, {typed(2, 'text')}, "
    f"{typed(3, 'text')}, 'pending', {typed(4, 'smallint')}, {typed(5, 'jsonb')}, "
    f"{typed(6, 'bigint')}, {typed(7, 'timestamptz')}, {param(7)}, 1 "
    f"WHERE EXISTS (SELECT 1 FROM project_members WHERE project_id = {param(1)} "
    f"AND user_id = {param(6)} AND role IN ('owner', 'editor')) RETURNING {COLUMNS}"
)
UPDATE_SQL = (
    f"UPDATE tasks SET title = coalesce({param(3)}, title), "
    f"priority = coalesce({param(4)}, priority), version = version + 1, updated_at = {param(5)} "
    f"WHERE id = {param(1)} AND project_id IN (SELECT project_id FROM project_members "
    f"WHERE user_id = {param(2)} AND role IN ('owner', 'editor')) RETURNING {COLUMNS}"
)
LOGIN_SQL = f"SELECT id FROM users WHERE username = {param(1)} AND is_active"


class Driver(Protocol):
    """The few database operations the routes need."""

    async def one(self, sql: str, args: Sequence[Any], *, write: bool = False) -> Any: ...

    async def page(
        self, page_sql: str, page_args: Sequence[Any], count_sql: str, count_args: Sequence[Any]
    ) -> tuple[list[Any], int]: ...

    async def close(self) -> None: ...


class PostgresDriver:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @classmethod
    async def open(cls) -> PostgresDriver:
        size = int(os.environ.get("BENCH_POOL_SIZE", "32"))
        return cls(await asyncpg.create_pool(DSN, min_size=size, max_size=size))

    async def one(self, sql: str, args: Sequence[Any], *, write: bool = False) -> Any:
        row = await self.pool.fetchrow(sql, *args)
        return dict(row) if row is not None else None

    async def page(
        self, page_sql: str, page_args: Sequence[Any], count_sql: str, count_args: Sequence[Any]
    ) -> tuple[list[Any], int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(page_sql, *page_args)
            total = await conn.fetchval(count_sql, *count_args)
        return [dict(row) for row in rows], int(total)

    async def close(self) -> None:
        await self.pool.close()


class SqliteDriver:
    """One writer connection (aiosqlite serialises its statements) and a few readers."""

    def __init__(self, writer: aiosqlite.Connection, readers: list[aiosqlite.Connection]):
        self.writer = writer
        self.readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for reader in readers:
            self.readers.put_nowait(reader)
        self.all = [writer, *readers]

    @classmethod
    async def open(cls) -> SqliteDriver:
        path = DSN.removeprefix("sqlite:///")
        synchronous = os.environ.get("BENCH_SQLITE_SYNCHRONOUS", "FULL")
        connections = []
        for _ in range(1 + int(os.environ.get("BENCH_SQLITE_READERS", "8"))):
            # Autocommit: each statement is its own transaction, as the one-statement routes need.
            conn = await aiosqlite.connect(path, isolation_level=None)
            conn.row_factory = sqlite3.Row
            for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=30000"):
                await conn.execute(f"PRAGMA {pragma}")
            await conn.execute(f"PRAGMA synchronous={synchronous}")
            connections.append(conn)
        return cls(connections[0], connections[1:])

    async def one(self, sql: str, args: Sequence[Any], *, write: bool = False) -> Any:
        if write:
            rows = list(await self.writer.execute_fetchall(sql, args))
        else:
            reader = await self.readers.get()
            try:
                rows = list(await reader.execute_fetchall(sql, args))
            finally:
                self.readers.put_nowait(reader)
        return dict(rows[0]) if rows else None

    async def page(
        self, page_sql: str, page_args: Sequence[Any], count_sql: str, count_args: Sequence[Any]
    ) -> tuple[list[Any], int]:
        reader = await self.readers.get()
        try:
            rows = await reader.execute_fetchall(page_sql, page_args)
            (count,) = list(await reader.execute_fetchall(count_sql, count_args))
        finally:
            self.readers.put_nowait(reader)
        return [dict(row) for row in rows], int(count[0])

    async def close(self) -> None:
        for conn in self.all:
            await conn.close()


class TaskIn(BaseModel):
    project_id: int
    title: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    priority: int = Field(default=1, ge=1, le=5)
    tags: list[str] = Field(default_factory=list, max_length=20)


class TaskPatch(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=200)
    priority: int | None = Field(default=None, ge=1, le=5)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    driver: Driver = await (SqliteDriver.open() if SQLITE else PostgresDriver.open())
    app.state.driver = driver
    yield
    await driver.close()


api = FastAPI(lifespan=lifespan)
hasher = password_hasher()
PASSWORD_HASH = os.environ.get("BENCH_PASSWORD_HASH", "")


def _db() -> Driver:
    driver: Driver = api.state.driver
    return driver


def _encode_tags(tags: list[str]) -> str:
    return json.dumps(sorted({tag.lower() for tag in tags}))


@api.get("/health")
async def health() -> dict[str, str]:
    return {"status": "healthy"}


@api.get("/tasks/{task_id}")
async def get_task(task_id: int) -> Any:
    row = await _db().one(GET_SQL, (task_id,))
    if row is None:
        raise HTTPException(404)
    return row


@api.post("/tasks", status_code=201)
async def create_task(task: TaskIn, user: int) -> Any:
    now = timestamp(datetime.now(UTC))
    tags = _encode_tags(task.tags)
    args = (task.project_id, task.title, task.description, task.priority, tags, user, now)
    row = await _db().one(INSERT_SQL, args, write=True)
    if row is None:
        raise HTTPException(404)
    return row


@api.patch("/tasks/{task_id}")
async def update_task(task_id: int, patch: TaskPatch, user: int) -> Any:
    args = (task_id, user, patch.title, patch.priority, timestamp(datetime.now(UTC)))
    row = await _db().one(UPDATE_SQL, args, write=True)
    if row is None:
        raise HTTPException(404)
    return row


@api.get("/tasks")
async def list_tasks(
    user: int,
    limit: int = Query(20, ge=1, le=100),
    skip: int = Query(0, ge=0),
    status: str | None = None,
    tag: str | None = None,
    q: str | None = None,
    after_created_at: str | None = None,
    after_id: int | None = None,
) -> Any:
    """One page newest first plus the total, as the app's list; keyset when ``after_*`` is set."""
    args: list[Any] = [user]
    conditions = [visible(param(1))]

    def bind(value: Any) -> str:
        args.append(value)
        return param(len(args))

    if status is not None:
        conditions.append(f"status = {bind(status)}")
    if tag is not None:
        if SQLITE:
            conditions.append(f"EXISTS (SELECT 1 FROM json_each(tags) WHERE value = {bind(tag)})")
        else:
            conditions.append(f"tags @> jsonb_build_array(CAST({bind(tag)} AS text))")
    if q is not None:
        pattern = bind("%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        like = "LIKE" if SQLITE else "ILIKE"
        conditions.append(
            f"(title {like} {pattern} ESCAPE '\\' OR description {like} {pattern} ESCAPE '\\')"
        )
    where = " AND ".join(conditions)
    count_args = list(args)
    if after_created_at is not None and after_id is not None:
        seek = after_created_at if SQLITE else datetime.fromisoformat(after_created_at)
        where_page = f"{where} AND (created_at, id) < ({bind(seek)}, {bind(after_id)})"
    else:
        where_page = where
    page_sql = (
        f"SELECT {COLUMNS} FROM tasks WHERE {where_page} "
        f"ORDER BY created_at DESC, id DESC LIMIT {bind(limit)} OFFSET {bind(skip)}"
    )
    count_sql = f"SELECT count(*) FROM tasks WHERE {where}"
    items, total = await _db().page(page_sql, args, count_sql, count_args)
    return {"items": items, "total": total, "skip": skip, "limit": limit}


@api.post("/token")
async def login(username: str = Form(), password: str = Form()) -> dict[str, str]:
    user = await _db().one(LOGIN_SQL, (username,))
    ok = await run_in_threadpool(hasher.verify, password, PASSWORD_HASH)
    if user is None or not ok:
        raise HTTPException(401)
    token = jwt.encode({"sub": str(user["id"])}, TOKEN_KEY, algorithm="HS256")
    return {"access_token": token, "token_type": "bearer"}


def echo_request_id(inner: ASGIApp) -> ASGIApp:
    """Echo the client's ``X-Request-ID``, as the app does, so answers can be matched."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request_id = next(
            (value for name, value in scope.get("headers", ()) if name == b"x-request-id"), None
        )
        if scope["type"] != "http" or request_id is None:
            await inner(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"x-request-id", request_id)]
                message = {**message, "headers": headers}
            await send(message)

        await inner(scope, receive, send_with_id)

    return app


app: ASGIApp = echo_request_id(api) if os.environ.get("BENCH_ECHO_REQUEST_ID") == "1" else api
