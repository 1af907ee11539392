"""API-key queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.api_keys.models import ApiKey
from taskmanager.users.models import User

# last_used_at is advisory: writing it on every request would turn reads into writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    key_id: int
    user_id: int
    user_role: str
    scopes: frozenset[str]
    last_used_at: datetime | None


async def resolve_live_key(
    session: AsyncSession, key_hash: str, now: datetime
) -> ResolvedKey | None:
    """The key with this hash if it is unrevoked, unexpired and its owner is active."""
    row = (
        await session.execute(
            select(ApiKey.id, ApiKey.user_id, User.role, ApiKey.scopes, ApiKey.last_used_at)
            .join(User, User.id == ApiKey.user_id)
            .where(
                ApiKey.key_hash == key_hash,
                ApiKey.revoked_at.is_(None),
                (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now),
                User.is_active.is_(True),
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return ResolvedKey(row[0], row[1], row[2], frozenset(row[3] or ()), row[4])


async def touch_last_used(session: AsyncSession, key_id: int, now: datetime) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))


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
