"""``/tasks/{id}/comments``: thin HTTP wiring over the comment service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from taskmanager.api import API_PREFIX
from taskmanager.auth.dependencies import CurrentPrincipal, RequireScope
from taskmanager.auth.principal import Scope
from taskmanager.comments import service
from taskmanager.comments.schemas import CommentCreate, CommentOut, CommentPage, CommentPatch
from taskmanager.db import SessionDep
from taskmanager.errors import (
    Forbidden,
    MalformedRequest,
    NotAuthenticated,
    NotFound,
    ValidationFailed,
)
from taskmanager.middleware.media_type import BodyCheckedRoute
from taskmanager.pagination import DEFAULT_LIMIT, Limit, Skip
from taskmanager.problems import problem_responses
from taskmanager.validation import MAX_ID

router = APIRouter(tags=["comments"], route_class=BodyCheckedRoute)

TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="Task id")]
CommentId = Annotated[int, Path(ge=1, le=MAX_ID, description="Comment id")]

_READ = [Depends(RequireScope(Scope.TASKS_READ))]
_WRITE = [Depends(RequireScope(Scope.TASKS_WRITE))]
_AUTH_ERRORS = (NotAuthenticated, Forbidden, NotFound, ValidationFailed)


@router.get(
    "/tasks/{task_id}/comments",
    operation_id="comments_list",
    summary="List a task's comments",
    dependencies=_READ,
    responses=problem_responses(*_AUTH_ERRORS),
)
async def comments_list(
    task_id: TaskId,
    session: SessionDep,
    principal: CurrentPrincipal,
    skip: Skip = 0,
    limit: Limit = DEFAULT_LIMIT,
) -> CommentPage:
    """The task's comments, oldest first."""
    comments, total = await service.list_comments(
        session, principal, task_id, skip=skip, limit=limit
    )
    return CommentPage(
        items=[CommentOut.model_validate(c) for c in comments],
        total=total,
        skip=skip,
        limit=limit,
    )


@router.post(
    "/tasks/{task_id}/comments",
    status_code=status.HTTP_201_CREATED,
    operation_id="comments_create",
    summary="Comment on a task",
    dependencies=_WRITE,
    responses=problem_responses(*_AUTH_ERRORS, MalformedRequest),
)
async def comments_create(
    task_id: TaskId,
    body: CommentCreate,
    session: SessionDep,
    principal: CurrentPrincipal,
    response: Response,
) -> CommentOut:
    """Add a comment; editors and owners of the task's project."""
    comment = await service.create_comment(session, principal, task_id, body=body.body)
    response.headers["Location"] = f"{API_PREFIX}/tasks/{task_id}/comments/{comment.id}"
    return CommentOut.model_validate(comment)


@router.get(
    "/tasks/{task_id}/comments/{comment_id}",
    operation_id="comments_get",
    summary="Get a comment",
    dependencies=_READ,
    responses=problem_responses(*_AUTH_ERRORS),
)
async def comments_get(
    task_id: TaskId, comment_id: CommentId, session: SessionDep, principal: CurrentPrincipal
) -> CommentOut:
    """One comment of the task."""
    comment = await service.get_comment(session, principal, task_id, comment_id)
    return CommentOut.model_validate(comment)


@router.patch(
    "/tasks/{task_id}/comments/{comment_id}",
    operation_id="comments_update",
    summary="Edit a comment",
    dependencies=_WRITE,
    responses=problem_responses(*_AUTH_ERRORS, MalformedRequest),
)
async def comments_update(
    task_id: TaskId,
    comment_id: CommentId,
    body: CommentPatch,
    session: SessionDep,
    principal: CurrentPrincipal,
) -> CommentOut:
    """Reword a comment; only its author."""
    if body.body is None:
        raise MalformedRequest("A PATCH needs at least one field")
    comment = await service.edit_comment(session, principal, task_id, comment_id, body=body.body)
    return CommentOut.model_validate(comment)


@router.delete(
    "/tasks/{task_id}/comments/{comment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="comments_delete",
    summary="Delete a comment",
    dependencies=_WRITE,
    responses=problem_responses(*_AUTH_ERRORS),
)
async def comments_delete(
    task_id: TaskId, comment_id: CommentId, session: SessionDep, principal: CurrentPrincipal
) -> Response:
    """Delete a comment; its author, a project owner or an admin."""
    await service.delete_comment(session, principal, task_id, comment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
