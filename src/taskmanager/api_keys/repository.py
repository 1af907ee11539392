"""API-key queries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.models.api_keys import ApiKey


async def add(session: AsyncSession, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    return key


async def list_live_for_user(session: AsyncSession, user_id: int) -> Sequence[ApiKey]:
    """The user's keys that have not been revoked (expired ones included: they show why)."""
    return (
        (
            await session.execute(
                select(ApiKey)
                .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
                .order_by(ApiKey.id)
            )
        )
        .scalars()
        .all()
    )


async def revoke(session: AsyncSession, *, key_id: int, user_id: int, now: datetime) -> bool:
    """Revoke one of the user's own live keys; False if there is no such key."""
    result: CursorResult[tuple[()]] = await session.execute(  # type: ignore[assignment]
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1
