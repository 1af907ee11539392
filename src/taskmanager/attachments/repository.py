"""Attachment queries. Access is decided before them, by ``projects.access.task_access``."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.pagination import Window, entity_page
from taskmanager.kit.storage import StoredObject
from taskmanager.models.attachments import Attachment
from taskmanager.models.base import utcnow


async def list_for_task(
    session: AsyncSession, task_id: int, window: Window
) -> tuple[Sequence[Attachment], int]:
    """A page of the task's attachments, oldest first, and how many there are."""
    on_task = Attachment.task_id == task_id
    return await entity_page(session, Attachment, window, on_task, sorted_by="created_at")


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
