"""``/projects`` and ``/projects/{id}/members``: thin HTTP wiring over the project service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Response, status

from taskmanager.api import API_PREFIX
from taskmanager.auth.dependencies import CurrentPrincipal, RequireScope
from taskmanager.auth.principal import Scope
from taskmanager.db import SessionDep
from taskmanager.errors import (
    Conflict,
    Forbidden,
    MalformedRequest,
    NotAuthenticated,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from taskmanager.etags import expected_versions, none_match, strong_etag
from taskmanager.middleware.media_type import BodyCheckedRoute
from taskmanager.pagination import DEFAULT_LIMIT, Limit, Skip
from taskmanager.problems import problem_responses
from taskmanager.projects import service
from taskmanager.projects.repository import MemberRow
from taskmanager.projects.schemas import (
    MemberAdd,
    MemberOut,
    MemberUpdate,
    ProjectCreate,
    ProjectOut,
    ProjectPage,
    ProjectPatch,
    ProjectReplace,
)
from taskmanager.projects.service import ProjectView
from taskmanager.validation import MAX_ID

router = APIRouter(tags=["projects"], route_class=BodyCheckedRoute)

ProjectId = Annotated[int, Path(ge=1, le=MAX_ID, description="Project id")]
UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="User id of the member")]
IfMatch = Annotated[
    str | None,
    Header(description="Apply only if the project's current ETag is one of these"),
]
IfNoneMatch = Annotated[
    str | None, Header(description="Answer 304 if the project's current ETag is one of these")
]

_READ = [Depends(RequireScope(Scope.PROJECTS_READ))]
_WRITE = [Depends(RequireScope(Scope.PROJECTS_WRITE))]
_AUTH_ERRORS = (NotAuthenticated, Forbidden, NotFound)

# --- ETags: "<id>-<version>", strong --------------------------------------------------------


def etag_of(view: ProjectView) -> str:
    return strong_etag(view.project.id, view.project.version)


# --- serialization --------------------------------------------------------------------------


def _out(view: ProjectView) -> ProjectOut:
    project = view.project
    return ProjectOut.model_validate(
        {
            "id": project.id,
            "name": project.name,
            "description": project.description,
            "is_inbox": project.is_inbox,
            "created_by": project.created_by,
            "created_at": project.created_at,
            "updated_at": project.updated_at,
            "role": view.role,
        }
    )


def _member_out(member: MemberRow) -> MemberOut:
    return MemberOut.model_validate(
        {"user_id": member.user_id, "username": member.username, "role": member.role}
    )


def _location(project_id: int) -> str:
    return f"{API_PREFIX}/projects/{project_id}"


# --- projects -------------------------------------------------------------------------------


@router.get(
    "/projects",
    operation_id="projects_list",
    summary="List your projects",
    dependencies=_READ,
    responses=problem_responses(NotAuthenticated, Forbidden, ValidationFailed),
)
async def projects_list(
    session: SessionDep, principal: CurrentPrincipal, skip: Skip = 0, limit: Limit = DEFAULT_LIMIT
) -> ProjectPage:
    """The projects the caller is a member of, by id."""
    views, total = await service.list_projects(session, principal, skip=skip, limit=limit)
    return ProjectPage(items=[_out(v) for v in views], total=total, skip=skip, limit=limit)


@router.post(
    "/projects",
    status_code=status.HTTP_201_CREATED,
    operation_id="projects_create",
    summary="Create a project",
    dependencies=_WRITE,
    responses=problem_responses(NotAuthenticated, Forbidden, MalformedRequest, ValidationFailed),
)
async def projects_create(
    body: ProjectCreate, session: SessionDep, principal: CurrentPrincipal, response: Response
) -> ProjectOut:
    """Create a project; the caller becomes its owner."""
    view = await service.create_project(
        session, principal, name=body.name, description=body.description
    )
    response.headers["Location"] = _location(view.project.id)
    response.headers["ETag"] = etag_of(view)
    return _out(view)


@router.get(
    "/projects/{project_id}",
    operation_id="projects_get",
    summary="Get a project",
    dependencies=_READ,
    response_model=ProjectOut,
    responses={
        **problem_responses(*_AUTH_ERRORS, ValidationFailed),
        304: {"description": "Not modified (If-None-Match matched)"},
    },
)
async def projects_get(
    project_id: ProjectId,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> Any:
    """One project, with an ETag; a matching If-None-Match gets 304."""
    view = await service.get_project(session, principal, project_id)
    etag = etag_of(view)
    if none_match(if_none_match, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return _out(view)


@router.put(
    "/projects/{project_id}",
    operation_id="projects_replace",
    summary="Replace a project",
    dependencies=_WRITE,
    responses=problem_responses(
        *_AUTH_ERRORS, PreconditionFailed, MalformedRequest, ValidationFailed
    ),
)
async def projects_replace(
    project_id: ProjectId,
    body: ProjectReplace,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
    if_match: IfMatch = None,
) -> ProjectOut:
    """Replace name and description (a description left out is cleared); owners only."""
    view = await service.update_project(
        session,
        principal,
        project_id,
        {"name": body.name, "description": body.description},
        expected_versions=expected_versions(if_match, project_id),
    )
    response.headers["ETag"] = etag_of(view)
    return _out(view)


@router.patch(
    "/projects/{project_id}",
    operation_id="projects_update",
    summary="Update a project",
    dependencies=_WRITE,
    responses=problem_responses(
        *_AUTH_ERRORS, PreconditionFailed, MalformedRequest, ValidationFailed
    ),
)
async def projects_update(
    project_id: ProjectId,
    body: ProjectPatch,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
    if_match: IfMatch = None,
) -> ProjectOut:
    """Change only the fields sent; owners only."""
    values = body.model_dump(include=body.model_fields_set)
    if not values:
        raise MalformedRequest("A PATCH needs at least one field")
    view = await service.update_project(
        session,
        principal,
        project_id,
        values,
        expected_versions=expected_versions(if_match, project_id),
    )
    response.headers["ETag"] = etag_of(view)
    return _out(view)


@router.delete(
    "/projects/{project_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="projects_delete",
    summary="Delete a project",
    dependencies=_WRITE,
    responses=problem_responses(*_AUTH_ERRORS, Conflict, PreconditionFailed, ValidationFailed),
)
async def projects_delete(
    project_id: ProjectId,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> Response:
    """Delete a project with its tasks and comments; owners only; an Inbox cannot go."""
    await service.delete_project(
        session, principal, project_id, expected_versions=expected_versions(if_match, project_id)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- members --------------------------------------------------------------------------------


@router.get(
    "/projects/{project_id}/members",
    operation_id="project_members_list",
    summary="List a project's members",
    dependencies=_READ,
    responses=problem_responses(*_AUTH_ERRORS, ValidationFailed),
)
async def project_members_list(
    project_id: ProjectId, session: SessionDep, principal: CurrentPrincipal
) -> list[MemberOut]:
    """Every member of the project with their role, by user id."""
    members = await service.list_members(session, principal, project_id)
    return [_member_out(m) for m in members]


@router.post(
    "/projects/{project_id}/members",
    status_code=status.HTTP_201_CREATED,
    operation_id="project_members_add",
    summary="Add a member",
    dependencies=_WRITE,
    responses=problem_responses(*_AUTH_ERRORS, Conflict, MalformedRequest, ValidationFailed),
)
async def project_members_add(
    project_id: ProjectId, body: MemberAdd, session: SessionDep, principal: CurrentPrincipal
) -> MemberOut:
    """Add an active user (by username or user_id) with a role; owners only."""
    member = await service.add_member(
        session,
        principal,
        project_id,
        user_id=body.user_id,
        username=body.username,
        role=body.role,
    )
    return _member_out(member)


@router.patch(
    "/projects/{project_id}/members/{user_id}",
    operation_id="project_members_update",
    summary="Change a member's role",
    dependencies=_WRITE,
    responses=problem_responses(*_AUTH_ERRORS, Conflict, MalformedRequest, ValidationFailed),
)
async def project_members_update(
    project_id: ProjectId,
    user_id: UserId,
    body: MemberUpdate,
    session: SessionDep,
    principal: CurrentPrincipal,
) -> MemberOut:
    """Change a member's role; owners only; the last owner cannot be demoted."""
    member = await service.change_member_role(session, principal, project_id, user_id, body.role)
    return _member_out(member)


@router.delete(
    "/projects/{project_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="project_members_remove",
    summary="Remove a member, or leave",
    dependencies=_WRITE,
    responses=problem_responses(*_AUTH_ERRORS, Conflict, ValidationFailed),
)
async def project_members_remove(
    project_id: ProjectId, user_id: UserId, session: SessionDep, principal: CurrentPrincipal
) -> Response:
    """Remove a member (owners), or yourself (any member); the last owner cannot go."""
    await service.remove_member(session, principal, project_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
