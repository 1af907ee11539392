"""API-key queries."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, CursorResult, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.db import at_version
from taskmanager.kit.pagination import Window, entity_page
from taskmanager.models.api_keys import ApiKey


async def add(session: AsyncSession, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    return key


def _live(user_id: int) -> ColumnElement[bool]:
    return and_(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))


async def list_live_for_user(
    session: AsyncSession, user_id: int, window: Window
) -> tuple[Sequence[ApiKey], int]:
    """A page of the user's unrevoked keys, by id (expired ones included: they show why),
    and how many there are."""
    return await entity_page(session, ApiKey, window, _live(user_id))


async def get_live(session: AsyncSession, *, user_id: int, key_id: int) -> ApiKey | None:
    return (
        await session.execute(select(ApiKey).where(_live(user_id), ApiKey.id == key_id))
    ).scalar_one_or_none()


async def revoke(
    session: AsyncSession,
    *,
    key_id: int,
    user_id: int,
    now: datetime,
    expected_versions: Collection[int] | None,
) -> bool:
    """Revoke one of the user's own live keys if it is at one of ``expected_versions``
    (``If-Match``; None: any); False if there is no such key or it is at another version."""
    stmt = update(ApiKey).where(_live(user_id), ApiKey.id == key_id)
    stmt = stmt.where(*at_version(ApiKey.version, expected_versions))
    result: CursorResult[tuple[()]] = await session.execute(  # type: ignore[assignment]
        stmt.values(revoked_at=now).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1
