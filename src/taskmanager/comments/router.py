"""``/tasks/{id}/comments``: thin HTTP wiring over the comment service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Response

from taskmanager.comments import service
from taskmanager.comments.schemas import CommentCreate, CommentOut, CommentPage, CommentPatch
from taskmanager.kit.deps import (
    CurrentPrincipal,
    ListingDep,
    SessionDep,
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
    IfMatch,
    TaskId,
    created_responses,
    domain_router,
    id_path,
    list_responses,
    location,
    versioned_responses,
)
from taskmanager.kit.identity import Scope
from taskmanager.kit.problems import problem_responses
from taskmanager.models.comments import Comment

router = domain_router("comments")

CommentId = Annotated[int, id_path("comment")]

READ, WRITE = scope_dependencies(Scope.TASKS_READ, Scope.TASKS_WRITE)
_AUTH_ERRORS = (NotAuthenticated, Forbidden, NotFound, ValidationFailed)


def _versioned(comment: Comment, response: Response) -> CommentOut:
    """The comment, with its ETag ``"<id>-<version>"`` on ``response``."""
    response.headers["ETag"] = strong_etag(comment.id, comment.version)
    return CommentOut.model_validate(comment)


@router.get(
    "/tasks/{task_id}/comments",
    summary="List a task's comments",
    dependencies=READ,
    responses=list_responses(*_AUTH_ERRORS),
)
async def list_(
    task_id: TaskId, session: SessionDep, principal: CurrentPrincipal, listing: ListingDep
) -> CommentPage:
    """The task's comments, oldest first."""
    result = await service.COMMENTS.page(
        session, principal, task_id, listing.page, key=listing.signing_key
    )
    return listing.page_of(CommentPage, result, CommentOut.model_validate)


@router.post(
    "/tasks/{task_id}/comments",
    status_code=201,
    summary="Comment on a task",
    dependencies=WRITE,
    responses=created_responses(*_AUTH_ERRORS, MalformedRequest),
)
async def create(
    task_id: TaskId,
    body: CommentCreate,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
) -> CommentOut:
    """Add a comment; editors and owners of the task's project."""
    comment = await service.create_comment(session, principal, task_id, body=body.body)
    response.headers["Location"] = location("tasks", task_id, "comments", comment.id)
    return CommentOut.model_validate(comment)


@router.get(
    "/tasks/{task_id}/comments/{comment_id}",
    summary="Get a comment",
    dependencies=READ,
    responses=problem_responses(*_AUTH_ERRORS),
)
async def get(
    task_id: TaskId,
    comment_id: CommentId,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
) -> CommentOut:
    """One comment of the task, with its ETag (a matching If-None-Match gets 304)."""
    comment = await service.COMMENTS.get(session, principal, task_id, comment_id)
    return _versioned(comment, response)


@router.patch(
    "/tasks/{task_id}/comments/{comment_id}",
    summary="Edit a comment",
    dependencies=WRITE,
    responses=versioned_responses(*_AUTH_ERRORS, PreconditionFailed, MalformedRequest),
)
async def update(
    task_id: TaskId,
    comment_id: CommentId,
    body: CommentPatch,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
    if_match: IfMatch = None,
) -> CommentOut:
    """Reword a comment; only its author. A stale If-Match → 412."""
    assert body.body is not None  # the only field, and a PATCH sends at least one
    comment = await service.edit_comment(
        session,
        principal,
        task_id,
        comment_id,
        body=body.body,
        expected_versions=expected_versions(if_match, comment_id),
    )
    return _versioned(comment, response)


@router.delete(
    "/tasks/{task_id}/comments/{comment_id}",
    status_code=204,
    summary="Delete a comment",
    dependencies=WRITE,
    responses=problem_responses(*_AUTH_ERRORS, PreconditionFailed),
)
async def delete(
    task_id: TaskId,
    comment_id: CommentId,
    session: SessionDep,
    principal: CurrentPrincipal,
    if_match: IfMatch = None,
) -> Response:
    """Delete a comment; its author, a project owner or an admin. A stale If-Match → 412."""
    await service.delete_comment(
        session,
        principal,
        task_id,
        comment_id,
        expected_versions=expected_versions(if_match, comment_id),
    )
    return Response(status_code=204)
