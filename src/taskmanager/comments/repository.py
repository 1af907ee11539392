"""Comment queries. Access is decided from the task's project membership, read in one query."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.comments.models import Comment
from taskmanager.db import utcnow
from taskmanager.projects.models import ProjectMember
from taskmanager.tasks.models import Task


@dataclass(frozen=True, slots=True)
class TaskAccess:
    project_id: int
    role: str | None  # the caller's role in the task's project; None: not a member


async def task_access(
    session: AsyncSession, task_id: int, user_id: int, *, include_foreign: bool
) -> TaskAccess | None:
    """The task's project and the caller's role there, or None if the caller cannot see it.

    Without ``include_foreign`` (everyone but admins) a task outside the caller's
    projects is simply not found.
    """
    membership = (ProjectMember.project_id == Task.project_id) & (ProjectMember.user_id == user_id)
    stmt = (
        select(Task.project_id, ProjectMember.role)
        .outerjoin(ProjectMember, membership)
        .where(Task.id == task_id)
    )
    if not include_foreign:
        stmt = stmt.where(ProjectMember.user_id.is_not(None))
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else TaskAccess(row[0], row[1])


async def list_for_task(
    session: AsyncSession, task_id: int, *, skip: int, limit: int
) -> tuple[list[Comment], int]:
    total = (
        await session.execute(
            select(func.count()).select_from(Comment).where(Comment.task_id == task_id)
        )
    ).scalar_one()
    rows = (
        await session.execute(
            select(Comment)
            .where(Comment.task_id == task_id)
            .order_by(Comment.created_at, Comment.id)
            .offset(skip)
            .limit(limit)
        )
    ).scalars()
    return list(rows), total


async def get_on_task(session: AsyncSession, task_id: int, comment_id: int) -> Comment | None:
    return (
        await session.execute(
            select(Comment).where(Comment.id == comment_id, Comment.task_id == task_id)
        )
    ).scalar_one_or_none()


async def insert(session: AsyncSession, *, task_id: int, author_id: int, body: str) -> Comment:
    now = utcnow()
    comment = Comment(
        task_id=task_id, author_id=author_id, body=body, created_at=now, updated_at=now
    )
    session.add(comment)
    await session.flush()
    return comment


async def set_body(session: AsyncSession, comment_id: int, body: str) -> Comment:
    result = await session.execute(
        update(Comment)
        .where(Comment.id == comment_id)
        .values(body=body, updated_at=utcnow())
        .returning(Comment)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    return result.scalar_one()


async def delete_comment(session: AsyncSession, comment_id: int) -> None:
    await session.execute(
        delete(Comment).where(Comment.id == comment_id).execution_options(synchronize_session=False)
    )
