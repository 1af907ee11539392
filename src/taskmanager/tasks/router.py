"""Task routes: thin HTTP wiring around ``tasks.service`` (and ``fast_read``/``fast_write``).

The writes take the caller's ``Identity`` (no query for a bearer token): the service
checks the user inside its one write statement, so a write costs one round trip.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.responses import Response

from taskmanager.kit.deps import (
    OPENAPI_SECURITY,
    CurrentPrincipal,
    ScopedIdentity,
    SessionDep,
    SettingsDep,
    scope_dependencies,
)
from taskmanager.kit.errors import (
    Forbidden,
    MalformedRequest,
    NotAuthenticated,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from taskmanager.kit.etags import expected_versions, strong_etag
from taskmanager.kit.http import (
    ETAG_HEADER,
    LOCATION_HEADER,
    IfMatch,
    IfNoneMatch,
    PageDep,
    ProjectId,
    TaskId,
    domain_router,
    list_headers,
    list_responses,
    location,
    versioned_responses,
)
from taskmanager.kit.identity import Identity, Scope
from taskmanager.kit.pagination import PageRequest
from taskmanager.kit.problems import problem_responses
from taskmanager.tasks import fast_read, fast_write, service
from taskmanager.tasks.export import csv_stream
from taskmanager.tasks.filters import TaskFilters, TaskListQuery
from taskmanager.tasks.repository import TaskRow
from taskmanager.tasks.schemas import TaskCreate, TaskOut, TaskPage, TaskPatch, TaskReplace

router = domain_router("tasks")

READ, WRITE = scope_dependencies(Scope.TASKS_READ, Scope.TASKS_WRITE)
# The writes that run on the driver (``fast_write``) take the caller in one dependency.
Writer = Annotated[Identity, Depends(ScopedIdentity(Scope.TASKS_WRITE))]

COLLECTION_ALLOW = "GET, HEAD, POST, OPTIONS"
ITEM_ALLOW = "GET, HEAD, PUT, PATCH, DELETE, OPTIONS"
_ALLOW_HEADER = {"Allow": {"description": "The allowed methods", "schema": {"type": "string"}}}

ListQuery = Annotated[TaskListQuery, Query()]
ProjectListQuery = Annotated[TaskFilters, Query()]


def _json(data: Any, *, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_UTC_Z),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def _task_response(row: TaskRow, *, status_code: int = 200) -> Response:
    headers = {"ETag": strong_etag(row.id, row.version)}
    if status_code == 201:
        headers["Location"] = location("tasks", row.id)
    return _json(row, status_code=status_code, headers=headers)


async def _page_response(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
    query: TaskListQuery,
    page: PageRequest,
    sent: set[str],
) -> Response:
    _, result = await service.list_tasks(
        session, principal, query, page, sent=sent, signing_key=settings.signing_key
    )
    body = {
        "items": result.rows,
        "total": result.total,
        "skip": result.skip,
        "limit": result.limit,
        "next_cursor": result.next_cursor,
    }
    return _json(body, headers=list_headers(request, result))


_LIST_ERRORS = (NotAuthenticated, Forbidden, ValidationFailed)


# ---- collection ---------------------------------------------------------------------------


@router.get(
    "/tasks",
    summary="List tasks",
    response_model=TaskPage,
    dependencies=READ,
    responses=list_responses(*_LIST_ERRORS),
)
async def list_(
    request: Request,
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
    query: ListQuery,
    page: PageDep,
) -> Response:
    """Tasks in the caller's projects (all tasks for an admin), filtered, sorted and paged.

    ``HEAD`` gives the same headers (``X-Total-Count`` included) without the body.
    """
    sent = set(query.model_fields_set)
    return await _page_response(request, session, principal, settings, query, page, sent)


@router.options(
    "/tasks",
    summary="Methods allowed on the task collection",
    status_code=204,
    responses={204: {"headers": _ALLOW_HEADER}},
)
async def options() -> Response:
    """An empty answer whose ``Allow`` header lists the methods."""
    return Response(status_code=204, headers={"Allow": COLLECTION_ALLOW})


@router.post(
    "/tasks",
    summary="Create a task",
    status_code=201,
    response_model=TaskOut,
    openapi_extra=OPENAPI_SECURITY,
    responses={
        201: {"headers": {**ETAG_HEADER, **LOCATION_HEADER}},
        **problem_responses(
            MalformedRequest, NotAuthenticated, Forbidden, NotFound, ValidationFailed
        ),
    },
)
async def create(
    request: Request, identity: Writer, session: SessionDep, body: TaskCreate
) -> Response:
    """Create a task in a project you may edit (your Inbox when ``project_id`` is left out)."""
    row = await fast_write.create_task(request, identity, body)
    if row is None:
        row = await service.create_task(session, identity, body)
    return _task_response(row, status_code=201)


@router.get(
    "/tasks/export",
    summary="Export tasks as CSV",
    response_class=StreamingResponse,
    dependencies=READ,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "Every matching task, one CSV row each, streamed",
        },
        **problem_responses(*_LIST_ERRORS),
    },
)
async def export(
    request: Request,
    principal: CurrentPrincipal,
    query: ListQuery,
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
    summary="Get a task",
    openapi_extra=OPENAPI_SECURITY,
    response_model=TaskOut,
    responses=versioned_responses(
        NotAuthenticated, Forbidden, NotFound, ValidationFailed, conditional=True
    ),
)
async def get(task_id: TaskId, request: Request, if_none_match: IfNoneMatch = None) -> Response:
    """One task, with its ETag; ``If-None-Match`` with the current ETag gives 304."""
    return await fast_read.read_task(request, task_id, if_none_match)


_WRITE_RESPONSES = versioned_responses(
    MalformedRequest,
    NotAuthenticated,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)


@router.put(
    "/tasks/{task_id}",
    summary="Replace a task",
    response_model=TaskOut,
    openapi_extra=OPENAPI_SECURITY,
    responses=_WRITE_RESPONSES,
)
async def replace(
    request: Request,
    task_id: TaskId,
    identity: Writer,
    body: TaskReplace,
    session: SessionDep,
    if_match: IfMatch = None,
) -> Response:
    """Full replacement: fields left out go back to their defaults (``If-Match`` honoured)."""
    versions = expected_versions(if_match, task_id)
    row = await fast_write.replace_task(request, identity, task_id, body, versions)
    if row is None:
        row = await service.replace_task(session, identity, task_id, body, versions)
    return _task_response(row)


@router.patch(
    "/tasks/{task_id}",
    summary="Update some fields of a task",
    response_model=TaskOut,
    openapi_extra=OPENAPI_SECURITY,
    responses=_WRITE_RESPONSES,
)
async def update(
    request: Request,
    task_id: TaskId,
    identity: Writer,
    body: TaskPatch,
    session: SessionDep,
    if_match: IfMatch = None,
) -> Response:
    """Change only the fields sent; ``null`` clears description, due_date or assignee_id."""
    versions = expected_versions(if_match, task_id)
    row = await fast_write.patch_task(request, identity, task_id, body, versions)
    if row is None:
        row = await service.patch_task(session, identity, task_id, body, versions)
    return _task_response(row)


@router.delete(
    "/tasks/{task_id}",
    summary="Delete a task",
    status_code=204,
    openapi_extra=OPENAPI_SECURITY,
    responses=problem_responses(
        NotAuthenticated, Forbidden, NotFound, PreconditionFailed, ValidationFailed
    ),
)
async def delete(
    request: Request,
    task_id: TaskId,
    identity: Writer,
    session: SessionDep,
    if_match: IfMatch = None,
) -> Response:
    """Delete a task and its comments (``If-Match`` honoured)."""
    versions = expected_versions(if_match, task_id)
    if not await fast_write.delete_task(request, identity, task_id, versions):
        await service.delete_task(session, identity, task_id, versions)
    return Response(status_code=204)


@router.options(
    "/tasks/{task_id}",
    summary="Methods allowed on a task",
    status_code=204,
    responses={
        204: {"headers": _ALLOW_HEADER},
        **problem_responses(NotFound, ValidationFailed),
    },
)
async def item_options(task_id: TaskId) -> Response:
    """An empty answer whose ``Allow`` header lists the methods."""
    del task_id
    return Response(status_code=204, headers={"Allow": ITEM_ALLOW})


# ---- tasks of one project -----------------------------------------------------------------


@router.get(
    "/projects/{project_id}/tasks",
    summary="List a project's tasks",
    response_model=TaskPage,
    dependencies=READ,
    responses=list_responses(NotAuthenticated, Forbidden, NotFound, ValidationFailed),
)
async def list_for_project(
    request: Request,
    project_id: ProjectId,
    session: SessionDep,
    principal: CurrentPrincipal,
    settings: SettingsDep,
    filters: ProjectListQuery,
    page: PageDep,
) -> Response:
    """The task list narrowed to one project you can see (same filters, sort and paging)."""
    query = await service.for_project(session, principal, project_id, filters)
    # The path's project always counts as sent: a cursor of another project's list is refused.
    sent = {*filters.model_fields_set, "project_id"}
    return await _page_response(request, session, principal, settings, query, page, sent)
