"""Comment queries. Access is decided before them, by ``projects.access.task_access``."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.pagination import Seek, after_row
from taskmanager.models.base import utcnow
from taskmanager.models.comments import Comment


async def list_for_task(
    session: AsyncSession, task_id: int, *, seek: Seek | None, skip: int, limit: int
) -> tuple[list[Comment], int]:
    """A page of the task's comments, oldest first, and how many there are."""
    total = (
        await session.execute(
            select(func.count()).select_from(Comment).where(Comment.task_id == task_id)
        )
    ).scalar_one()
    stmt = select(Comment).where(Comment.task_id == task_id)
    if seek is not None:
        columns = Comment.__table__.c
        stmt = stmt.where(after_row(columns.created_at, columns.id, seek))
    rows = (
        await session.execute(
            stmt.order_by(Comment.created_at, Comment.id).offset(skip).limit(limit)
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
