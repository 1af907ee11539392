"""Comment rules: who may read, write, reword and delete. Raises domain errors only."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.auth.policy import (
    Permission,
    authorize,
    authorize_comment_delete,
    authorize_comment_edit,
)
from taskmanager.auth.principal import Principal
from taskmanager.comments import repository
from taskmanager.comments.models import Comment
from taskmanager.comments.repository import TaskAccess
from taskmanager.errors import NotFound


def _task_not_found(task_id: int) -> str:
    return f"Task {task_id} not found"


async def _access(session: AsyncSession, principal: Principal, task_id: int) -> TaskAccess:
    access = await repository.task_access(
        session, task_id, principal.user_id, include_foreign=principal.is_admin
    )
    if access is None:
        raise NotFound(_task_not_found(task_id))
    return access


async def _comment(session: AsyncSession, task_id: int, comment_id: int) -> Comment:
    comment = await repository.get_on_task(session, task_id, comment_id)
    if comment is None:
        raise NotFound(f"Comment {comment_id} not found on task {task_id}")
    return comment


async def list_comments(
    session: AsyncSession, principal: Principal, task_id: int, *, skip: int, limit: int
) -> tuple[list[Comment], int]:
    access = await _access(session, principal, task_id)
    authorize(principal, access.role, Permission.VIEW, not_found=_task_not_found(task_id))
    return await repository.list_for_task(session, task_id, skip=skip, limit=limit)


async def create_comment(
    session: AsyncSession, principal: Principal, task_id: int, *, body: str
) -> Comment:
    access = await _access(session, principal, task_id)
    authorize(principal, access.role, Permission.EDIT_TASKS, not_found=_task_not_found(task_id))
    return await repository.insert(session, task_id=task_id, author_id=principal.user_id, body=body)


async def edit_comment(
    session: AsyncSession, principal: Principal, task_id: int, comment_id: int, *, body: str
) -> Comment:
    access = await _access(session, principal, task_id)
    comment = await _comment(session, task_id, comment_id)
    authorize_comment_edit(
        principal, access.role, comment.author_id, not_found=_task_not_found(task_id)
    )
    return await repository.set_body(session, comment.id, body)


async def delete_comment(
    session: AsyncSession, principal: Principal, task_id: int, comment_id: int
) -> None:
    access = await _access(session, principal, task_id)
    comment = await _comment(session, task_id, comment_id)
    authorize_comment_delete(
        principal, access.role, comment.author_id, not_found=_task_not_found(task_id)
    )
    await repository.delete_comment(session, comment.id)


async def get_comment(
    session: AsyncSession, principal: Principal, task_id: int, comment_id: int
) -> Comment:
    access = await _access(session, principal, task_id)
    authorize(principal, access.role, Permission.VIEW, not_found=_task_not_found(task_id))
    return await _comment(session, task_id, comment_id)
