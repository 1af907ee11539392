"""Database round trips per request, counted (never timed): the budget of each hot route.

``counting`` records every statement one HTTP request sends, on every engine the app uses:

- On PostgreSQL, SQLAlchemy's ``before_cursor_execute`` event (every statement run through a
  DBAPI cursor) and asyncpg's query logger on each connection the pool hands out, which
  sees what bypasses SQLAlchemy's cursors: the statements the task routes send straight
  through the driver (``kit.driver``) and the transaction's ``BEGIN`` and ``COMMIT``. (It
  does not see executions of prepared statements, which is how SQLAlchemy's cursor runs
  everything, so the two logs are merged, a statement seen by both counted once.)
- On SQLite, sqlite3's trace callback on each connection the pools hand out: every
  statement the database itself runs, whoever sent it (a ``Session``'s cursor or the
  driver path), ``COMMIT`` included (with its bound values expanded, so two separate
  statements are never the same text).

Nothing is dropped silently: transaction control (``BEGIN``, SQLite's ``BEGIN IMMEDIATE``,
``COMMIT``, ``ROLLBACK``) is counted apart from the statements and asserted on its own: a
write in a transaction costs its ``BEGIN`` and ``COMMIT`` on top of its statements, and
reads run in autocommit with neither. On PostgreSQL a task create is one statement with no
transaction control at all.

The budgets are per route (``BUDGET``, ``POSTGRES_BUDGET``): a change that adds a statement
to one route shows as exactly that route's number going up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.util import await_

from tests.attachments.support import stored_files
from tests.conftest import AppFactory, TestDatabase, UserFactory
from tests.factories import TASKS, add_member, create_project

# Statements per request on the successful path, transaction control not included.
BUDGET = {
    "GET /tasks/{id}": 1,  # the fast read: caller, role and task in one query
    "POST /tasks": 2,  # INSERT ... SELECT ... WHERE <caller may edit> RETURNING; the event
    "POST /tasks (Inbox)": 2,
    # UPDATE ... WHERE <caller may edit, version, assignee> RETURNING the task before (a
    # materialized CTE read first) and after; the event, with the fields that changed.
    "PATCH /tasks/{id}": 2,
    "PATCH /tasks/{id} (move)": 2,
    "PUT /tasks/{id}": 2,
    # DELETE ... WHERE <caller may edit, version> RETURNING the task and its attachments'
    # object keys (their files go after the commit); the event.
    "DELETE /tasks/{id}": 2,
    "GET /tasks": 2,  # the caller's role, then the page with its total
    "GET /tasks (filtered)": 2,
    "GET /tasks?cursor=": 2,  # the total rides in the cursor: nothing is counted again
}
# On PostgreSQL a create is one statement, the task and its event together
# (``tasks.fast_write``), which is its own transaction: no BEGIN or COMMIT either.
ONE_STATEMENT_POSTGRES = ("POST /tasks", "POST /tasks (Inbox)")
POSTGRES_BUDGET = {**BUDGET, **dict.fromkeys(ONE_STATEMENT_POSTGRES, 1)}
# What issue 13 asks of each route: GET 1, create, update and a list page 2.
CEILING = {route: 1 if route.startswith("GET /tasks/") else 2 for route in BUDGET}
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")


@dataclass
class StatementLog:
    """The statements one request sent, split into queries and transaction control."""

    cursor: list[str] = field(default_factory=list)
    wire: list[str] = field(default_factory=list)
    backend: str = "sqlite"

    @property
    def sent(self) -> list[str]:
        seen = {_normalise(s) for s in self.cursor}
        return self.cursor + [s for s in self.wire if _normalise(s) not in seen]

    @property
    def statements(self) -> list[str]:
        return [s for s in self.sent if not _is_transaction_control(s)]

    @property
    def transaction_control(self) -> list[str]:
        return [s for s in self.sent if _is_transaction_control(s)]


def _is_transaction_control(sql: str) -> bool:
    return sql.lstrip().upper().startswith(TRANSACTION_CONTROL)


@asynccontextmanager
async def counting(app: FastAPI, backend: str) -> AsyncIterator[StatementLog]:
    """Record what the app sends to its database inside the ``with`` block."""
    database = app.state.database
    engines: list[Engine] = [database.write_engine.sync_engine]
    if database.read_engine.sync_engine.pool is not database.write_engine.sync_engine.pool:
        engines.append(database.read_engine.sync_engine)
    log = StatementLog(backend=backend)
    logged: list[Any] = []

    def on_cursor(*args: Any) -> None:
        log.cursor.append(str(args[2]))

    def on_wire(query: Any) -> None:
        log.wire.append(str(query.query))

    def on_trace(sql: str) -> None:
        # SQLite reports a statement again at the start of each trigger subprogram it runs
        # (a foreign key's ON DELETE CASCADE is one), under the same text: one statement.
        if not log.wire or log.wire[-1] != sql:
            log.wire.append(sql)

    def on_checkout(dbapi_connection: Any, *_: Any) -> None:
        driver = dbapi_connection.driver_connection
        if driver in logged:
            return
        logged.append(driver)
        if backend == "postgres":
            driver.add_query_logger(on_wire)
        else:
            # Checkout runs inside SQLAlchemy's greenlet bridge; the callback is called on
            # aiosqlite's thread, for each statement as SQLite runs it.
            await_(driver.set_trace_callback(on_trace))

    if backend == "postgres":
        for engine in engines:
            event.listen(engine, "before_cursor_execute", on_cursor)
    for engine in engines:
        event.listen(engine.pool, "checkout", on_checkout)
    try:
        yield log
    finally:
        for engine in engines:
            if backend == "postgres":
                event.remove(engine, "before_cursor_execute", on_cursor)
            event.remove(engine.pool, "checkout", on_checkout)
        for driver in logged:
            if backend == "postgres":
                driver.remove_query_logger(on_wire)
            else:
                await driver.set_trace_callback(None)


def _normalise(sql: str) -> str:
    return " ".join(sql.split())


async def _check(
    app: FastAPI,
    database: TestDatabase,
    route: str,
    send: Callable[[], Awaitable[httpx.Response]],
    status: int,
) -> httpx.Response:
    async with counting(app, database.backend) as log:
        response = await send()
        # asyncpg hands its log records over with loop.call_soon: let them arrive.
        await asyncio.sleep(0)
    assert response.status_code == status, response.text
    budget = POSTGRES_BUDGET if database.backend == "postgres" else BUDGET
    assert len(log.statements) == budget[route], (route, log.statements)
    if database.backend == "postgres":
        writes = route.split()[0] in {"POST", "PATCH", "PUT", "DELETE"}
        in_transaction = writes and route not in ONE_STATEMENT_POSTGRES
        expected = ["BEGIN", "COMMIT"] if in_transaction else []
        assert [s.split()[0].upper().rstrip(";") for s in log.transaction_control] == expected
    else:
        writes = route.split()[0] in {"POST", "PATCH", "PUT", "DELETE"}
        expected = ["BEGIN IMMEDIATE", "COMMIT"] if writes else []
        assert [s.upper() for s in log.transaction_control] == expected
    return response


def test_every_budget_is_within_the_ceiling_issue_13_asks() -> None:
    for budget in (BUDGET, POSTGRES_BUDGET):
        assert {route: n for route, n in budget.items() if n > CEILING[route]} == {}


async def test_each_hot_route_stays_within_its_round_trip_budget(
    make_app: AppFactory, make_user: UserFactory, database: TestDatabase
) -> None:
    # Without the background loops: the dispatcher's own reads share the engine and would
    # be counted against whichever request they happened to overlap.
    app, client = await make_app(background_in_serve=False)
    alice = await make_user("alice")
    bob = await make_user("bob")
    project = await create_project(app, alice)
    await add_member(app, project, bob, "editor")
    elsewhere = await create_project(app, alice)
    await add_member(app, elsewhere, bob, "viewer")
    h = alice.headers
    for i in range(3):
        created = await client.post(
            TASKS, json={"title": f"t{i}", "project_id": project}, headers=h
        )
        assert created.status_code == 201
    # One request first, so pools, caches and prepared statements are warm as in service.
    assert (await client.get(TASKS, headers=h)).status_code == 200

    body = {"title": "Write the report", "project_id": project, "assignee_id": bob.id}
    created = await _check(
        app, database, "POST /tasks", lambda: client.post(TASKS, json=body, headers=h), 201
    )
    await _check(
        app,
        database,
        "POST /tasks (Inbox)",
        lambda: client.post(TASKS, json={"title": "Inbox item"}, headers=h),
        201,
    )
    url = created.headers["location"]
    got = await _check(app, database, "GET /tasks/{id}", lambda: client.get(url, headers=h), 200)
    patched = await _check(
        app,
        database,
        "PATCH /tasks/{id}",
        lambda: client.patch(
            url,
            json={"status": "completed"},
            headers={**h, "If-Match": got.headers["etag"]},
        ),
        200,
    )
    assert patched.json()["version"] == 2
    await _check(
        app,
        database,
        "PUT /tasks/{id}",
        lambda: client.put(
            url, json={"title": "Again", "project_id": project, "assignee_id": bob.id}, headers=h
        ),
        200,
    )
    moved = await _check(
        app,
        database,
        "PATCH /tasks/{id} (move)",
        lambda: client.patch(url, json={"project_id": elsewhere}, headers=h),
        200,
    )
    assert (moved.json()["project_id"], moved.json()["assignee_id"]) == (elsewhere, bob.id)
    page = await _check(
        app, database, "GET /tasks", lambda: client.get(TASKS, params={"limit": 2}, headers=h), 200
    )
    assert page.json()["total"] == 5
    await _check(
        app,
        database,
        "GET /tasks (filtered)",
        lambda: client.get(
            TASKS, params={"q": "report", "status": "pending", "tag": "x"}, headers=h
        ),
        200,
    )
    cursor = page.json()["next_cursor"]
    following = await _check(
        app,
        database,
        "GET /tasks?cursor=",
        lambda: client.get(TASKS, params={"cursor": cursor}, headers=h),
        200,
    )
    assert following.json()["total"] == 5
    attached = await client.post(
        f"{url}/attachments", files={"file": ("a.txt", b"hello", "text/plain")}, headers=h
    )
    assert attached.status_code == 201, attached.text
    assert stored_files(app) != set()
    await _check(app, database, "DELETE /tasks/{id}", lambda: client.delete(url, headers=h), 204)
    # The attachment's file went after the commit: its key came back with the DELETE.
    assert stored_files(app) == set()


async def test_a_cursor_carries_the_total_counted_when_the_list_started(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    for i in range(3):
        assert (await client.post(TASKS, json={"title": f"t{i}"}, headers=alice.headers)).is_success
    first = await client.get(TASKS, params={"limit": 1}, headers=alice.headers)
    assert first.status_code == 200
    assert first.json()["total"] == 3
    assert (await client.post(TASKS, json={"title": "late"}, headers=alice.headers)).is_success

    # Pages that continue the list repeat its total; a fresh start counts again.
    following = await client.get(
        TASKS, params={"cursor": first.json()["next_cursor"]}, headers=alice.headers
    )
    assert following.json()["total"] == 3
    assert following.headers["x-total-count"] == "3"
    again = await client.get(TASKS, params={"limit": 1}, headers=alice.headers)
    assert again.json()["total"] == 4
    # An offset page past the end still answers the true total.
    beyond = await client.get(TASKS, params={"skip": 10}, headers=alice.headers)
    assert beyond.json()["items"] == []
    assert beyond.json()["total"] == 4
