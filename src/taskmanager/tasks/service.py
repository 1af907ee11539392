"""Task rules: who may do what to which task, and what a change does to it.

Raises domain errors only; knows nothing of HTTP. Never commits: the request owns the
transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.auth.policy import Permission, authorize
from taskmanager.auth.principal import Identity, Principal, Scope, UserRole
from taskmanager.db import Database, utcnow
from taskmanager.errors import (
    Conflict,
    InvalidCredentials,
    MalformedRequest,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from taskmanager.etags import strong_etag
from taskmanager.projects.inbox import inbox_id_of
from taskmanager.tasks import repository as repo
from taskmanager.tasks.cursor import (
    Cursor,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
    fingerprint,
    from_json_value,
    to_json_value,
)
from taskmanager.tasks.repository import AnyRow
from taskmanager.tasks.schemas import SortBy, SortOrder, TaskCreate, TaskPatch, TaskReplace

EXPORT_BATCH = 500
# A write that lost a race with a concurrent move re-checks access this many times.
_MOVE_RETRIES = 3


def task_not_found(task_id: int) -> NotFound:
    return NotFound(f"Task {task_id} not found")


def project_not_found(project_id: int) -> NotFound:
    return NotFound(f"Project {project_id} not found")


# ---- reading one task (the hot path) ----------------------------------------------------


def _admin_by_row(user_role: str, identity: Identity) -> bool:
    # The same rule as Principal.is_admin, applied to the role read in the task query.
    return user_role == UserRole.ADMIN and identity.has_scope(Scope.ADMIN)


async def get_task(database: Database, identity: Identity, task_id: int) -> Any:
    """The task if the caller may see it. The caller's account is re-checked in the same query."""
    row = await repo.fetch_for_read(database, identity.user_id, task_id)
    if row is None:
        raise InvalidCredentials("The credentials are invalid or the account is inactive")
    if row.id is None or (row.member_role is None and not _admin_by_row(row.user_role, identity)):
        raise task_not_found(task_id)
    return row


# ---- writes ------------------------------------------------------------------------------


async def _require_in_project(
    session: AsyncSession, principal: Principal, project_id: int, permission: Permission
) -> None:
    exists, role = await repo.project_role(session, project_id, principal.user_id)
    if not exists:
        raise project_not_found(project_id)
    authorize(principal, role, permission, not_found=f"Project {project_id} not found")


async def _require_edit_in_project(
    session: AsyncSession, principal: Principal, project_id: int
) -> None:
    await _require_in_project(session, principal, project_id, Permission.EDIT_TASKS)


async def _require_assignable(session: AsyncSession, project_id: int, assignee_id: int) -> None:
    if not await repo.is_member(session, project_id, assignee_id):
        raise ValidationFailed.field(
            ("body", "assignee_id"),
            f"User {assignee_id} is not a member of project {project_id}",
        )


def _column_values(fields: dict[str, Any]) -> dict[str, Any]:
    values = dict(fields)
    if values.get("status") is not None:
        values["status"] = str(values["status"])
    return values


async def create_task(session: AsyncSession, principal: Principal, body: TaskCreate) -> AnyRow:
    project_id = body.project_id
    if project_id is None:
        project_id = await inbox_id_of(session, principal.user_id)
        if project_id is None:
            raise ValidationFailed.field(
                ("body", "project_id"), "You have no Inbox; give a project_id"
            )
    await _require_edit_in_project(session, principal, project_id)
    if body.assignee_id is not None:
        await _require_assignable(session, project_id, body.assignee_id)
    now = utcnow()
    values = _column_values(body.model_dump(exclude={"project_id"}))
    values.update(
        project_id=project_id,
        created_by=principal.user_id,
        created_at=now,
        updated_at=now,
        completed_at=now if values["status"] == "completed" else None,
        version=1,
    )
    return await repo.insert_task(session, values)


def _precondition_failed(task_id: int, version: int) -> PreconditionFailed:
    return PreconditionFailed(
        "If-Match does not match the current ETag",
        headers={"ETag": strong_etag(task_id, version)},
    )


async def _load_for_edit(session: AsyncSession, principal: Principal, task_id: int) -> AnyRow:
    row = await repo.fetch_with_access(session, principal.user_id, task_id)
    if row is None or row.id is None:
        raise task_not_found(task_id)
    authorize(
        principal, row.member_role, Permission.EDIT_TASKS, not_found=f"Task {task_id} not found"
    )
    return row


async def _explain_miss(
    session: AsyncSession, task_id: int, expected_versions: Sequence[int] | None
) -> None:
    """A compare-and-set matched nothing: raise 404 or 412, or return if the task moved."""
    state = await repo.current_state(session, task_id)
    if state is None:
        raise task_not_found(task_id)
    if expected_versions is not None and state.version not in expected_versions:
        raise _precondition_failed(task_id, state.version)


async def _update(
    session: AsyncSession,
    principal: Principal,
    task_id: int,
    fields: dict[str, Any],
    move_to: int | None,
    expected_versions: Sequence[int] | None,
) -> AnyRow:
    for _ in range(_MOVE_RETRIES):
        current = await _load_for_edit(session, principal, task_id)
        if expected_versions is not None and current.version not in expected_versions:
            # Fail fast; the guarantee itself is the version check inside the UPDATE.
            raise _precondition_failed(task_id, current.version)
        destination = current.project_id if move_to is None else move_to
        moving = destination != current.project_id
        if moving:
            await _require_edit_in_project(session, principal, destination)
        assignee = fields.get("assignee_id", current.assignee_id)
        if assignee is not None and ("assignee_id" in fields or moving):
            await _require_assignable(session, destination, assignee)
        values = _column_values(fields)
        if moving:
            values["project_id"] = destination
        row = await repo.update_task(
            session,
            task_id,
            project_id=current.project_id,
            expected_versions=expected_versions,
            values=values,
            now=utcnow(),
        )
        if row is not None:
            return row
        await _explain_miss(session, task_id, expected_versions)
        # Moved to another project between our read and our write: check access again.
    raise Conflict("The task kept changing while it was being updated; retry")


async def replace_task(
    session: AsyncSession,
    principal: Principal,
    task_id: int,
    body: TaskReplace,
    expected_versions: Sequence[int] | None,
) -> AnyRow:
    """PUT: every field is set; the ones left out go back to their defaults."""
    fields = body.model_dump(exclude={"project_id"})
    return await _update(session, principal, task_id, fields, body.project_id, expected_versions)


async def patch_task(
    session: AsyncSession,
    principal: Principal,
    task_id: int,
    body: TaskPatch,
    expected_versions: Sequence[int] | None,
) -> AnyRow:
    """PATCH: only the fields sent change; null clears a nullable one."""
    sent = body.model_fields_set
    if not sent:
        raise MalformedRequest("A PATCH must contain at least one field to change")
    fields = body.model_dump(include=sent - {"project_id"})
    move_to = body.project_id if "project_id" in sent else None
    return await _update(session, principal, task_id, fields, move_to, expected_versions)


async def delete_task(
    session: AsyncSession,
    principal: Principal,
    task_id: int,
    expected_versions: Sequence[int] | None,
) -> None:
    for _ in range(_MOVE_RETRIES):
        current = await _load_for_edit(session, principal, task_id)
        if expected_versions is not None and current.version not in expected_versions:
            raise _precondition_failed(task_id, current.version)
        deleted = await repo.delete_task(
            session,
            task_id,
            project_id=current.project_id,
            expected_versions=expected_versions,
        )
        if deleted:
            return
        await _explain_miss(session, task_id, expected_versions)
    raise Conflict("The task kept changing while it was being deleted; retry")


# ---- lists -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Filters and sort as the client sent them (``assignee_id`` may still be "me")."""

    statuses: tuple[str, ...] = ()
    priority: int | None = None
    project_id: int | None = None
    assignee_id: int | Literal["me"] | None = None
    tag: str | None = None
    due_before: datetime | None = None
    due_after: datetime | None = None
    q: str | None = None
    sort_by: SortBy = "created_at"
    order: SortOrder = "desc"

    def for_project(self, project_id: int) -> ListQuery:
        return ListQuery(**{**asdict(self), "project_id": project_id})

    def filters(self, viewer_id: int) -> repo.TaskFilters:
        assignee = viewer_id if self.assignee_id == "me" else self.assignee_id
        return repo.TaskFilters(
            statuses=tuple(sorted(set(self.statuses))),
            priority=self.priority,
            project_id=self.project_id,
            assignee_id=assignee,
            tag=self.tag.lower() if self.tag is not None else None,
            due_before=self.due_before,
            due_after=self.due_after,
            q=self.q,
        )

    def fingerprint(self) -> str:
        """Identifies the filter set (as sent: "me" stays "me") for cursors."""
        data = asdict(self)
        data["statuses"] = sorted(set(self.statuses))
        for key in ("due_before", "due_after"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return fingerprint(data)


@dataclass(frozen=True, slots=True)
class TaskListPage:
    rows: Sequence[AnyRow]
    total: int
    skip: int
    limit: int
    next_cursor: str | None


def _seek_from_cursor(token: str, query: ListQuery, key: str) -> repo.Seek:
    def invalid(message: str) -> ValidationFailed:
        return ValidationFailed.field(("query", "cursor"), message)

    try:
        cursor = decode_cursor(token, key)
    except InvalidCursor as exc:
        raise invalid(str(exc)) from None
    if cursor.sort_by != query.sort_by or cursor.order != query.order:
        raise invalid(
            f"cursor was made for sort_by={cursor.sort_by}&order={cursor.order}; "
            "use the same sort as the page it came from"
        )
    if cursor.fingerprint != query.fingerprint():
        raise invalid("cursor was made for different filters; use the same filters")
    try:
        value = from_json_value(query.sort_by, cursor.value)
    except InvalidCursor as exc:
        raise invalid(str(exc)) from None
    return repo.Seek(value=value, last_id=cursor.last_id)


def _cursor_after(row: AnyRow, query: ListQuery, key: str) -> str:
    value = getattr(row, query.sort_by)
    return encode_cursor(
        Cursor(
            sort_by=query.sort_by,
            order=query.order,
            value=to_json_value(query.sort_by, value),
            last_id=row.id,
            fingerprint=query.fingerprint(),
        ),
        key,
    )


async def require_project_visible(
    session: AsyncSession, principal: Principal, project_id: int
) -> None:
    await _require_in_project(session, principal, project_id, Permission.VIEW)


async def count_tasks(session: AsyncSession, principal: Principal, query: ListQuery) -> int:
    return await repo.count_tasks(
        session,
        query.filters(principal.user_id),
        viewer_id=principal.user_id,
        is_admin=principal.is_admin,
    )


async def list_tasks(
    session: AsyncSession,
    principal: Principal,
    query: ListQuery,
    *,
    skip: int,
    limit: int,
    cursor: str | None,
    signing_key: str,
) -> TaskListPage:
    """One page, by offset or by cursor (a keyset seek whose cost does not grow with depth)."""
    seek: repo.Seek | None = None
    if cursor is not None:
        if skip:
            raise ValidationFailed.field(("query", "skip"), "skip cannot be combined with cursor")
        seek = _seek_from_cursor(cursor, query, signing_key)
    filters = query.filters(principal.user_id)
    total = await repo.count_tasks(
        session, filters, viewer_id=principal.user_id, is_admin=principal.is_admin
    )
    rows = await repo.list_tasks(
        session,
        filters,
        viewer_id=principal.user_id,
        is_admin=principal.is_admin,
        sort_by=query.sort_by,
        order=query.order,
        seek=seek,
        skip=skip,
        limit=limit + 1,  # one extra row tells whether there is a next page
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _cursor_after(rows[-1], query, signing_key)
    return TaskListPage(rows=rows, total=total, skip=skip, limit=limit, next_cursor=next_cursor)


async def iter_all(
    database: Database, principal: Principal, query: ListQuery
) -> AsyncIterator[AnyRow]:
    """Every matching task, fetched in keyset batches on a session of its own.

    Its own session because it runs while the response streams, after the request's
    session has closed; batches keep memory flat however many rows there are.
    """
    filters = query.filters(principal.user_id)
    seek: repo.Seek | None = None
    async with database.session(write=False) as session:
        while True:
            rows = await repo.list_tasks(
                session,
                filters,
                viewer_id=principal.user_id,
                is_admin=principal.is_admin,
                sort_by=query.sort_by,
                order=query.order,
                seek=seek,
                skip=0,
                limit=EXPORT_BATCH,
            )
            for row in rows:
                yield row
            if len(rows) < EXPORT_BATCH:
                return
            last = rows[-1]
            seek = repo.Seek(value=getattr(last, query.sort_by), last_id=last.id)
