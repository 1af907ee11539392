"""Comment queries. Access is decided before them, by ``projects.access.task_access``."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.db import at_version
from taskmanager.kit.pagination import Window, entity_page
from taskmanager.models.base import stamp_if_changed, utcnow
from taskmanager.models.comments import Comment
from taskmanager.models.tasks import Task


async def list_for_task(
    session: AsyncSession, task_id: int, window: Window
) -> tuple[Sequence[Comment], int]:
    """A page of the task's comments, oldest first, and how many there are."""
    on_task = Comment.task_id == task_id
    return await entity_page(session, Comment, window, on_task, sorted_by="created_at")


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


async def set_body(
    session: AsyncSession, comment_id: int, body: str, *, expected_versions: Collection[int] | None
) -> Comment | None:
    """Compare-and-set rewording (the version goes up if the body changes); None when the
    comment is no longer at one of ``expected_versions`` (``If-Match``; None: any) or is
    gone."""
    stmt = update(Comment).where(Comment.id == comment_id)
    stmt = stmt.where(*at_version(Comment.version, expected_versions))
    result = await session.execute(
        stmt.values(body=body, **stamp_if_changed(Comment.__table__.c, {"body": body}, utcnow()))
        .returning(Comment)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    return result.scalar_one_or_none()


async def delete_comment(
    session: AsyncSession, comment_id: int, *, expected_versions: Collection[int] | None
) -> bool:
    """Compare-and-set delete; False when nothing matched (changed or gone)."""
    stmt = delete(Comment).where(Comment.id == comment_id)
    stmt = stmt.where(*at_version(Comment.version, expected_versions))
    result = await session.execute(
        stmt.returning(Comment.id).execution_options(synchronize_session=False)
    )
    return result.scalar_one_or_none() is not None


async def forget_author(session: AsyncSession, user_id: int) -> list[tuple[Comment, int]]:
    """Before an account is deleted: its comments lose their author (the foreign key would
    set NULL with no new version). Each comment, changed, with its task's project id."""
    project = select(Task.project_id).where(Task.id == Comment.task_id).scalar_subquery()
    result = await session.execute(
        update(Comment)
        .where(Comment.author_id == user_id)
        .values(author_id=None, updated_at=utcnow())
        .returning(Comment, project)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    return [(comment, project_id) for comment, project_id in result.all()]
