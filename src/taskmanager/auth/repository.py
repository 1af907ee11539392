"""Credential queries: refresh tokens (looked up by their SHA-256 digest only) and the
password columns of ``users``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.models.auth import RefreshToken
from taskmanager.models.users import User


@dataclass(frozen=True, slots=True)
class LoginUser:
    id: int
    password_hash: str
    is_active: bool


async def find_login_user(session: AsyncSession, login: str) -> LoginUser | None:
    """The user whose username or email is ``login`` (``kit.fields.normalize_login``-ed)."""
    row = (
        await session.execute(
            select(User.id, User.password_hash, User.is_active)
            .where(or_(User.username == login, User.email == login))
            .limit(1)
        )
    ).first()
    return None if row is None else LoginUser(row[0], row[1], row[2])


async def password_hash_of(session: AsyncSession, user_id: int) -> str | None:
    return (
        await session.execute(select(User.password_hash).where(User.id == user_id))
    ).scalar_one_or_none()


async def is_active(session: AsyncSession, user_id: int) -> bool:
    found = await session.execute(select(User.is_active).where(User.id == user_id))
    return bool(found.scalar_one_or_none())


async def set_password_hash(session: AsyncSession, user_id: int, password_hash: str) -> None:
    await session.execute(
        update(User)
        .where(User.id == user_id)
        .values(password_hash=password_hash)
        .execution_options(synchronize_session=False)
    )


async def add(
    session: AsyncSession, *, user_id: int, family_id: str, token_hash: str, expires_at: datetime
) -> None:
    session.add(
        RefreshToken(
            user_id=user_id, family_id=family_id, token_hash=token_hash, expires_at=expires_at
        )
    )
    await session.flush()


async def by_hash(session: AsyncSession, token_hash: str) -> RefreshToken | None:
    return (
        await session.execute(select(RefreshToken).where(RefreshToken.token_hash == token_hash))
    ).scalar_one_or_none()


async def spend(session: AsyncSession, token_id: int, now: datetime) -> bool:
    """Mark the token used if nobody else has (compare-and-set); True if this call won."""
    result: CursorResult[tuple[()]] = await session.execute(  # type: ignore[assignment]
        update(RefreshToken)
        .where(
            RefreshToken.id == token_id,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def revoke_family(session: AsyncSession, family_id: str, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


async def revoke_all_of_user(session: AsyncSession, user_id: int, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
