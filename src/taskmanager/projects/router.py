"""``/projects`` and ``/projects/{id}/members``: thin HTTP wiring over the project service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Response

from taskmanager.kit.deps import (
    CurrentPrincipal,
    ListingDep,
    SessionDep,
    scope_dependencies,
)
from taskmanager.kit.errors import (
    Conflict,
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
    IfMatch,
    IfNoneMatch,
    ProjectId,
    created_responses,
    domain_router,
    id_path,
    list_responses,
    location,
    not_modified,
    versioned_responses,
)
from taskmanager.kit.identity import Scope
from taskmanager.kit.problems import problem_responses
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

router = domain_router("projects")

MemberId = Annotated[int, id_path("member (user)")]

READ, WRITE = scope_dependencies(Scope.PROJECTS_READ, Scope.PROJECTS_WRITE)
_AUTH_ERRORS = (NotAuthenticated, Forbidden, NotFound)


def etag_of(view: ProjectView) -> str:
    return strong_etag(view.project.id, view.project.version)


def _out(view: ProjectView) -> ProjectOut:
    return ProjectOut.of(view.project, view.role)


def _versioned(view: ProjectView, response: Response) -> ProjectOut:
    """The project, with its ETag on ``response``: every answer that carries one version."""
    response.headers["ETag"] = etag_of(view)
    return _out(view)


_member_out = MemberOut.model_validate


def _versioned_member(member: MemberRow, response: Response) -> MemberOut:
    """The membership, with its ETag ``"<user_id>-<version>"`` on ``response``."""
    response.headers["ETag"] = strong_etag(member.user_id, member.version)
    return _member_out(member)


# --- projects -------------------------------------------------------------------------------


@router.get(
    "/projects",
    summary="List your projects",
    dependencies=READ,
    responses=list_responses(NotAuthenticated, Forbidden, ValidationFailed),
)
async def list_(
    session: SessionDep, principal: CurrentPrincipal, listing: ListingDep
) -> ProjectPage:
    """The projects the caller is a member of, by id."""
    result = await service.list_projects(
        session, principal, listing.page, signing_key=listing.signing_key
    )
    return listing.page_of(ProjectPage, result, _out)


@router.post(
    "/projects",
    status_code=201,
    summary="Create a project",
    dependencies=WRITE,
    responses=created_responses(
        NotAuthenticated, Forbidden, MalformedRequest, ValidationFailed, headers=ETAG_HEADER
    ),
)
async def create(
    body: ProjectCreate, session: SessionDep, principal: CurrentPrincipal, response: Response
) -> ProjectOut:
    """Create a project; the caller becomes its owner."""
    view = await service.create_project(
        session, principal, name=body.name, description=body.description
    )
    response.headers["Location"] = location("projects", view.project.id)
    return _versioned(view, response)


@router.get(
    "/projects/{project_id}",
    summary="Get a project",
    dependencies=READ,
    response_model=ProjectOut,
    responses=versioned_responses(*_AUTH_ERRORS, ValidationFailed, conditional=True),
)
async def get(
    project_id: ProjectId,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> Any:
    """One project, with an ETag; a matching If-None-Match gets 304."""
    view = await service.get_project(session, principal, project_id)
    etag = etag_of(view)
    unchanged = not_modified(if_none_match, etag)
    if unchanged is not None:
        return unchanged
    return _versioned(view, response)


_WRITE_RESPONSES = versioned_responses(
    *_AUTH_ERRORS, PreconditionFailed, MalformedRequest, ValidationFailed
)


@router.put(
    "/projects/{project_id}",
    summary="Replace a project",
    dependencies=WRITE,
    responses=_WRITE_RESPONSES,
)
async def replace(
    project_id: ProjectId,
    body: ProjectReplace,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
    if_match: IfMatch = None,
) -> ProjectOut:
    """Replace name and description (a description left out is cleared); owners only."""
    view = await service.update_project(
        session, principal, project_id, body.model_dump(), expected_versions(if_match, project_id)
    )
    return _versioned(view, response)


@router.patch(
    "/projects/{project_id}",
    summary="Update some fields of a project",
    dependencies=WRITE,
    responses=_WRITE_RESPONSES,
)
async def update(
    project_id: ProjectId,
    body: ProjectPatch,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
    if_match: IfMatch = None,
) -> ProjectOut:
    """Change only the fields sent; owners only."""
    view = await service.update_project(
        session, principal, project_id, body.changes(), expected_versions(if_match, project_id)
    )
    return _versioned(view, response)


@router.delete(
    "/projects/{project_id}",
    status_code=204,
    summary="Delete a project",
    dependencies=WRITE,
    responses=problem_responses(*_AUTH_ERRORS, Conflict, PreconditionFailed, ValidationFailed),
)
async def delete(
    project_id: ProjectId,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> Response:
    """Delete a project with its tasks and comments; owners only; an Inbox cannot go."""
    await service.delete_project(
        session, principal, project_id, expected_versions=expected_versions(if_match, project_id)
    )
    return Response(status_code=204)


# --- members --------------------------------------------------------------------------------


@router.get(
    "/projects/{project_id}/members",
    summary="List a project's members",
    dependencies=READ,
    responses=list_responses(*_AUTH_ERRORS, ValidationFailed),
)
async def members_list(
    project_id: ProjectId, session: SessionDep, principal: CurrentPrincipal, listing: ListingDep
) -> list[MemberOut]:
    """The project's members with their roles, by user id: an array, paged by
    ``skip``/``limit`` or ``cursor`` with ``X-Total-Count`` and ``Link`` headers."""
    result = await service.list_members(
        session, principal, project_id, listing.page, signing_key=listing.signing_key
    )
    return listing.items(result, _member_out)


@router.post(
    "/projects/{project_id}/members",
    status_code=201,
    summary="Add a member",
    dependencies=WRITE,
    responses=created_responses(*_AUTH_ERRORS, Conflict, MalformedRequest, ValidationFailed),
)
async def members_add(
    project_id: ProjectId,
    body: MemberAdd,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
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
    response.headers["Location"] = location("projects", project_id, "members", member.user_id)
    return _member_out(member)


@router.get(
    "/projects/{project_id}/members/{user_id}",
    summary="Get a member",
    dependencies=READ,
    responses=problem_responses(*_AUTH_ERRORS, ValidationFailed),
)
async def members_get(
    project_id: ProjectId,
    user_id: MemberId,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
) -> MemberOut:
    """One member of the project with their role (any member may look), with the
    membership's ETag (a matching If-None-Match gets 304)."""
    member = await service.get_member(session, principal, project_id, user_id)
    return _versioned_member(member, response)


@router.patch(
    "/projects/{project_id}/members/{user_id}",
    summary="Change a member's role",
    dependencies=WRITE,
    responses=versioned_responses(
        *_AUTH_ERRORS, Conflict, PreconditionFailed, MalformedRequest, ValidationFailed
    ),
)
async def members_update(
    project_id: ProjectId,
    user_id: MemberId,
    body: MemberUpdate,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
    if_match: IfMatch = None,
) -> MemberOut:
    """Change a member's role; owners only; the last owner cannot be demoted. A stale
    If-Match (the membership's ETag) → 412."""
    member = await service.change_member_role(
        session,
        principal,
        project_id,
        user_id,
        body.role,
        expected_versions=expected_versions(if_match, user_id),
    )
    return _versioned_member(member, response)


@router.delete(
    "/projects/{project_id}/members/{user_id}",
    status_code=204,
    summary="Remove a member, or leave",
    dependencies=WRITE,
    responses=problem_responses(*_AUTH_ERRORS, Conflict, PreconditionFailed, ValidationFailed),
)
async def members_remove(
    project_id: ProjectId,
    user_id: MemberId,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> Response:
    """Remove a member (owners), or yourself (any member); the last owner cannot go. A stale
    If-Match (the membership's ETag) → 412."""
    await service.remove_member(
        session,
        principal,
        project_id,
        user_id,
        expected_versions=expected_versions(if_match, user_id),
    )
    return Response(status_code=204)
