"""Task queries. SQLAlchemy Core on the mapped tables: rows, never hydrated ORM objects.

Every query that reads tasks is scoped to what the caller may see, so an invisible task is
simply not found. Writes are compare-and-set statements: the condition the service checked
(project, and the ``If-Match`` version) is repeated in the ``WHERE`` of the write itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias, cast

import asyncpg
from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.sql.elements import UnaryExpression

from taskmanager.db import Database, UTCDateTime
from taskmanager.errors import ServiceUnavailable
from taskmanager.projects.models import Project, ProjectMember
from taskmanager.tasks.models import Task
from taskmanager.tasks.schemas import TASK_FIELDS, SortBy, SortOrder, TaskStatus
from taskmanager.users.models import User

AnyRow: TypeAlias = Row[*tuple[Any, ...]]

TASKS = cast(Table, Task.__table__)
USERS = cast(Table, User.__table__)
MEMBERS = cast(Table, ProjectMember.__table__)
PROJECTS = cast(Table, Project.__table__)

_t = TASKS.c
_u = USERS.c
_m = MEMBERS.c

TASK_COLUMNS = tuple(_t[name] for name in TASK_FIELDS)

# The hot path, built once. One round trip answers three questions: is the caller still an
# active user (row or no row), does the task exist, and what is the caller's role in its
# project. Starting from ``users`` makes "no row" mean exactly "the caller is gone".
_VISIBLE_TASK = (
    select(_u.role.label("user_role"), _m.role.label("member_role"), *TASK_COLUMNS)
    .select_from(
        USERS.outerjoin(TASKS, _t.id == bindparam("task_id")).outerjoin(
            MEMBERS, and_(_m.project_id == _t.project_id, _m.user_id == _u.id)
        )
    )
    .where(_u.id == bindparam("user_id"), _u.is_active.is_(True))
)


async def fetch_with_access(session: AsyncSession, user_id: int, task_id: int) -> AnyRow | None:
    """``user_role``, ``member_role`` and the task's columns (all None when no such task).

    None when the user does not exist or is inactive. Runs in the session's transaction.
    """
    result = await session.execute(_VISIBLE_TASK, {"task_id": task_id, "user_id": user_id})
    return result.first()


class _RecordRow:
    """Attribute access over an asyncpg ``Record``, so callers treat it like a Row."""

    __slots__ = ("_record",)

    def __init__(self, record: asyncpg.Record) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        return self._record[name]


# asyncpg failures that mean the connection or the server is gone, not a bad query.
_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    OSError,
    asyncio.TimeoutError,
)
_COMPILED: dict[str, tuple[str, tuple[str, ...]]] = {}


def _compiled_for(engine: AsyncEngine) -> tuple[str, tuple[str, ...]]:
    name = engine.dialect.name
    if name not in _COMPILED:
        compiled = _VISIBLE_TASK.compile(dialect=engine.dialect)
        _COMPILED[name] = (compiled.string, tuple(compiled.positiontup or ()))
    return _COMPILED[name]


async def _fetch_with_access_asyncpg(engine: AsyncEngine, params: dict[str, int]) -> Any:
    sql, order = _compiled_for(engine)
    # A pooled connection straight from SQLAlchemy's pool (its checkout events, such as the
    # idle-connection ping, still run), used through the driver: the statement is compiled
    # once above, so no Session, transaction or Result objects are built per request.
    raw = await engine.raw_connection()
    driver: Any = raw.driver_connection
    try:
        record = await driver.fetchrow(sql, *(params[key] for key in order))
    except BaseException as exc:
        # Cancelled mid-query or failed: the connection's state is unknown, so drop it.
        raw.invalidate(exc)
        if isinstance(exc, _CONNECTION_ERRORS):
            raise ServiceUnavailable(
                "The database is unavailable; try again shortly", headers={"Retry-After": "5"}
            ) from exc
        raise
    raw.close()
    return None if record is None else _RecordRow(record)


async def fetch_for_read(database: Database, user_id: int, task_id: int) -> Any:
    """Like ``fetch_with_access``, for the single-task GET, the hottest path in the service.

    On PostgreSQL it runs on the driver directly (see above); on SQLite on a short read
    session of its own. Either way no request-scoped session is needed.
    """
    if database.dialect == "postgresql":
        return await _fetch_with_access_asyncpg(
            database.read_engine, {"task_id": task_id, "user_id": user_id}
        )
    async with database.session(write=False) as session:
        return await fetch_with_access(session, user_id, task_id)


async def project_role(
    session: AsyncSession, project_id: int, user_id: int
) -> tuple[bool, str | None]:
    """(project exists, the user's role in it or None)."""
    row = (
        await session.execute(
            select(PROJECTS.c.id, _m.role)
            .select_from(
                PROJECTS.outerjoin(
                    MEMBERS, and_(_m.project_id == PROJECTS.c.id, _m.user_id == user_id)
                )
            )
            .where(PROJECTS.c.id == project_id)
        )
    ).first()
    if row is None:
        return False, None
    return True, row.role


async def is_member(session: AsyncSession, project_id: int, user_id: int) -> bool:
    return (
        await session.execute(
            select(exists().where(_m.project_id == project_id, _m.user_id == user_id))
        )
    ).scalar_one()


async def insert_task(session: AsyncSession, values: dict[str, Any]) -> AnyRow:
    result = await session.execute(insert(TASKS).values(**values).returning(*TASK_COLUMNS))
    return result.one()


def _completed_at(new_status: str, now: datetime) -> Any:
    if new_status != TaskStatus.COMPLETED:
        return None
    # Staying completed keeps the original completion time; becoming completed stamps now.
    # Decided by the row's status at write time, not by an earlier read.
    return case(
        (
            and_(_t.status == TaskStatus.COMPLETED.value, _t.completed_at.is_not(None)),
            _t.completed_at,
        ),
        else_=literal(now, UTCDateTime()),
    )


async def update_task(
    session: AsyncSession,
    task_id: int,
    *,
    project_id: int,
    expected_versions: Sequence[int] | None,
    values: dict[str, Any],
    now: datetime,
) -> AnyRow | None:
    """Apply ``values`` if the task is still in ``project_id`` (and at an expected version).

    One atomic statement: the version goes up by exactly one, and the compare-and-set
    is in the ``WHERE``, so concurrent writers can never both succeed against one version.
    None when nothing matched.
    """
    changes: dict[str, Any] = dict(values)
    if "status" in changes:
        changes["completed_at"] = _completed_at(changes["status"], now)
    changes["version"] = _t.version + 1
    changes["updated_at"] = now
    stmt = update(TASKS).where(_t.id == task_id, _t.project_id == project_id)
    if expected_versions is not None:
        stmt = stmt.where(_t.version.in_(expected_versions))
    result = await session.execute(stmt.values(**changes).returning(*TASK_COLUMNS))
    return result.first()


async def delete_task(
    session: AsyncSession,
    task_id: int,
    *,
    project_id: int,
    expected_versions: Sequence[int] | None,
) -> bool:
    stmt = delete(TASKS).where(_t.id == task_id, _t.project_id == project_id)
    if expected_versions is not None:
        stmt = stmt.where(_t.version.in_(expected_versions))
    result = await session.execute(stmt.returning(_t.id))
    return result.first() is not None


async def current_state(session: AsyncSession, task_id: int) -> AnyRow | None:
    """The task's ``project_id`` and ``version`` now, to explain why a write matched nothing."""
    return (
        await session.execute(select(_t.project_id, _t.version).where(_t.id == task_id))
    ).first()


# ---- lists -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskFilters:
    """What a list or export is narrowed to. ``assignee_id`` is already resolved from "me"."""

    statuses: tuple[str, ...] = ()
    priority: int | None = None
    project_id: int | None = None
    assignee_id: int | None = None
    tag: str | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    q: str | None = None


@dataclass(frozen=True, slots=True)
class Seek:
    """Where the previous page ended: its last row's sort value and id."""

    value: Any
    last_id: int


SORT_COLUMNS = {
    "created_at": _t.created_at,
    "updated_at": _t.updated_at,
    "priority": _t.priority,
    "title": _t.title,
    "due_date": _t.due_date,
}


def _tag_condition(dialect: str, tag: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        # JSONB containment: can use a GIN index on tags.
        return type_coerce(_t.tags, JSONB).contains([tag])
    each = func.json_each(_t.tags).table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value == tag))


def _conditions(
    filters: TaskFilters, *, viewer_id: int, is_admin: bool, dialect: str
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if not is_admin:
        conditions.append(_t.project_id.in_(select(_m.project_id).where(_m.user_id == viewer_id)))
    if filters.statuses:
        conditions.append(_t.status.in_(filters.statuses))
    if filters.priority is not None:
        conditions.append(_t.priority == filters.priority)
    if filters.project_id is not None:
        conditions.append(_t.project_id == filters.project_id)
    if filters.assignee_id is not None:
        conditions.append(_t.assignee_id == filters.assignee_id)
    if filters.tag is not None:
        conditions.append(_tag_condition(dialect, filters.tag))
    if filters.due_before is not None:
        conditions.append(_t.due_date < filters.due_before)
    if filters.due_after is not None:
        conditions.append(_t.due_date > filters.due_after)
    if filters.q is not None:
        # autoescape: %, _ and the escape character in the user's text are literals.
        conditions.append(
            or_(
                _t.title.icontains(filters.q, autoescape=True),
                _t.description.icontains(filters.q, autoescape=True),
            )
        )
    return conditions


def _order_by(sort_by: SortBy, order: SortOrder) -> list[UnaryExpression[Any]]:
    column = SORT_COLUMNS[sort_by]
    if order == "desc":
        first = column.desc()
        tie = _t.id.desc()
    else:
        first = column.asc()
        tie = _t.id.asc()
    if sort_by == "due_date":
        # Tasks without a due date come last in both directions, on both backends.
        first = first.nulls_last()
    return [first, tie]


def _seek_condition(sort_by: SortBy, order: SortOrder, seek: Seek) -> ColumnElement[bool]:
    column = SORT_COLUMNS[sort_by]
    last_id = literal(seek.last_id, _t.id.type)
    if sort_by == "due_date" and seek.value is None:
        # Already in the trailing block of undated tasks: only the id moves on.
        after_id = _t.id < last_id if order == "desc" else _t.id > last_id
        return and_(column.is_(None), after_id)
    key = tuple_(column, _t.id)
    bound = tuple_(literal(seek.value, column.type), last_id)
    after = key < bound if order == "desc" else key > bound
    if sort_by == "due_date":
        # Row comparison with NULL is unknown, so the undated tail is added explicitly.
        return or_(after, column.is_(None))
    return after


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def count_tasks(
    session: AsyncSession, filters: TaskFilters, *, viewer_id: int, is_admin: bool
) -> int:
    conditions = _conditions(
        filters, viewer_id=viewer_id, is_admin=is_admin, dialect=_dialect(session)
    )
    stmt = select(func.count()).select_from(TASKS).where(*conditions)
    return int((await session.execute(stmt)).scalar_one())


def page_statement(
    filters: TaskFilters,
    *,
    viewer_id: int,
    is_admin: bool,
    dialect: str,
    sort_by: SortBy,
    order: SortOrder,
    seek: Seek | None,
    skip: int,
    limit: int,
) -> Select[Any]:
    conditions = _conditions(filters, viewer_id=viewer_id, is_admin=is_admin, dialect=dialect)
    if seek is not None:
        conditions.append(_seek_condition(sort_by, order, seek))
    stmt = select(*TASK_COLUMNS).where(*conditions).order_by(*_order_by(sort_by, order))
    if skip:
        stmt = stmt.offset(skip)
    return stmt.limit(limit)


async def list_tasks(
    session: AsyncSession,
    filters: TaskFilters,
    *,
    viewer_id: int,
    is_admin: bool,
    sort_by: SortBy,
    order: SortOrder,
    seek: Seek | None,
    skip: int,
    limit: int,
) -> Sequence[AnyRow]:
    stmt = page_statement(
        filters,
        viewer_id=viewer_id,
        is_admin=is_admin,
        dialect=_dialect(session),
        sort_by=sort_by,
        order=order,
        seek=seek,
        skip=skip,
        limit=limit,
    )
    return list((await session.execute(stmt)).all())
