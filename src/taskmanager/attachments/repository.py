"""Attachment queries. Access is decided before them, by ``projects.access.task_access``."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.pagination import Seek, after_row
from taskmanager.kit.storage import StoredObject
from taskmanager.models.attachments import Attachment
from taskmanager.models.base import utcnow


async def list_for_task(
    session: AsyncSession, task_id: int, *, seek: Seek | None, skip: int, limit: int
) -> tuple[list[Attachment], int]:
    """A page of the task's attachments, oldest first, and how many there are."""
    total = (
        await session.execute(
            select(func.count()).select_from(Attachment).where(Attachment.task_id == task_id)
        )
    ).scalar_one()
    stmt = select(Attachment).where(Attachment.task_id == task_id)
    if seek is not None:
        columns = Attachment.__table__.c
        stmt = stmt.where(after_row(columns.created_at, columns.id, seek))
    rows = (
        await session.execute(
            stmt.order_by(Attachment.created_at, Attachment.id).offset(skip).limit(limit)
        )
    ).scalars()
    return list(rows), total


async def get_on_task(session: AsyncSession, task_id: int, attachment_id: int) -> Attachment | None:
    return (
        await session.execute(
            select(Attachment).where(Attachment.id == attachment_id, Attachment.task_id == task_id)
        )
    ).scalar_one_or_none()


async def insert(
    session: AsyncSession, *, task_id: int, filename: str, content_type: str, stored: StoredObject
) -> Attachment:
    attachment = Attachment(
        task_id=task_id,
        filename=filename,
        content_type=content_type,
        size=stored.size,
        sha256=stored.sha256,
        storage_key=stored.key,
        created_at=utcnow(),
    )
    session.add(attachment)
    await session.flush()
    return attachment


async def delete_attachment(session: AsyncSession, attachment_id: int) -> None:
    await session.execute(
        delete(Attachment)
        .where(Attachment.id == attachment_id)
        .execution_options(synchronize_session=False)
    )


async def referenced_keys(session: AsyncSession, keys: Collection[str]) -> set[str]:
    """Which of ``keys`` some attachment row references (the sweep keeps those)."""
    if not keys:
        return set()
    found: Sequence[str] = (
        await session.scalars(
            select(Attachment.storage_key).where(Attachment.storage_key.in_(keys))
        )
    ).all()
    return set(found)
