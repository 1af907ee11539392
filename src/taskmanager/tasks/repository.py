"""Task queries. SQLAlchemy Core on the mapped table: typed rows, never ORM objects.

The hot writes authorize themselves: ``create``, ``update`` and ``delete`` are each one
statement that checks the caller (``projects.access.may``), the ``If-Match`` version and the
assignee's membership in its ``WHERE`` and reads the row back with ``RETURNING`` — one round
trip, no ORM unit of work. An update returns the task as it was beside the new row, and a
delete the object keys of the attachments its cascade removes, both read by the same
statement first (``_prior``). Statements are built from the same few shapes with bound
values, so SQLAlchemy's compiled cache and the driver's prepared statements serve them.
When one matches nothing, the service explains it with the step-by-step checks
(``projects.access``, ``is_member``, ``current_state``) and the compare-and-set writes
(``update_task``/``delete_task``: the condition the service checked is repeated in the
``WHERE``). List queries scope themselves to the caller's projects with
``visible_project_ids``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Literal, cast

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    Insert,
    Integer,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningDelete
from sqlalchemy.sql.elements import BindParameter, UnaryExpression

from taskmanager.kit.db import at_version
from taskmanager.kit.identity import Identity, Scope
from taskmanager.kit.outbox import EventType, event_insert
from taskmanager.kit.pagination import Seek
from taskmanager.models.attachments import Attachment
from taskmanager.models.base import JSONList, UTCDateTime, stamp_if_changed
from taskmanager.models.projects import Project
from taskmanager.models.tasks import Task, TaskCount, TaskStatus, TaskTagCount, search_fold
from taskmanager.projects.access import (
    CALLER_ID,
    caller_params,
    is_member_sql,
    may_bound,
    visible_project_ids,
)
from taskmanager.projects.policy import Permission
from taskmanager.tasks.filters import SortBy, SortOrder, TaskListQuery
from taskmanager.tasks.schemas import TaskFields

TASKS = cast(Table, Task.__table__)
_t = TASKS.c
_PROJECTS = cast(Table, Project.__table__)
_ATTACHMENTS = cast(Table, Attachment.__table__)
_COUNTS = cast(Table, TaskCount.__table__).c
_TAG_COUNTS = cast(Table, TaskTagCount.__table__).c


@dataclass(frozen=True, slots=True)
class TaskRow(TaskFields):
    """A task as stored, field for field what the API shows (orjson serialises it as is)."""


TASK_FIELDS = tuple(TaskRow.__dataclass_fields__)
TASK_COLUMNS = tuple(_t[name] for name in TASK_FIELDS)


def task_row(row: Any) -> TaskRow:
    """A ``TaskRow`` from any row carrying the task columns under their names."""
    return TaskRow(*(getattr(row, name) for name in TASK_FIELDS))


async def holds_membership(session: AsyncSession, project_id: int, user_id: int) -> bool:
    """Whether the user is a member of the project, the membership held until the
    transaction ends (``projects.access.is_member_sql`` with ``hold``): for a write that
    makes the user a task's assignee."""
    return bool(
        (await session.execute(select(is_member_sql(project_id, user_id, hold=True)))).scalar_one()
    )


async def insert_task(session: AsyncSession, values: dict[str, Any]) -> TaskRow:
    # The search columns are filled by the table's column defaults (``models.tasks``).
    result = await session.execute(insert(TASKS).values(**values).returning(*TASK_COLUMNS))
    return task_row(result.one())


# Every column a create writes but ``id`` and ``project_id``: the task's fields and the
# folded search copies. A create statement binds each by its column's name.
CREATED_COLUMNS = (
    *(name for name in TASK_FIELDS if name not in ("id", "project_id")),
    "title_folded",
    "description_folded",
)
# The bound parameters a create statement takes besides the columns (``create_params``).
PROJECT_PARAM = "project_id"


@dataclass(frozen=True, slots=True)
class CreateShape:
    """What a create statement's SQL depends on (its values are bound parameters)."""

    inbox: bool  # the project is the caller's Inbox (else the bound ``project_id``)
    assignee: bool  # an assignee is given (its membership is checked)
    admin: bool  # the credential carries the ``admin`` scope


@cache
def create_statement(shape: CreateShape) -> Insert:
    """``INSERT ... SELECT ... FROM projects WHERE <project> AND <caller may edit tasks
    there> AND <the assignee, if any, is a member> RETURNING`` the task, built once per shape.

    Bound parameters: every ``CREATED_COLUMNS`` name, ``project_id`` unless
    ``shape.inbox``, and ``may_bound``'s caller (``create_params`` gives them all). No row
    when the project is missing or not the caller's to edit, the caller is no longer live,
    or the assignee is not a member.
    """
    project = _PROJECTS.c
    caller = bindparam(CALLER_ID, type_=BigInteger)
    if shape.inbox:
        where = [
            project.is_inbox.is_(True),
            project.created_by == caller,
            is_member_sql(project.id, caller),
        ]
    else:
        where = [project.id == bindparam(PROJECT_PARAM, type_=BigInteger)]
    where.append(may_bound(Permission.EDIT_TASKS, project.id, admin=shape.admin))
    if shape.assignee:
        where.append(
            is_member_sql(project.id, bindparam("assignee_id", type_=BigInteger), hold=True)
        )
    selected = [bindparam(name, type_=_t[name].type) for name in CREATED_COLUMNS]
    source = select(*selected, project.id).where(*where)
    if shape.inbox:
        source = source.order_by(project.id).limit(1)
    return (
        insert(TASKS).from_select([*CREATED_COLUMNS, "project_id"], source).returning(*TASK_COLUMNS)
    )


def create_shape(identity: Identity, values: dict[str, Any], project_id: int | None) -> CreateShape:
    """The shape of the create statement for this caller and these values."""
    return CreateShape(
        inbox=project_id is None,
        assignee=values.get("assignee_id") is not None,
        admin=identity.has_scope(Scope.ADMIN),
    )


def create_params(
    identity: Identity, values: dict[str, Any], project_id: int | None
) -> dict[str, Any]:
    """The bound values of ``create_statement``: ``values`` (every task column but ``id``
    and ``project_id``) with their folded search copies, the project, the caller."""
    params = _with_search_columns(dict(values))
    params[PROJECT_PARAM] = project_id
    params.update(caller_params(identity))
    return params


@cache
def create_recorded_statement(shape: CreateShape) -> Select[Any]:
    """PostgreSQL: ``create_statement`` and its task.created event in one statement.

    ``WITH created AS (INSERT ... RETURNING ...), recorded AS (INSERT INTO events SELECT
    ... FROM created) SELECT * FROM created``: one round trip, atomic without BEGIN and
    COMMIT (a statement is its own transaction); data-modifying ``WITH`` is PostgreSQL's
    (postgresql.org/docs/current/queries-with.html#QUERIES-WITH-MODIFYING). The event is
    the one ``kit.outbox.record`` writes: the bound ``event_data`` (the task as the API
    shows it, made before the insert) gets the ``id`` and ``project_id`` the insert chose;
    its time is the task's ``created_at``; its audience the project's members (its
    subquery lists ``created``, which holds one row or none, in its own FROM).
    """
    created = create_statement(shape).cte("created")
    data = bindparam(EVENT_DATA_PARAM, type_=JSONB).op("||", return_type=JSONB)(
        func.jsonb_build_object(
            literal_column("'id'"),
            created.c.id,
            literal_column("'project_id'"),
            created.c.project_id,
        )
    )
    recorded = event_insert(
        "postgresql",
        type=literal_column(f"'{EventType.TASK_CREATED.value}'"),
        project_id=created.c.project_id,
        actor_id=bindparam(CALLER_ID, type_=BigInteger),
        occurred_at=bindparam("created_at", type_=_t.created_at.type),
        data=data,
        changed=null(),
        audience_of=[created.c.project_id],
        source=created,
    ).cte("recorded")
    return select(*created.c).add_cte(recorded)


EVENT_DATA_PARAM = "event_data"


async def create_authorized(
    session: AsyncSession,
    identity: Identity,
    values: dict[str, Any],
    *,
    project_id: int | None,
) -> TaskRow | None:
    """Insert the task if the caller may add tasks to the project; the row, else None.

    ``create_statement`` for this shape. ``project_id`` None: the caller's Inbox.
    ``values``: every task column but ``id``, ``project_id`` and the folded search copies.
    """
    statement = create_statement(create_shape(identity, values, project_id))
    params = create_params(identity, values, project_id)
    row = (await session.execute(statement, params)).first()
    return None if row is None else task_row(row)


_FOLDED = ("title", "description")  # the columns with a folded search copy


def _with_search_columns(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` plus the folded search copies of the title and description it sets."""
    if "title" in values:
        values["title_folded"] = search_fold(values["title"])
    if "description" in values:
        description = values["description"]
        values["description_folded"] = None if description is None else search_fold(description)
    return values


def _completed_at(completing: bool, now: Any) -> Any:
    """``completed_at`` for an update that sets the status (to completed, or not)."""
    if not completing:
        return None
    # Staying completed keeps the original completion time; becoming completed stamps now.
    # Decided by the row's status at write time, not by an earlier read.
    return case(
        (
            and_(_t.status == TaskStatus.COMPLETED.value, _t.completed_at.is_not(None)),
            _t.completed_at,
        ),
        else_=now,
    )


@dataclass(frozen=True, slots=True)
class TaskChange:
    """One task before and after an update (``before`` is the row the update changed)."""

    before: TaskRow
    after: TaskRow


# A DELETE ... RETURNING the task's columns and its attachments' keys.
TaskDelete = ReturningDelete[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class DeletedTask:
    """A deleted task as it was, and the object keys of the attachments that went with it."""

    row: TaskRow
    attachment_keys: list[str]


def _prior(task_id: int | ColumnElement[int], columns: Sequence[Any]) -> CTE:
    """The task as it is before the write: ``WITH prior AS MATERIALIZED (SELECT ...)``.

    How one statement shows the old row beside the new one on both backends. SQLite's
    ``RETURNING`` shows only the new values, and cannot name an ``UPDATE ... FROM`` table
    (sqlite.org/lang_returning.html, "Limitations"); PostgreSQL before 18 has no ``OLD``
    in ``RETURNING``. A materialized CTE is computed once, into a table of its own: the
    write names its row through it (``WHERE id IN (SELECT id FROM prior)``), so it is
    filled before any row changes, and the ``RETURNING`` reads the old values back from it.
    On PostgreSQL ``FOR UPDATE`` makes it read (and lock) the version the write will
    change — a concurrent writer's committed row, not the statement's older snapshot
    (READ COMMITTED); SQLite's single writer needs no lock, and SQLAlchemy renders none.
    ``columns``: of ``tasks`` (``id`` included) or expressions correlated to it.
    """
    return (
        select(*columns)
        .where(_t.id == task_id)
        .with_for_update()
        .cte("prior")
        .prefix_with("MATERIALIZED")
    )


def _row_of(prior: CTE, task_id: int | ColumnElement[int]) -> list[ColumnElement[bool]]:
    """The row a write changes, named by its key and through ``prior``.

    By key for the planner's index lookup; through ``prior`` so that ``prior`` is filled
    before the write changes anything.
    """
    return [_t.id == task_id, _t.id.in_(select(prior.c.id))]


async def forget_user(session: AsyncSession, user_id: int, now: datetime) -> list[TaskChange]:
    """Before an account is deleted: the tasks it created or is assigned to lose it.

    The foreign keys would set ``created_by`` / ``assignee_id`` to NULL on their own, but
    without a new version (a stale ETag would still answer 304) or an event.
    """
    forget = {
        name: case((_t[name] == user_id, None), else_=_t[name])
        for name in ("assignee_id", "created_by")
    }
    mine = or_(_t.assignee_id == user_id, _t.created_by == user_id)
    return await _change_where(session, mine, forget, now)


async def unassign(
    session: AsyncSession, project_id: int, user_id: int, now: datetime
) -> list[TaskChange]:
    """After ``user_id`` left project ``project_id``: its tasks there assigned to them have
    no assignee (an assignee is a member of the task's project, API.md §5)."""
    theirs = and_(_t.project_id == project_id, _t.assignee_id == user_id)
    return await _change_where(session, theirs, {"assignee_id": None}, now)


async def _change_where(
    session: AsyncSession, where: ColumnElement[bool], values: dict[str, Any], now: datetime
) -> list[TaskChange]:
    """Set ``values`` on every task matching ``where``, each with a new version: the rows
    as they were and as they are. The rows as they were (locked), then ``UPDATE ...
    RETURNING`` by id, one statement per 5,000 tasks."""
    before = {
        row.id: row
        for row in map(
            task_row,
            await session.execute(select(*TASK_COLUMNS).where(where).with_for_update()),
        )
    }
    ids = list(before)
    changes: list[TaskChange] = []
    # By id, the rows locked above (not ``where`` again: a row that came to match since is
    # not in ``before``), in batches: each id is a bound parameter, and asyncpg and SQLite
    # refuse a statement with more than 32,767 of them.
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        stmt = (
            update(TASKS)
            .where(_t.id.in_(ids[start : start + _IDS_PER_STATEMENT]))
            .values(**values, version=_t.version + 1, updated_at=now)
            .returning(*TASK_COLUMNS)
        )
        for row in map(task_row, await session.execute(stmt)):
            changes.append(TaskChange(before=before[row.id], after=row))
    return changes


_IDS_PER_STATEMENT = 5_000


def _version_matches(expected_versions: Sequence[int] | None) -> list[ColumnElement[bool]]:
    """The ``If-Match`` compare-and-set: the task is at one of the expected versions."""
    return at_version(_t.version, expected_versions)


# An update's bound parameters: the task, its new values (``new_<column>``: a bound name may
# not be a column's in ``SET``), the time, the destination of a move, the If-Match versions.
TASK_PARAM = "task_id"
NOW_PARAM = "now"
MOVE_PARAM = "move_to"


def _new(name: str) -> str:
    return f"new_{name}"


def _expected(index: int) -> str:
    return f"expected_version_{index}"


@dataclass(frozen=True, slots=True)
class UpdateShape:
    """What an update statement's SQL depends on (its values are bound parameters)."""

    fields: tuple[str, ...]  # the task columns it sets, as stored names
    completing: bool  # it sets the status to completed
    move: bool  # it moves the task to the bound ``move_to`` project
    assignee: bool  # it sets a non-null assignee (whose membership is checked)
    versions: int | None  # how many If-Match versions; None: no If-Match
    admin: bool  # the credential carries the ``admin`` scope


def update_shape(
    identity: Identity,
    values: dict[str, Any],
    move_to: int | None,
    expected_versions: Sequence[int] | None,
) -> UpdateShape:
    return UpdateShape(
        fields=tuple(values),
        completing=values.get("status") == TaskStatus.COMPLETED.value,
        move=move_to is not None,
        assignee=values.get("assignee_id") is not None,
        versions=None if expected_versions is None else len(expected_versions),
        admin=identity.has_scope(Scope.ADMIN),
    )


def update_params(
    identity: Identity | None,
    task_id: int,
    values: dict[str, Any],
    move_to: int | None,
    expected_versions: Sequence[int] | None,
    now: datetime,
) -> dict[str, Any]:
    """The bound values of an update statement (``update_statement``; ``update_task``,
    which checks no caller, with ``identity`` None)."""
    params = {_new(name): value for name, value in _with_search_columns(dict(values)).items()}
    params[TASK_PARAM] = task_id
    params[NOW_PARAM] = now
    params[MOVE_PARAM] = params[_new("project_id")] = move_to
    params.update((_expected(i), v) for i, v in enumerate(expected_versions or ()))
    if identity is not None:
        params.update(caller_params(identity))
    return params


def _update_statement(
    fields: Sequence[str],
    *,
    completing: bool,
    where: Sequence[ColumnElement[bool]],
) -> Update:
    """``UPDATE tasks SET <fields> WHERE <the task> AND <where> RETURNING`` new and old row.

    One atomic statement (``_prior`` gives the old row): the version goes up by exactly
    one and every condition is in the ``WHERE``, so concurrent writers can never both
    succeed against one version. Values are bound (``update_params``).

    The version and ``updated_at`` move only when some field's value differs from the
    row's (``models.base.stamp_if_changed``): a write of the values a task already has
    keeps its ETag and records no event (``service.changed_fields`` finds nothing).
    """
    searched = [*fields, *(f"{name}_folded" for name in _FOLDED if name in fields)]
    changes: dict[str, Any] = {
        name: bindparam(_new(name), type_=_t[name].type) for name in searched
    }
    now = bindparam(NOW_PARAM, type_=UTCDateTime())
    if "status" in changes:
        changes["completed_at"] = _completed_at(completing, now)
    changes.update(stamp_if_changed(_t, {name: changes[name] for name in fields}, now))
    task_id = bindparam(TASK_PARAM, type_=BigInteger)
    prior = _prior(task_id, TASK_COLUMNS)
    old = (select(prior.c[name]).scalar_subquery().label(f"prior_{name}") for name in TASK_FIELDS)
    return (
        update(TASKS)
        .where(*_row_of(prior, task_id), *where)
        .values(**changes)
        .returning(*TASK_COLUMNS, *old)
    )


def _bound_versions(count: int | None) -> list[ColumnElement[bool]]:
    if count is None:
        return []
    if count == 0:  # no ETag of the header can match: no row (``at_version``)
        return [false()]
    return [_t.version.in_([bindparam(_expected(i), type_=Integer) for i in range(count)])]


@cache
def update_statement(shape: UpdateShape) -> Update:
    """The authorized update for ``shape``, built once: ``WHERE`` the caller is live and
    may edit tasks in the task's project (and, on a move, in the destination, which
    exists) ``AND`` the ``If-Match`` version ``AND`` the assignee is a member of the task's
    project after the write (the new assignee, or on a move the current one)."""
    where: list[ColumnElement[bool]] = [
        may_bound(Permission.EDIT_TASKS, _t.project_id, admin=shape.admin),
        *_bound_versions(shape.versions),
    ]
    destination: Any = _t.project_id
    fields = shape.fields
    if shape.move:
        destination = bindparam(MOVE_PARAM, type_=BigInteger)
        fields = (*fields, "project_id")
        where.append(may_bound(Permission.EDIT_TASKS, destination, admin=shape.admin))
        where.append(exists().where(_PROJECTS.c.id == destination))
    if shape.assignee:
        assignee: BindParameter[int] = bindparam(_new("assignee_id"), BigInteger)
        member = is_member_sql(destination, assignee, hold=True)
        # The assignee it already has, in the same project, is a member (or a removal that
        # waits on this row unassigns it after): no lock, so a PUT that resends the task's
        # assignee writes nothing to the membership row.
        where.append(member if shape.move else or_(_t.assignee_id == assignee, member))
    elif shape.move and "assignee_id" not in shape.fields:
        where.append(
            or_(
                _t.assignee_id.is_(None),
                _t.project_id == destination,
                is_member_sql(destination, _t.assignee_id, hold=True),
            )
        )
    return _update_statement(fields, completing=shape.completing, where=where)


def task_change(row: Any) -> TaskChange:
    """The task before and after, from an update statement's row."""
    size = len(TASK_FIELDS)
    return TaskChange(before=TaskRow(*row[size:]), after=TaskRow(*row[:size]))


async def update_authorized(
    session: AsyncSession,
    identity: Identity,
    task_id: int,
    *,
    values: dict[str, Any],
    move_to: int | None,
    expected_versions: Sequence[int] | None,
    now: datetime,
) -> TaskChange | None:
    """Apply ``values`` (and the move to ``move_to``) if every rule allows it, in one
    statement (``update_statement``). ``values``: task columns as stored (``status`` as
    its string). The task before and after, or None when anything refused it.
    """
    shape = update_shape(identity, values, move_to, expected_versions)
    params = update_params(identity, task_id, values, move_to, expected_versions, now)
    row = (await session.execute(update_statement(shape), params)).first()
    return None if row is None else task_change(row)


async def update_task(
    session: AsyncSession,
    task_id: int,
    *,
    project_id: int,
    expected_versions: Sequence[int] | None,
    values: dict[str, Any],
    now: datetime,
) -> TaskChange | None:
    """Apply ``values`` if the task is still in ``project_id`` (and at an expected version).

    The step-by-step path's write, once the service has checked the rules itself: the
    task before and after, or None when the task moved, changed or went meanwhile.
    ``values`` may carry ``project_id`` (a move).
    """
    where = [_t.project_id == project_id, *_version_matches(expected_versions)]
    fields = tuple(values)
    completing = values.get("status") == TaskStatus.COMPLETED.value
    statement = _update_statement(fields, completing=completing, where=where)
    values = dict(values)
    moved_to = values.pop("project_id", None)
    params = update_params(None, task_id, values, moved_to, expected_versions, now)
    row = (await session.execute(statement, params)).first()
    return None if row is None else task_change(row)


def _attachment_keys(dialect: str) -> ColumnElement[Any]:
    """The task's attachments' object keys as a JSON list: a subquery correlated to ``tasks``."""
    key = _ATTACHMENTS.c.storage_key
    keys: ColumnElement[Any]
    if dialect == "postgresql":
        keys = func.coalesce(func.jsonb_agg(key), literal([], JSONB))
    else:
        keys = func.json_group_array(key)
    return (
        select(type_coerce(keys, JSONList)).where(_ATTACHMENTS.c.task_id == _t.id).scalar_subquery()
    )


def _delete_statement(dialect: str, where: Sequence[ColumnElement[bool]]) -> TaskDelete:
    """``DELETE FROM tasks WHERE <the task> AND <where> RETURNING`` it and its attachments' keys.

    The attachment rows go with the foreign-key cascade; their keys are read by ``_prior``
    before it (on SQLite a subquery in ``RETURNING`` would see the rows already gone),
    so the files can be removed after the commit. The task is the bound ``task_id``.
    """
    task_id = bindparam(TASK_PARAM, type_=BigInteger)
    prior = _prior(task_id, (_t.id, _attachment_keys(dialect).label("attachment_keys")))
    returned = (*TASK_COLUMNS, select(prior.c.attachment_keys).scalar_subquery())
    return delete(TASKS).where(*_row_of(prior, task_id), *where).returning(*returned)


@dataclass(frozen=True, slots=True)
class DeleteShape:
    """What an authorized delete's SQL depends on (its values are bound parameters)."""

    versions: int | None  # how many If-Match versions; None: no If-Match
    admin: bool  # the credential carries the ``admin`` scope


def delete_shape(identity: Identity, expected_versions: Sequence[int] | None) -> DeleteShape:
    return DeleteShape(
        versions=None if expected_versions is None else len(expected_versions),
        admin=identity.has_scope(Scope.ADMIN),
    )


def delete_params(
    identity: Identity, task_id: int, expected_versions: Sequence[int] | None
) -> dict[str, Any]:
    """The bound values of ``delete_statement``."""
    params: dict[str, Any] = {TASK_PARAM: task_id, **caller_params(identity)}
    params.update((_expected(i), v) for i, v in enumerate(expected_versions or ()))
    return params


@cache
def delete_statement(shape: DeleteShape, dialect: str) -> TaskDelete:
    """The authorized delete for ``shape``, built once per database (the attachments' keys
    are a JSON aggregate): ``WHERE`` the caller is live and may edit tasks in the task's
    project ``AND`` the ``If-Match`` version. Bound: ``delete_params``."""
    where = [
        may_bound(Permission.EDIT_TASKS, _t.project_id, admin=shape.admin),
        *_bound_versions(shape.versions),
    ]
    return _delete_statement(dialect, where)


def deleted_task(row: Any) -> DeletedTask:
    """The task and its attachments' keys, from a delete statement's row."""
    return DeletedTask(row=TaskRow(*row[: len(TASK_FIELDS)]), attachment_keys=list(row[-1]))


async def delete_authorized(
    session: AsyncSession,
    identity: Identity,
    task_id: int,
    *,
    expected_versions: Sequence[int] | None,
) -> DeletedTask | None:
    """Delete the task if the caller may edit its project's tasks (and the version matches).

    One statement (``delete_statement``): the deleted task (its event's data) with its
    attachments' keys, or None when nothing matched.
    """
    statement = delete_statement(delete_shape(identity, expected_versions), _dialect(session))
    params = delete_params(identity, task_id, expected_versions)
    row = (await session.execute(statement, params)).first()
    return None if row is None else deleted_task(row)


async def delete_task(
    session: AsyncSession,
    task_id: int,
    *,
    project_id: int,
    expected_versions: Sequence[int] | None,
) -> DeletedTask | None:
    """Delete the task if it is still in ``project_id`` (and at an expected version)."""
    where = [_t.project_id == project_id, *_version_matches(expected_versions)]
    statement = _delete_statement(_dialect(session), where)
    row = (await session.execute(statement, {TASK_PARAM: task_id})).first()
    return None if row is None else deleted_task(row)


async def current_state(session: AsyncSession, task_id: int) -> Any:
    """The task's ``project_id`` and ``version`` now, to explain why a write matched nothing."""
    return (
        await session.execute(select(_t.project_id, _t.version).where(_t.id == task_id))
    ).first()


# ---- lists -------------------------------------------------------------------------------


SORT_COLUMNS = {sort_by: _t[sort_by.value] for sort_by in SortBy}


def _tags_condition(dialect: str, tags: list[str]) -> ColumnElement[bool]:
    """The task carries every one of ``tags``."""
    if dialect == "postgresql":
        # JSONB containment: can use a GIN index on tags.
        return type_coerce(_t.tags, JSONB).contains(tags)
    conditions = []
    for tag in tags:
        each = func.json_each(_t.tags).table_valued("value")
        conditions.append(exists(select(literal(1)).select_from(each).where(each.c.value == tag)))
    return and_(*conditions)


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _text_condition(q: str) -> ColumnElement[bool]:
    """``q`` in the title or description, compared case-folded (``models.tasks.search_fold``).

    A plain ``LIKE '%term%'`` on the stored folded columns: the same answer on both
    backends, and one a trigram index (PostgreSQL ``pg_trgm`` GIN on ``title_folded`` and
    ``description_folded``) can serve, since the pattern is a bound literal. ``%``, ``_``
    and ``\\`` in the term are literals.
    """
    pattern = _like_pattern(search_fold(q))
    return or_(
        _t.title_folded.like(pattern, escape="\\"),
        _t.description_folded.like(pattern, escape="\\"),
    )


def _conditions(
    query: TaskListQuery, *, viewer_id: int, is_admin: bool, dialect: str
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if not is_admin:
        conditions.append(_t.project_id.in_(visible_project_ids(viewer_id)))
    if query.status:
        conditions.append(_t.status.in_([status.value for status in query.status]))
    if query.priority:
        conditions.append(_t.priority.in_(query.priority))
    if query.project_id is not None:
        conditions.append(_t.project_id == query.project_id)
    assignee_id = query.assignee_for(viewer_id)
    if assignee_id is not None:
        conditions.append(_t.assignee_id == assignee_id)
    if query.tag:
        conditions.append(_tags_condition(dialect, query.tag))
    if query.due_before is not None:
        conditions.append(_t.due_date < query.due_before)
    if query.due_after is not None:
        conditions.append(_t.due_date > query.due_after)
    if query.q is not None:
        conditions.append(_text_condition(query.q))
    return conditions


def _order_by(sort_by: SortBy, order: SortOrder) -> list[UnaryExpression[Any]]:
    column = SORT_COLUMNS[sort_by]
    if order is SortOrder.DESC:
        first = column.desc()
        tie = _t.id.desc()
    else:
        first = column.asc()
        tie = _t.id.asc()
    if sort_by is SortBy.DUE_DATE:
        # Tasks without a due date come last in both directions, on both backends.
        first = first.nulls_last()
    return [first, tie]


def _seek_condition(sort_by: SortBy, order: SortOrder, seek: Seek) -> ColumnElement[bool]:
    column = SORT_COLUMNS[sort_by]
    last_id = literal(seek.last_id, _t.id.type)
    if sort_by is SortBy.DUE_DATE and seek.value is None:
        # Already in the trailing block of undated tasks: only the id moves on.
        after_id = _t.id < last_id if order is SortOrder.DESC else _t.id > last_id
        return and_(column.is_(None), after_id)
    key = tuple_(column, _t.id)
    bound = tuple_(literal(seek.value, column.type), last_id)
    after = key < bound if order is SortOrder.DESC else key > bound
    if sort_by is SortBy.DUE_DATE:
        # Row comparison with NULL is unknown, so the undated tail is added explicitly.
        return or_(after, column.is_(None))
    return after


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def counters_for(query: TaskListQuery) -> Literal["status", "tag"] | None:
    """Which counters can give the list's total instead of a count, if any.

    ``status`` (``task_counts``) when the list filters by nothing but project and status — the
    unfiltered list, a project's board, a status column; ``tag`` (``task_tag_counts``) when
    by nothing but project and one tag. Any other filter, or a combination, counts its rows.
    """
    if (
        query.priority
        or query.assignee_id is not None
        or query.due_before is not None
        or query.due_after is not None
        or query.q is not None
    ):
        return None
    if not query.tag:
        return "status"
    if len(query.tag) == 1 and not query.status:
        return "tag"
    return None


def total_statement(
    query: TaskListQuery, *, viewer_id: int, is_admin: bool, dialect: str
) -> Select[int]:
    """The list's total: the sum of its counter rows (``models.tasks.TaskCount`` and
    ``TaskTagCount``) when their key covers its filters (``counters_for``) — a few rows per
    visible project, however many tasks they hold — else ``count(*)`` of the matching
    tasks. Both exact, in the statement's snapshot (the triggers write the counters in the
    task's own transaction).
    """
    kind = counters_for(query)
    if kind is None:
        conditions = _conditions(query, viewer_id=viewer_id, is_admin=is_admin, dialect=dialect)
        return select(func.count()).select_from(TASKS).where(*conditions)
    counters = _COUNTS if kind == "status" else _TAG_COUNTS
    where: list[ColumnElement[bool]] = []
    if not is_admin:
        where.append(counters.project_id.in_(visible_project_ids(viewer_id)))
    if query.project_id is not None:
        where.append(counters.project_id == query.project_id)
    if kind == "tag":
        where.append(_TAG_COUNTS.tag == query.tag[0])
    elif query.status:
        where.append(_COUNTS.status.in_([status.value for status in query.status]))
    # SUM of BIGINT is NUMERIC on PostgreSQL: cast back to an integer.
    return select(func.coalesce(func.sum(counters.tasks), 0).cast(BigInteger)).where(*where)


async def count_tasks(
    session: AsyncSession, query: TaskListQuery, *, viewer_id: int, is_admin: bool
) -> int:
    stmt = total_statement(query, viewer_id=viewer_id, is_admin=is_admin, dialect=_dialect(session))
    return int((await session.execute(stmt)).scalar_one())


def page_statement(
    query: TaskListQuery,
    *,
    viewer_id: int,
    is_admin: bool,
    dialect: str,
    seek: Seek | None,
    skip: int,
    limit: int,
) -> Select[Any]:
    conditions = _conditions(query, viewer_id=viewer_id, is_admin=is_admin, dialect=dialect)
    if seek is not None:
        conditions.append(_seek_condition(query.sort_by, query.order, seek))
    stmt = select(*TASK_COLUMNS).where(*conditions).order_by(*_order_by(query.sort_by, query.order))
    if dialect == "sqlite" and (index := _sqlite_page_index(query, is_admin=is_admin)):
        stmt = stmt.with_hint(TASKS, f"INDEXED BY {index}", "sqlite")  # kit.db renders it
    if skip:
        stmt = stmt.offset(skip)
    return stmt.limit(limit)


# Indexes that give a project's tasks in each sort order (``Task.__table_args__``).
_SQLITE_ORDERED = {
    SortBy.CREATED_AT: "ix_tasks_project_created",
    SortBy.UPDATED_AT: "ix_tasks_project_updated",
    SortBy.PRIORITY: "ix_tasks_project_priority",
    SortBy.TITLE: "ix_tasks_project_title",
}


def _sqlite_page_index(query: TaskListQuery, *, is_admin: bool) -> str | None:
    """The index a SQLite page must read, where its planner would sort every row instead.

    SQLite keeps no statistics unless ``ANALYZE`` runs, and without them it took any index on
    ``project_id`` for a list filtered by nothing but the caller's projects (or by ``tag`` or
    ``q``, which no index serves) — ``ix_tasks_project_status``, whose rows are not in the
    page's order — so it read and sorted all of the caller's tasks: 0.18 s for an unfiltered
    first page at 1 M tasks, over a second with ``tag``. Read in the sort order's index, each
    project's scan stops once the page is full (SQLite ends an ``IN`` value's scan at the
    ``LIMIT``): about a millisecond, at 10 k tasks as at 1 M. A list with a filter an index
    serves (status, priority, assignee, due dates) is left to the planner, which takes that
    index; so is a due-date order (its ``NULLS LAST`` is sorted anyway) and an admin's list
    across every project.
    """
    if (
        query.status
        or query.priority
        or query.assignee_id is not None
        or query.due_before is not None
        or query.due_after is not None
        or query.sort_by not in _SQLITE_ORDERED
        or (is_admin and query.project_id is None)
    ):
        return None
    return _SQLITE_ORDERED[query.sort_by]


async def list_page(
    session: AsyncSession,
    query: TaskListQuery,
    *,
    viewer_id: int,
    is_admin: bool,
    seek: Seek | None,
    skip: int,
    limit: int,
    count: bool,
) -> tuple[list[TaskRow], int | None]:
    """One page of rows, and with ``count`` the list's total, in one statement.

    The total is an uncorrelated scalar subquery in the page's select list: each database
    computes it once per statement (PostgreSQL as an InitPlan), and it rides on every row;
    ``total_statement`` says where it comes from (the counter rows, or a count from the
    same indexes as the page). None when not asked for, or when the page is empty
    (there is no row to carry it).
    """
    dialect = _dialect(session)
    stmt = page_statement(
        query,
        viewer_id=viewer_id,
        is_admin=is_admin,
        dialect=dialect,
        seek=seek,
        skip=skip,
        limit=limit,
    )
    if not count:
        return [task_row(row) for row in await session.execute(stmt)], None
    # correlate(None): the total reads its own rows, not the page's row.
    total = total_statement(
        query, viewer_id=viewer_id, is_admin=is_admin, dialect=dialect
    ).correlate(None)
    rows = (await session.execute(stmt.add_columns(total.scalar_subquery()))).all()
    if not rows:
        return [], None
    return [TaskRow(*row[: len(TASK_FIELDS)]) for row in rows], int(rows[0][-1])
