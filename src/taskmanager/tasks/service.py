"""Task rules: who may do what to which task, and what a change does to it.

Raises domain errors only; knows nothing of HTTP. Never commits: the request owns the
transaction. Access is the gate's (``projects.access``); the single-task read has its own
fast module (``tasks.fast_read``).

Create, update and delete take the caller's ``Identity`` (for a bearer token, unchecked
against the database yet) and make one statement that authorizes, writes and reads back
(``repository.*_authorized``; an update reads the task as it was too, for the event's
``changed``), then record the event (``kit.outbox.record``, one statement): two round
trips on the successful path. Only when the write matches nothing do they take the
step-by-step path — the caller verified, then the access gate, the version and the
assignee, each in its own query — which raises the error the client should see (401, 404,
403, 412, 422) or, if the world changed in between, does the write itself. Error paths
cost more round trips; the successful ones never do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.db import Database, utcnow
from taskmanager.kit.driver import Step
from taskmanager.kit.errors import Conflict, PreconditionFailed, ValidationFailed
from taskmanager.kit.etags import strong_etag
from taskmanager.kit.identity import Identity, Principal
from taskmanager.kit.outbox import EventType, event_step, record, record_steps
from taskmanager.kit.pagination import (
    ListPage,
    PageRequest,
    Seek,
    finish_page,
    invalid_cursor,
    resume,
)
from taskmanager.kit.storage import discard_after_commit
from taskmanager.models.tasks import TaskStatus
from taskmanager.projects import service as projects
from taskmanager.projects.access import (
    principal_of,
    project_access,
    task_access,
    task_not_found,
)
from taskmanager.projects.inbox import inbox_id_of
from taskmanager.projects.policy import Permission
from taskmanager.tasks import repository as repo
from taskmanager.tasks.filters import SortBy, TaskFilters, TaskListQuery
from taskmanager.tasks.repository import (
    TASK_COLUMNS,
    DeletedTask,
    TaskChange,
    TaskRow,
    task_row,
)
from taskmanager.tasks.schemas import TaskCreate, TaskOut, TaskPatch, TaskReplace

EXPORT_BATCH = 500
# A write that lost a race with a concurrent move re-checks access this many times.
_MOVE_RETRIES = 3
# Names the list in its cursors' signatures, so no other list's cursor is accepted here.
_CURSOR_CONTEXT = b"taskmanager/tasks/cursor/v2"


# ---- writes ------------------------------------------------------------------------------

# Bookkeeping that changes on every write: not listed in a task.updated event's ``changed``.
_UNLISTED_CHANGES = frozenset({"updated_at", "version"})


def event_data(row: TaskRow) -> dict[str, Any]:
    """The task as the API shows it (the ``data`` of its events)."""
    return TaskOut.model_validate(row, from_attributes=True).model_dump(mode="json")


async def _record_update(session: AsyncSession, actor_id: int, change: TaskChange) -> None:
    """task.updated in the task's (new) project; on a move the old project's members hear
    too (``update_step``)."""
    await record_steps(session, [update_step(actor_id, change)])


def update_step(actor_id: int, change: TaskChange) -> Step | None:
    """The task.updated of a change as a ``kit.driver`` step (None: no field changed), for
    the driver path and for the ``Session`` (``record_steps``, one statement for many).

    In the task's (new) project; on a move the old project's members hear too. ``changed``
    names the fields whose value the update changed (API.md §7).
    """
    before, after = change.before, change.after
    return event_step(
        type=EventType.TASK_UPDATED,
        project_id=after.project_id,
        actor_id=actor_id,
        data=event_data(after),
        changed=changed_fields(change),
        also_members_of=before.project_id,
    )


def changed_fields(change: TaskChange) -> list[str]:
    """The fields whose value an update changed, for task.updated's ``changed`` (API.md §7)."""
    before, after = change.before, change.after
    return [
        name
        for name in TaskOut.model_fields
        if name not in _UNLISTED_CHANGES and getattr(before, name) != getattr(after, name)
    ]


async def forget_user(session: AsyncSession, user_id: int) -> None:
    """Before ``user_id``'s account is deleted (``users.service.delete_me``): the tasks it
    created or is assigned to lose it, each with a new version and a ``task.updated``
    naming ``created_by`` and/or ``assignee_id`` (API.md §7: every change is an event)."""
    changes = await repo.forget_user(session, user_id, utcnow())
    await record_steps(session, (update_step(user_id, change) for change in changes))


@projects.on_member_departure
async def unassign_member(
    session: AsyncSession, project_id: int, user_id: int, actor_id: int
) -> None:
    """After ``user_id`` was removed from project ``project_id`` (or left it): the tasks
    there assigned to them have no assignee, each with a new version and a
    ``task.updated`` naming ``assignee_id`` from ``actor_id`` (API.md §5: an assignee is a
    member of the task's project; §7: every change is an event). Their tasks in other
    projects keep them."""
    changes = await repo.unassign(session, project_id, user_id, utcnow())
    await record_steps(session, (update_step(actor_id, change) for change in changes))


async def _require_assignable(session: AsyncSession, project_id: int, assignee_id: int) -> None:
    if not await repo.holds_membership(session, project_id, assignee_id):
        raise ValidationFailed.field(
            ("body", "assignee_id"),
            f"User {assignee_id} is not a member of project {project_id}",
            "not_a_member",
        )


def column_values(fields: dict[str, Any]) -> dict[str, Any]:
    values = dict(fields)
    if values.get("status") is not None:
        values["status"] = str(values["status"])
    return values


def new_task_values(identity: Identity, body: TaskCreate) -> dict[str, Any]:
    now = utcnow()
    values = column_values(body.model_dump(exclude={"project_id"}))
    values.update(
        created_by=identity.user_id,
        created_at=now,
        updated_at=now,
        completed_at=now if values["status"] == TaskStatus.COMPLETED else None,
        version=1,
    )
    return values


async def create_task(session: AsyncSession, identity: Identity, body: TaskCreate) -> TaskRow:
    """Create the task in one statement; on a refusal, find which error it was.

    Raises InvalidCredentials (the caller is gone), ValidationFailed (no Inbox, or the
    assignee is not a member), NotFound (no such project, or not the caller's) or Forbidden.
    """
    values = new_task_values(identity, body)
    row = await repo.create_authorized(session, identity, values, project_id=body.project_id)
    if row is not None:
        await record(
            session,
            type=EventType.TASK_CREATED,
            project_id=row.project_id,
            actor_id=identity.user_id,
            data=event_data(row),
        )
        return row
    principal = await principal_of(session, identity)
    return await _create_step_by_step(session, principal, body)


async def _create_step_by_step(
    session: AsyncSession, principal: Principal, body: TaskCreate
) -> TaskRow:
    project_id = body.project_id
    if project_id is None:
        project_id = await inbox_id_of(session, principal.user_id)
        if project_id is None:
            raise ValidationFailed.field(
                ("body", "project_id"), "You have no Inbox; give a project_id"
            )
    await project_access(session, principal, project_id, Permission.EDIT_TASKS)
    if body.assignee_id is not None:
        await _require_assignable(session, project_id, body.assignee_id)
    values = new_task_values(principal.identity, body)
    values["project_id"] = project_id
    row = await repo.insert_task(session, values)
    await record(
        session,
        type=EventType.TASK_CREATED,
        project_id=project_id,
        actor_id=principal.user_id,
        data=event_data(row),
    )
    return row


def _precondition_failed(task_id: int, version: int) -> PreconditionFailed:
    return PreconditionFailed(
        "If-Match does not match the current ETag",
        headers={"ETag": strong_etag(task_id, version)},
    )


async def _load_for_edit(
    session: AsyncSession,
    principal: Principal,
    task_id: int,
    expected_versions: Sequence[int] | None,
) -> TaskRow:
    """The task, once the caller may edit it (404, 403) and it is at an expected version (412).

    The version is checked here to fail fast; the guarantee is the compare-and-set inside
    the write.
    """
    access = await task_access(
        session, principal, task_id, Permission.EDIT_TASKS, load=TASK_COLUMNS
    )
    current = task_row(access.row)
    if expected_versions is not None and current.version not in expected_versions:
        raise _precondition_failed(task_id, current.version)
    return current


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
    identity: Identity,
    task_id: int,
    fields: dict[str, Any],
    move_to: int | None,
    expected_versions: Sequence[int] | None,
) -> TaskRow:
    """Update in one statement, then record task.updated: two round trips.

    The statement authorizes, writes and returns the task before and after
    (``repo.update_authorized``), which is what the event's ``changed`` is computed from.
    On a refusal, find which error it was (or do the write, if the world changed).
    """
    change = await repo.update_authorized(
        session,
        identity,
        task_id,
        values=column_values(fields),
        move_to=move_to,
        expected_versions=expected_versions,
        now=utcnow(),
    )
    if change is not None:
        await _record_update(session, identity.user_id, change)
        return change.after
    principal = await principal_of(session, identity)
    return await _update_step_by_step(
        session, principal, task_id, fields, move_to, expected_versions
    )


async def _update_step_by_step(
    session: AsyncSession,
    principal: Principal,
    task_id: int,
    fields: dict[str, Any],
    move_to: int | None,
    expected_versions: Sequence[int] | None,
) -> TaskRow:
    for _ in range(_MOVE_RETRIES):
        current = await _load_for_edit(session, principal, task_id, expected_versions)
        destination = current.project_id if move_to is None else move_to
        moving = destination != current.project_id
        if moving:
            await project_access(session, principal, destination, Permission.EDIT_TASKS)
        assignee = fields.get("assignee_id", current.assignee_id)
        # The assignee the task already has, in its project, is a member: not checked (nor
        # its membership held), as on the driver path (repository.update_statement).
        if assignee is not None and (assignee != current.assignee_id or moving):
            await _require_assignable(session, destination, assignee)
        values = column_values(fields)
        if moving:
            values["project_id"] = destination
        change = await repo.update_task(
            session,
            task_id,
            project_id=current.project_id,
            expected_versions=expected_versions,
            values=values,
            now=utcnow(),
        )
        if change is not None:
            await _record_update(session, principal.user_id, change)
            return change.after
        await _explain_miss(session, task_id, expected_versions)
        # Moved to another project between our read and our write: check access again.
    raise Conflict("The task kept changing while it was being updated; retry")


async def replace_task(
    session: AsyncSession,
    identity: Identity,
    task_id: int,
    body: TaskReplace,
    expected_versions: Sequence[int] | None,
) -> TaskRow:
    """PUT: every field is set; the ones left out go back to their defaults."""
    fields, move_to = replacement(body)
    return await _update(session, identity, task_id, fields, move_to, expected_versions)


def replacement(body: TaskReplace) -> tuple[dict[str, Any], int | None]:
    """What a PUT sets: every field, and the project to move to (None: stay)."""
    return body.model_dump(exclude={"project_id"}), body.project_id


def patch(body: TaskPatch) -> tuple[dict[str, Any], int | None]:
    """What a PATCH sets: the fields sent, and the project to move to (None: stay)."""
    fields = body.changes()
    return fields, fields.pop("project_id", None)


async def patch_task(
    session: AsyncSession,
    identity: Identity,
    task_id: int,
    body: TaskPatch,
    expected_versions: Sequence[int] | None,
) -> TaskRow:
    """PATCH: only the fields sent change; null clears a nullable one."""
    fields, move_to = patch(body)
    return await _update(session, identity, task_id, fields, move_to, expected_versions)


async def _record_deletion(session: AsyncSession, actor_id: int, gone: DeletedTask) -> None:
    """task.deleted; the attachments' files go once the transaction commits."""
    discard_after_commit(session, gone.attachment_keys)
    # Its comments (and attachments) go with it: no event of their own (README).
    await record(
        session,
        type=EventType.TASK_DELETED,
        project_id=gone.row.project_id,
        actor_id=actor_id,
        data=event_data(gone.row),
    )


async def delete_task(
    session: AsyncSession,
    identity: Identity,
    task_id: int,
    expected_versions: Sequence[int] | None,
) -> None:
    """Delete in one statement, then record task.deleted: two round trips.

    The statement authorizes, deletes and returns the task with its attachments' object
    keys (``repo.delete_authorized``); their files are removed after the commit, and only
    if the delete commits. On a refusal raise 401, 404, 403 or 412 (or delete then).
    """
    gone = await repo.delete_authorized(
        session, identity, task_id, expected_versions=expected_versions
    )
    if gone is not None:
        await _record_deletion(session, identity.user_id, gone)
        return
    principal = await principal_of(session, identity)
    for _ in range(_MOVE_RETRIES):
        current = await _load_for_edit(session, principal, task_id, expected_versions)
        gone = await repo.delete_task(
            session,
            task_id,
            project_id=current.project_id,
            expected_versions=expected_versions,
        )
        if gone is not None:
            await _record_deletion(session, principal.user_id, gone)
            return
        await _explain_miss(session, task_id, expected_versions)
    raise Conflict("The task kept changing while it was being deleted; retry")


# ---- lists -------------------------------------------------------------------------------


def sort_value_from_json(sort_by: SortBy, value: Any) -> Any:
    """A cursor's JSON sort value back in the column's Python type."""
    try:
        if sort_by in (SortBy.CREATED_AT, SortBy.UPDATED_AT):
            return datetime.fromisoformat(value)
        if sort_by is SortBy.DUE_DATE:
            return None if value is None else datetime.fromisoformat(value)
        if sort_by is SortBy.PRIORITY and isinstance(value, int):
            return value
        if sort_by is SortBy.TITLE and isinstance(value, str):
            return value
    except (TypeError, ValueError):
        pass
    raise invalid_cursor("cursor is malformed")


async def for_project(
    session: AsyncSession, principal: Principal, project_id: int, filters: TaskFilters
) -> TaskListQuery:
    """The list query of one project, once the caller is known to see that project."""
    await project_access(session, principal, project_id, Permission.VIEW)
    return TaskListQuery(**filters.model_dump(), project_id=project_id)


async def list_tasks(
    session: AsyncSession,
    principal: Principal,
    query: TaskListQuery,
    page: PageRequest,
    *,
    sent: Collection[str],
    signing_key: str,
) -> tuple[TaskListQuery, ListPage[TaskRow]]:
    """One page, by offset or by cursor (a keyset seek whose cost does not grow with depth).

    One statement: the page, with the total counted in the same statement — except on a
    cursor page, which repeats the total its cursor carries (counted when the list was
    started) and counts nothing. ``sent``: the query's names the client sent; with a
    cursor they must match it. Returns the query the page was made for (the cursor's, when
    one was given) and the page.
    """
    resumed = resume(page, query.as_json(), sent, key=signing_key, context=_CURSOR_CONTEXT)
    if page.cursor is not None:
        try:
            query = TaskListQuery.model_validate(resumed.query)
        except ValueError:
            raise invalid_cursor("cursor is malformed") from None
    seek = None
    if resumed.seek is not None:
        seek = Seek(sort_value_from_json(query.sort_by, resumed.seek.value), resumed.seek.last_id)
    viewer_id, is_admin = principal.user_id, principal.is_admin
    rows, counted = await repo.list_page(
        session,
        query,
        viewer_id=viewer_id,
        is_admin=is_admin,
        seek=seek,
        skip=resumed.skip,
        limit=resumed.limit + 1,  # one extra row tells whether there is a next page
        count=resumed.total is None,
    )
    if resumed.total is not None:
        total = resumed.total
    elif counted is not None:
        total = counted
    elif seek is None and resumed.skip == 0:
        total = 0  # the first page is empty: nothing matches
    else:
        # An empty page past the end (or an old cursor without a total): count on its own.
        total = await repo.count_tasks(session, query, viewer_id=viewer_id, is_admin=is_admin)
    sort_by = query.sort_by.value
    return query, finish_page(
        rows,
        resumed,
        total,
        sort_value=lambda row: getattr(row, sort_by),
        row_id=lambda row: row.id,
        key=signing_key,
        context=_CURSOR_CONTEXT,
        carry_total=True,
    )


async def iter_all(
    database: Database, principal: Principal, query: TaskListQuery
) -> AsyncIterator[TaskRow]:
    """Every matching task, in keyset batches, each read in a short snapshot of its own.

    It runs while the response streams, after the request's session has closed. A batch
    holds a pooled connection only for its one query: the connection is back in the pool
    before the rows are handed to a (possibly slow) client, so slow readers cannot starve
    the API, and a disconnect, the time budget or shutdown cancelling the stream leaves
    nothing checked out. Keyset order (sort value, then id) means a task is never repeated
    or skipped because earlier ones were added or deleted meanwhile; a task whose sort value
    changes during the export may appear at its old or its new place.
    """
    seek: Seek | None = None
    while True:
        async with database.snapshot() as session:
            rows, _ = await repo.list_page(
                session,
                query,
                viewer_id=principal.user_id,
                is_admin=principal.is_admin,
                seek=seek,
                skip=0,
                limit=EXPORT_BATCH,
                count=False,
            )
        for row in rows:
            yield row
        if len(rows) < EXPORT_BATCH:
            return
        last = rows[-1]
        seek = Seek(value=getattr(last, query.sort_by.value), last_id=last.id)
