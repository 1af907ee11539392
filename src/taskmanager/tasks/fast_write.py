"""``POST /tasks``, ``PUT``, ``PATCH`` and ``DELETE /tasks/{id}``: the writes on the driver.

The second deliberate exception to "one way to build a resource", beside ``fast_read``, and
for the same reason: these are the routes a busy team calls most, and half of a write's CPU
went to building, caching and executing statements through a ``Session`` (README §
Performance). The rules are not copied: the statements are the repository's own
(``repository.create_statement``, ``update_statement``, ``delete_statement``), built once
per shape with bound parameters, and the events are ``kit.outbox``'s; only the execution
differs (``kit.driver``: compiled once, run on a pooled asyncpg or aiosqlite connection, no
unit of work).

- **Create** on PostgreSQL is one round trip: the authorized ``INSERT ... RETURNING`` and
  its task.created event in one statement (``repository.create_recorded_statement``), which
  needs no ``BEGIN``/``COMMIT``. SQLite has no data-modifying CTE: ``BEGIN IMMEDIATE``, the
  authorized ``INSERT ... RETURNING`` (``repository.create_statement``), the event,
  ``COMMIT``.
- **Update** is ``BEGIN``, the authorized ``UPDATE`` returning the task before and after,
  the task.updated event (what changed is known only once the row is read), ``COMMIT``.
- **Delete** is ``BEGIN``, the authorized ``DELETE`` returning the task and its
  attachments' object keys, the task.deleted event, ``COMMIT``; then the attachments' files
  go (``kit.storage.discard_now``), only once the delete has committed.

Each transaction is a ``kit.driver.Script`` run by ``kit.driver.run_transaction``: on
SQLite all of it is one call in the writer connection's thread. Each returns None (a delete
False) — and the route takes the ``Session`` path (``tasks.service``), which does the same
write and explains any refusal — when the statement matched nothing (401, 403, 404, 412 or
422 to explain), the database refused it for another reason (a constraint, a deadlock), the
database is an in-memory SQLite one (``kit.driver.on_driver``), or the request needs the
request transaction: an ``Idempotency-Key`` (its record commits with the change,
``kit.transaction``) or test fault injection (``kit.faults``). Nothing was written then.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, NamedTuple

from starlette.requests import Request

from taskmanager.kit import faults, transaction
from taskmanager.kit.db import Database, utcnow
from taskmanager.kit.driver import (
    DriverFailed,
    DriverStatement,
    Script,
    driver_connection,
    on_driver,
    run_transaction,
)
from taskmanager.kit.identity import Identity
from taskmanager.kit.outbox import EventType, committed_on_driver, event_step
from taskmanager.kit.storage import discard_now
from taskmanager.tasks import repository as repo
from taskmanager.tasks import service
from taskmanager.tasks.repository import TaskRow
from taskmanager.tasks.schemas import TaskCreate, TaskPatch, TaskReplace


def _database(request: Request) -> Database | None:
    """The database, when the driver path applies to this request; else None."""
    database: Database = request.app.state.database
    if not on_driver(database):
        return None
    if transaction.hook_of(request.scope) is not None or faults.armed(request.scope):
        return None
    return database


@cache
def _create_recorded(shape: repo.CreateShape) -> DriverStatement:
    return DriverStatement(repo.create_recorded_statement(shape))


@cache
def _create(shape: repo.CreateShape) -> DriverStatement:
    return DriverStatement(repo.create_statement(shape))


@cache
def _update(shape: repo.UpdateShape) -> DriverStatement:
    return DriverStatement(repo.update_statement(shape))


@cache
def _delete(shape: repo.DeleteShape) -> DriverStatement:
    return DriverStatement(lambda dialect: repo.delete_statement(shape, dialect))


async def create_task(request: Request, identity: Identity, body: TaskCreate) -> TaskRow | None:
    """Create the task and its event (see above); the new task, or None (see above).

    Raises ServiceUnavailable when the database is down or cannot be reached.
    """
    database = _database(request)
    if database is None:
        return None
    values = service.new_task_values(identity, body)
    params = repo.create_params(identity, values, body.project_id)
    shape = repo.create_shape(identity, values, body.project_id)
    try:
        if database.dialect == "postgresql":
            # The event's data is the task as the API shows it; the insert adds its id and
            # project.
            params[repo.EVENT_DATA_PARAM] = service.event_data(
                TaskRow(id=0, project_id=0, **values)
            )
            async with driver_connection(database, write=True) as connection:
                row = await connection.fetchrow(_create_recorded(shape), params)
            task = None if row is None else TaskRow(*row)
        else:
            task = await run_transaction(database, _created(shape, params, identity))
    except DriverFailed:
        return None
    if task is None:
        return None
    committed_on_driver(database.write_engine.sync_engine)
    return task


def _created(
    shape: repo.CreateShape, params: dict[str, Any], identity: Identity
) -> Script[TaskRow | None]:
    """SQLite's create: the authorized insert, then its event."""
    row = yield _create(shape), params
    if row is None:
        return None
    task = TaskRow(*row)
    step = event_step(
        type=EventType.TASK_CREATED,
        project_id=task.project_id,
        actor_id=identity.user_id,
        data=service.event_data(task),
    )
    if step is not None:
        yield step
    return task


async def replace_task(
    request: Request,
    identity: Identity,
    task_id: int,
    body: TaskReplace,
    expected_versions: Sequence[int] | None,
) -> TaskRow | None:
    """PUT on the driver (``service.replace_task``'s rules); the task, or None."""
    fields, move_to = service.replacement(body)
    return await _update_task(request, identity, task_id, fields, move_to, expected_versions)


async def patch_task(
    request: Request,
    identity: Identity,
    task_id: int,
    body: TaskPatch,
    expected_versions: Sequence[int] | None,
) -> TaskRow | None:
    """PATCH on the driver (``service.patch_task``'s rules); the task, or None."""
    fields, move_to = service.patch(body)
    return await _update_task(request, identity, task_id, fields, move_to, expected_versions)


async def _update_task(
    request: Request,
    identity: Identity,
    task_id: int,
    fields: dict[str, Any],
    move_to: int | None,
    expected_versions: Sequence[int] | None,
) -> TaskRow | None:
    database = _database(request)
    if database is None:
        return None
    values = service.column_values(fields)
    shape = repo.update_shape(identity, values, move_to, expected_versions)
    params = repo.update_params(identity, task_id, values, move_to, expected_versions, utcnow())
    try:
        updated = await run_transaction(database, _updated(shape, params, identity))
    except DriverFailed:
        return None
    if updated is None:
        return None
    if updated.recorded:
        committed_on_driver(database.write_engine.sync_engine)
    return updated.task


class _Updated(NamedTuple):
    task: TaskRow
    recorded: bool  # an event was recorded (some field changed)


def _updated(
    shape: repo.UpdateShape, params: dict[str, Any], identity: Identity
) -> Script[_Updated | None]:
    """The authorized update returning the task before and after, then its event (what
    changed is known only now)."""
    row = yield _update(shape), params
    if row is None:
        return None
    change = repo.task_change(row)
    step = service.update_step(identity.user_id, change)
    if step is not None:
        yield step
    return _Updated(change.after, step is not None)


async def delete_task(
    request: Request,
    identity: Identity,
    task_id: int,
    expected_versions: Sequence[int] | None,
) -> bool:
    """DELETE on the driver (``service.delete_task``'s rules); False (nothing deleted) when
    the route must take the ``Session`` path (see above).

    Raises ServiceUnavailable when the database is down or cannot be reached.
    """
    database = _database(request)
    if database is None:
        return False
    statement = _delete(repo.delete_shape(identity, expected_versions))
    params = repo.delete_params(identity, task_id, expected_versions)
    try:
        gone = await run_transaction(database, _deleted(statement, params, identity))
    except DriverFailed:
        return False
    if gone is None:
        return False
    committed_on_driver(database.write_engine.sync_engine)
    await discard_now(request.app.state.storage, gone.attachment_keys)
    return True


def _deleted(
    statement: DriverStatement, params: dict[str, Any], identity: Identity
) -> Script[repo.DeletedTask | None]:
    """The authorized delete returning the task and its attachments' keys, then its event.
    Its comments (and attachments) go with it: no event of their own (README)."""
    row = yield statement, params
    if row is None:
        return None
    gone = repo.deleted_task(row)
    step = event_step(
        type=EventType.TASK_DELETED,
        project_id=gone.row.project_id,
        actor_id=identity.user_id,
        data=service.event_data(gone.row),
    )
    if step is not None:
        yield step
    return gone
