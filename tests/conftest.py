"""Shared fixtures: every integration test runs once on SQLite and once on PostgreSQL.

Each run gets its own databases, built by the Alembic migrations and dropped at the end;
tables are emptied after every test. PostgreSQL and Redis are used when reachable and
skipped with a visible reason when not, except under CI (CI=true), where they are required.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from taskmanager import migrate
from taskmanager.kit.config import Settings, load_settings
from taskmanager.models import Base
from tests.factories import TEST_PASSWORD as TEST_PASSWORD
from tests.factories import TestUser as TestUser
from tests.factories import create_user

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or fail under CI) when a real service is not reachable."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; CI requires it")
    pytest.skip(message)


def redis_url_or_skip() -> str:
    host_port = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    require_service("Redis", host, int(port or 6379))
    return REDIS_URL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (rather than skip) the other backend's variant of backend-specific tests."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database") if callspec else None
        if (item.get_closest_marker("postgres_only") and backend == "sqlite") or (
            item.get_closest_marker("sqlite_only") and backend == "postgres"
        ):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@dataclass
class TestDatabase:
    __test__ = False

    backend: str
    url: str


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """On a pytest-timeout failure, add where everything was waiting.

    The timeout's own traceback shows the main thread, which in an async test is only the
    event loop's ``select``: what a hang needs is every pending task's stack and every
    thread's, so a hang in CI can be read from its output.
    """
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed and call.excinfo is not None and "Timeout (>" in str(call.excinfo.value):
        report.sections.append(("where it waited", _waits()))


def _waits() -> str:
    """Every pending task's await chain and every other thread's stack, as text."""
    lines = []
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
    for loop in loops:
        if loop.is_closed():
            continue
        for task in asyncio.all_tasks(loop):
            lines.append(f"--- task {task.get_name()}")
            awaited: Any = task.get_coro()
            while awaited is not None:  # the coroutine, what it awaits, and so on down
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
                if frame is not None:
                    lines += traceback.format_stack(frame, limit=1)
                awaited = getattr(awaited, "cr_await", None) or getattr(
                    awaited, "gi_yieldfrom", None
                )
    current = threading.get_ident()
    for ident, frame in sys._current_frames().items():
        if ident != current:  # the main thread's stack is the timeout's own traceback
            lines.append(f"--- thread {ident}")
            lines += traceback.format_stack(frame)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


async def _create_pg_database(name: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("taskmanager")


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, run_dir: Path) -> AsyncIterator[TestDatabase]:
    """A migrated database for this test run, on each backend."""
    backend: str = request.param
    if backend == "sqlite":
        path = run_dir / f"test-{uuid.uuid4().hex[:8]}.db"
        db = TestDatabase("sqlite", f"sqlite+aiosqlite:///{path}")
        await migrate.upgrade_async(db.url)
        yield db
        return
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    name = f"taskmanager_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await _create_pg_database(name)
    db = TestDatabase("postgres", f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}")
    try:
        await migrate.upgrade_async(db.url)
        yield db
    finally:
        await _drop_pg_database(name)


def make_settings(database: TestDatabase, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "database_url": database.url,
        "data_dir": data_dir,
        "secret_key": "test-secret-key-that-is-long-enough-0123456789",
        "rate_limit_enabled": False,
        # Tests that fire hundreds of requests at once check correctness, not overload: they
        # queue instead of being shed. The overload and outage tests set their own limits.
        "max_concurrency": 10_000,
        "db_pool_timeout_seconds": 30,
        # Several suites share one PostgreSQL server (max_connections 100): each app keeps
        # to the pool size the suite was written for, not the production default.
        "db_pool_size": 10,
        "webhook_allow_private_targets": True,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return load_settings(**values)


def _cleanup_sql(backend: str) -> str:
    """Empty every table (children first) and restart ids, as one multi-statement script.

    DELETE beats TRUNCATE by far on tables this small: TRUNCATE rewrites files and takes
    exclusive locks on every table, which cost ~0.4 s per test on PostgreSQL.
    """
    tables = list(reversed(Base.metadata.sorted_tables))
    statements = [f"DELETE FROM {t.name}" for t in tables]
    if backend == "postgres":
        for table in tables:
            if "id" in table.c and table.c.id.autoincrement is True:
                statements.append(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), 1, false)"
                )
    else:
        statements.append("DELETE FROM sqlite_sequence")
    return ";\n".join(statements) + ";"


async def _truncate(database: TestDatabase) -> None:
    script = _cleanup_sql(database.backend)
    if database.backend == "postgres":
        conn = await asyncpg.connect(database.url.replace("postgresql+asyncpg", "postgresql"))
        try:
            # The app's background loops (dispatcher, webhook deliverer) may hold row locks
            # the cleanup needs, in the other order: PostgreSQL then aborts one side with a
            # deadlock error, and the whole script (one implicit transaction) is retried.
            for attempt in range(10):
                try:
                    await conn.execute(script)  # simple-query protocol: one round trip
                    break
                except asyncpg.exceptions.DeadlockDetectedError:
                    if attempt == 9:
                        raise
        finally:
            await conn.close()
        return
    path = database.url.split(":///", 1)[1]
    async with aiosqlite.connect(path) as conn:
        await conn.execute("PRAGMA busy_timeout=30000")
        await conn.executescript(script)
        await conn.commit()


@pytest.fixture(scope="session")
async def base_app(database: TestDatabase, run_dir: Path) -> AsyncIterator[FastAPI]:
    from taskmanager.main import create_app

    # No background loops in the shared app: tests that publish events or deliver webhooks
    # drive those steps themselves (or build an app with them, ``make_app``), so nothing
    # numbers, fans out or sweeps behind a test's back.
    app = create_app(
        make_settings(database, run_dir / f"data-{database.backend}", background_in_serve=False)
    )
    async with LifespanManager(app):
        yield app


@pytest.fixture
async def app(base_app: FastAPI, database: TestDatabase) -> AsyncIterator[FastAPI]:
    """The shared app on a clean database (tables emptied after each test)."""
    yield base_app
    await _truncate(database)


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", timeout=60
    )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as c:
        yield c


AppFactory = Callable[..., Awaitable[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
async def make_app(
    database: TestDatabase, tmp_path: Path, app: FastAPI
) -> AsyncIterator[AppFactory]:
    """Build an app with settings overrides (same database; cleaned after the test)."""
    from taskmanager.main import create_app

    stack: list[tuple[LifespanManager, httpx.AsyncClient]] = []

    async def factory(**overrides: Any) -> tuple[FastAPI, httpx.AsyncClient]:
        custom = create_app(make_settings(database, tmp_path / "data", **overrides))
        manager = LifespanManager(custom)
        await manager.__aenter__()
        c = _client(custom)
        stack.append((manager, c))
        return custom, c

    yield factory
    for manager, c in reversed(stack):
        await c.aclose()
        await manager.__aexit__(None, None, None)


UserFactory = Callable[..., Awaitable[TestUser]]


@pytest.fixture
def make_user(app: FastAPI) -> UserFactory:
    """Insert a user (with Inbox) straight into the database and mint an access token."""

    async def factory(
        username: str | None = None, *, role: str = "user", is_active: bool = True
    ) -> TestUser:
        return await create_user(app, username, role=role, is_active=is_active)

    return factory


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert a problem+json response with this status and code; return its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["title"]
    assert body["detail"]
    assert "request_id" in body
    return body
