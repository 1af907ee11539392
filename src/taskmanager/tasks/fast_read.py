"""``GET /api/v1/tasks/{id}``: the hottest route, built for speed on purpose. The only one.

Every other route goes through FastAPI dependencies, a request session and the access gate.
This one answers the same questions with less machinery, and is, with the task writes
(``tasks.fast_write``), the deliberate exception to "one way to build a resource" — nothing
else should copy its idiom:

- **No dependency graph.** The route declares only its path parameter and ``If-None-Match``;
  the caller is identified inline by ``kit.authn.identify`` (a bearer token needs no query;
  its signature check is cached) and the ``tasks:read`` scope is checked inline, with the
  same function the ``RequireScope`` dependency uses.
- **One round trip.** One statement answers three questions: is the caller still an active
  user whose sessions have not ended since the token was issued (a row or none — the user's
  ``session_generation`` must equal the token's), does the task exist, and what is the
  caller's role in its project.
  It starts from ``users`` so that "no row" means exactly "the caller is gone", and it takes
  the role from the access gate's own membership subquery (``projects.access.member_role``);
  the verdict is the gate's policy (``projects.policy.decide``), so the admin rule and the
  404-for-outsiders rule exist once.
- **No session.** The statement is compiled once and run on a pooled driver connection
  (``kit.driver``: asyncpg, or an aiosqlite reader; SQLAlchemy's pool and its checkout
  events still apply), so no Session, transaction or Result objects are built per request;
  a database that cannot be reached answers 503 (as does one known to be down, at once).
  Only an in-memory SQLite database (one shared connection) runs it on a snapshot session.
- **Pre-rendered JSON.** The row becomes a ``TaskRow`` dataclass that orjson serialises
  directly; the ETag is derived from id and version, and ``If-None-Match`` answers 304
  before any body is built.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Table, bindparam, select
from starlette.requests import Request
from starlette.responses import Response

from taskmanager.kit import authn
from taskmanager.kit.availability import is_unavailable
from taskmanager.kit.db import Database
from taskmanager.kit.deps import require_scope
from taskmanager.kit.driver import DriverStatement, driver_connection, on_driver
from taskmanager.kit.errors import InvalidCredentials, ServiceUnavailable
from taskmanager.kit.etags import strong_etag
from taskmanager.kit.http import not_modified
from taskmanager.kit.identity import Identity, Scope
from taskmanager.models.tasks import Task
from taskmanager.models.users import User
from taskmanager.projects.access import member_role, task_not_found
from taskmanager.projects.policy import Permission, decide
from taskmanager.tasks.repository import TASK_COLUMNS, TASK_FIELDS, TaskRow

_TASKS: Table = Task.__table__  # type: ignore[assignment]
_USERS: Table = User.__table__  # type: ignore[assignment]

# Built once: the caller's role, the caller's role in the task's project, the task.
_STATEMENT = (
    select(
        _USERS.c.role.label("user_role"),
        member_role(_USERS.c.id, _TASKS.c.project_id).label("member_role"),
        *TASK_COLUMNS,
    )
    .select_from(_USERS.outerjoin(_TASKS, _TASKS.c.id == bindparam("task_id")))
    .where(
        _USERS.c.id == bindparam("user_id"),
        _USERS.c.is_active.is_(True),
        _USERS.c.session_generation == bindparam("generation"),
    )
)

_ON_DRIVER = DriverStatement(_STATEMENT)
_TASK_OFFSET = 2  # the task's columns follow user_role and member_role


async def _fetch(database: Database, identity: Identity, task_id: int) -> Any:
    """The row (user_role, member_role, *task columns), or None if the caller is gone.

    Raises ServiceUnavailable when the database cannot be reached (or is known down).
    """
    params = {
        "task_id": task_id,
        "user_id": identity.user_id,
        "generation": identity.generation,
    }
    if on_driver(database):
        async with driver_connection(database, write=False) as connection:
            return await connection.fetchrow(_ON_DRIVER, params)
    try:
        async with database.snapshot() as session:
            row = (await session.execute(_STATEMENT, params)).first()
    except ServiceUnavailable:
        raise
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        database.unavailable(exc)
        raise database.breaker.error() from exc
    database.breaker.succeeded()
    return row


def _json(row: TaskRow, etag: str) -> Response:
    return Response(
        orjson.dumps(row, option=orjson.OPT_UTC_Z),
        headers={"ETag": etag},
        media_type="application/json",
    )


async def read_task(request: Request, task_id: int, if_none_match: str | None) -> Response:
    """One task with its ETag, or 304, 401, 403 (scope) or 404 — in one database round trip.

    Raises NotAuthenticated/InvalidCredentials, Forbidden (API key without ``tasks:read``),
    NotFound (no such task, or not the caller's to see) or ServiceUnavailable.
    """
    identity = await authn.identify(request.scope)
    require_scope(identity, Scope.TASKS_READ)
    database: Database = request.app.state.database
    row = await _fetch(database, identity, task_id)
    if row is None:
        raise InvalidCredentials("The credentials are invalid or the account is inactive")
    values = tuple(row)
    if values[_TASK_OFFSET] is None:  # the outer join found no task
        raise task_not_found(task_id)
    decide(identity.verified(values[0]), values[1], Permission.VIEW, task_not_found(task_id))
    task = TaskRow(*values[_TASK_OFFSET : _TASK_OFFSET + len(TASK_FIELDS)])
    etag = strong_etag(task.id, task.version)
    return not_modified(if_none_match, etag) or _json(task, etag)
