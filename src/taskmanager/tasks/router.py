"""Task routes: thin HTTP wiring around ``taskmanager.tasks.service``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.responses import Response

from taskmanager.auth.dependencies import (
    OPENAPI_SECURITY,
    CurrentPrincipal,
    RequireScope,
    SettingsDep,
    identity_for_read,
)
from taskmanager.auth.principal import Scope
from taskmanager.db import SessionDep, get_database
from taskmanager.errors import (
    Forbidden,
    MalformedRequest,
    NotAuthenticated,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from taskmanager.etags import expected_versions, none_match
from taskmanager.etags import strong_etag as task_etag
from taskmanager.middleware.media_type import BodyCheckedRoute
from taskmanager.problems import problem_responses
from taskmanager.tasks import service
from taskmanager.tasks.export import csv_stream
from taskmanager.tasks.repository import AnyRow
from taskmanager.tasks.schemas import (
    MAX_ID,
    QueryDateTime,
    QueryId,
    SortBy,
    SortOrder,
    TaskCreate,
    TaskOut,
    TaskPage,
    TaskPatch,
    TaskReplace,
    TaskStatus,
    Text,
    task_payload,
)

router = APIRouter(tags=["tasks"], route_class=BodyCheckedRoute)

_require_read = RequireScope(Scope.TASKS_READ)
READ = [Depends(_require_read)]
WRITE = [Depends(RequireScope(Scope.TASKS_WRITE))]

COLLECTION_ALLOW = "GET, HEAD, POST, OPTIONS"
ITEM_ALLOW = "GET, PUT, PATCH, DELETE, OPTIONS"

TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="The task's id")]
ProjectId = Annotated[int, Path(ge=1, le=MAX_ID, description="The project's id")]
IfMatch = Annotated[
    str | None,
    Header(description="Only change the task if its current ETag is one of these (else 412)"),
]
IfNoneMatch = Annotated[
    str | None, Header(description="Answer 304 with no body if the ETag still matches")
]

_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the `If-None-Match` ETag is current"}
}
_ETAG_HEADER = {"ETag": {"description": "Strong ETag of the task's current version"}}
_TOTAL_HEADER = {"X-Total-Count": {"description": "How many tasks match the filters"}}


def _json(data: Any, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_UTC_Z),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def _task_response(row: AnyRow, *, status_code: int = 200) -> Response:
    headers = {"ETag": task_etag(row.id, row.version)}
    if status_code == 201:
        headers["Location"] = f"/api/v1/tasks/{row.id}"
    return _json(task_payload(row), status_code=status_code, headers=headers)


# ---- query parameters ---------------------------------------------------------------------


async def common_filters(
    status: Annotated[
        list[TaskStatus] | None, Query(description="Repeat to match any of several")
    ] = None,
    priority: Annotated[int | None, Query(ge=1, le=5)] = None,
    assignee_id: Annotated[
        QueryId | Literal["me"] | None, Query(description="A user id, or `me`")
    ] = None,
    tag: Annotated[Text | None, Query(min_length=1, max_length=50)] = None,
    due_before: Annotated[
        QueryDateTime | None, Query(description="Due strictly before (RFC 3339 with offset)")
    ] = None,
    due_after: Annotated[
        QueryDateTime | None, Query(description="Due strictly after (RFC 3339 with offset)")
    ] = None,
    q: Annotated[
        Text | None,
        Query(
            min_length=1,
            max_length=200,
            description="Case-insensitive text in the title or description",
        ),
    ] = None,
    sort_by: Annotated[SortBy, Query()] = "created_at",
    order: Annotated[SortOrder, Query()] = "desc",
) -> service.ListQuery:
    return service.ListQuery(
        statuses=tuple(s.value for s in status or ()),
        priority=priority,
        assignee_id=assignee_id,
        tag=tag,
        due_before=due_before,
        due_after=due_after,
        q=q,
        sort_by=sort_by,
        order=order,
    )


CommonFilters = Annotated[service.ListQuery, Depends(common_filters)]


async def list_filters(
    common: CommonFilters, project_id: Annotated[QueryId | None, Query()] = None
) -> service.ListQuery:
    return common.for_project(project_id) if project_id is not None else common


ListFilters = Annotated[service.ListQuery, Depends(list_filters)]
Skip = Annotated[int, Query(ge=0, le=MAX_ID, description="Rows to skip (offset pages)")]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size")]
CursorParam = Annotated[
    str | None,
    Query(min_length=1, max_length=2048, description="`next_cursor` from the previous page"),
]


async def _page_response(
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
    query: service.ListQuery,
    skip: int,
    limit: int,
    cursor: str | None,
) -> Response:
    page = await service.list_tasks(
        session,
        principal,
        query,
        skip=skip,
        limit=limit,
        cursor=cursor,
        signing_key=settings.signing_key,
    )
    body = {
        "items": [task_payload(row) for row in page.rows],
        "total": page.total,
        "skip": page.skip,
        "limit": page.limit,
        "next_cursor": page.next_cursor,
    }
    return _json(body, headers={"X-Total-Count": str(page.total)})


_LIST_ERRORS = problem_responses(NotAuthenticated, Forbidden, ValidationFailed)


# ---- collection ---------------------------------------------------------------------------


@router.get(
    "/tasks",
    operation_id="tasks_list",
    summary="List tasks",
    response_model=TaskPage,
    dependencies=READ,
    responses={200: {"headers": _TOTAL_HEADER}, **_LIST_ERRORS},
)
async def list_tasks(
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
    query: ListFilters,
    skip: Skip = 0,
    limit: Limit = 20,
    cursor: CursorParam = None,
) -> Response:
    """Tasks in the caller's projects (all tasks for an admin), filtered, sorted and paged."""
    return await _page_response(session, principal, settings, query, skip, limit, cursor)


@router.head(
    "/tasks",
    operation_id="tasks_list_head",
    summary="Count tasks (headers only)",
    dependencies=READ,
    responses={200: {"headers": _TOTAL_HEADER}, **_LIST_ERRORS},
)
async def head_tasks(
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
    query: ListFilters,
    skip: Skip = 0,
    limit: Limit = 20,
    cursor: CursorParam = None,
) -> Response:
    """The headers ``GET /tasks`` would send (``X-Total-Count`` included), without a body."""
    full = await _page_response(session, principal, settings, query, skip, limit, cursor)
    return Response(status_code=200, headers=dict(full.headers))


@router.options(
    "/tasks",
    operation_id="tasks_options",
    summary="Methods allowed on the task collection",
    status_code=204,
    responses={204: {"headers": {"Allow": {"description": "The allowed methods"}}}},
)
async def options_tasks() -> Response:
    """An empty answer whose ``Allow`` header lists the methods."""
    return Response(status_code=204, headers={"Allow": COLLECTION_ALLOW})


@router.post(
    "/tasks",
    operation_id="tasks_create",
    summary="Create a task",
    status_code=201,
    response_model=TaskOut,
    dependencies=WRITE,
    responses={
        201: {
            "headers": {
                **_ETAG_HEADER,
                "Location": {"description": "The new task's URL"},
            }
        },
        **problem_responses(
            MalformedRequest, NotAuthenticated, Forbidden, NotFound, ValidationFailed
        ),
    },
)
async def create_task(
    session: SessionDep, principal: CurrentPrincipal, body: TaskCreate
) -> Response:
    """Create a task in a project you may edit (your Inbox when ``project_id`` is left out)."""
    row = await service.create_task(session, principal, body)
    return _task_response(row, status_code=201)


@router.get(
    "/tasks/export",
    operation_id="tasks_export",
    summary="Export tasks as CSV",
    response_class=StreamingResponse,
    dependencies=READ,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "Every matching task, one CSV row each, streamed",
        },
        **_LIST_ERRORS,
    },
)
async def export_tasks(
    request: Request,
    principal: CurrentPrincipal,
    query: ListFilters,
    export_format: Annotated[
        Literal["csv"], Query(alias="format", description="Only `csv` for now")
    ] = "csv",
) -> StreamingResponse:
    """Every task the list filters match, streamed as CSV with formula cells neutralised."""
    del export_format  # validated above; csv is the only format
    rows = service.iter_all(request.app.state.database, principal, query)
    return StreamingResponse(
        csv_stream(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="tasks.csv"'},
    )


# ---- one task -----------------------------------------------------------------------------


@router.get(
    "/tasks/{task_id}",
    operation_id="tasks_get",
    summary="Get a task",
    openapi_extra=OPENAPI_SECURITY,
    response_model=TaskOut,
    responses={
        200: {"headers": _ETAG_HEADER},
        **_NOT_MODIFIED,
        **problem_responses(NotAuthenticated, Forbidden, NotFound, ValidationFailed),
    },
)
async def get_task(
    task_id: TaskId,
    request: Request,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """One task, with its ETag; ``If-None-Match`` with the current ETag gives 304."""
    # The hottest route, so it declares no dependencies: each one costs FastAPI a
    # resolution per request. The same identity and scope checks run inline instead, and
    # the task query needs no request session (see repository.fetch_for_read).
    identity = await identity_for_read(request)
    await _require_read(identity)
    row = await service.get_task(get_database(request), identity, task_id)
    etag = task_etag(row.id, row.version)
    if if_none_match is not None and none_match(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return _json(task_payload(row), headers={"ETag": etag})


_WRITE_ERRORS = problem_responses(
    MalformedRequest,
    NotAuthenticated,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)


@router.put(
    "/tasks/{task_id}",
    operation_id="tasks_replace",
    summary="Replace a task",
    response_model=TaskOut,
    dependencies=WRITE,
    responses={200: {"headers": _ETAG_HEADER}, **_WRITE_ERRORS},
)
async def replace_task(
    task_id: TaskId,
    body: TaskReplace,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> Response:
    """Full replacement: fields left out go back to their defaults (``If-Match`` honoured)."""
    versions = expected_versions(if_match, task_id)
    row = await service.replace_task(session, principal, task_id, body, versions)
    return _task_response(row)


@router.patch(
    "/tasks/{task_id}",
    operation_id="tasks_update",
    summary="Update some fields of a task",
    response_model=TaskOut,
    dependencies=WRITE,
    responses={200: {"headers": _ETAG_HEADER}, **_WRITE_ERRORS},
)
async def patch_task(
    task_id: TaskId,
    body: TaskPatch,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> Response:
    """Change only the fields sent; ``null`` clears description, due_date or assignee_id."""
    versions = expected_versions(if_match, task_id)
    row = await service.patch_task(session, principal, task_id, body, versions)
    return _task_response(row)


@router.delete(
    "/tasks/{task_id}",
    operation_id="tasks_delete",
    summary="Delete a task",
    status_code=204,
    dependencies=WRITE,
    responses=problem_responses(
        NotAuthenticated, Forbidden, NotFound, PreconditionFailed, ValidationFailed
    ),
)
async def delete_task(
    task_id: TaskId,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> Response:
    """Delete a task and its comments (``If-Match`` honoured)."""
    await service.delete_task(session, principal, task_id, expected_versions(if_match, task_id))
    return Response(status_code=204)


@router.options(
    "/tasks/{task_id}",
    operation_id="tasks_item_options",
    summary="Methods allowed on a task",
    status_code=204,
    responses={204: {"headers": {"Allow": {"description": "The allowed methods"}}}},
)
async def options_task(task_id: TaskId) -> Response:
    """An empty answer whose ``Allow`` header lists the methods."""
    del task_id
    return Response(status_code=204, headers={"Allow": ITEM_ALLOW})


# ---- tasks of one project -----------------------------------------------------------------


@router.get(
    "/projects/{project_id}/tasks",
    operation_id="tasks_list_for_project",
    summary="List a project's tasks",
    response_model=TaskPage,
    dependencies=READ,
    responses={
        200: {"headers": _TOTAL_HEADER},
        **problem_responses(NotAuthenticated, Forbidden, NotFound, ValidationFailed),
    },
)
async def list_project_tasks(
    project_id: ProjectId,
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
    common: CommonFilters,
    skip: Skip = 0,
    limit: Limit = 20,
    cursor: CursorParam = None,
) -> Response:
    """The task list narrowed to one project you can see (same filters, sort and paging)."""
    await service.require_project_visible(session, principal, project_id)
    query = common.for_project(project_id)
    return await _page_response(session, principal, settings, query, skip, limit, cursor)
