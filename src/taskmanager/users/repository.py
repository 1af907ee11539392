"""User queries."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.db import at_version
from taskmanager.kit.errors import Conflict
from taskmanager.kit.pagination import Window, entity_page
from taskmanager.models.base import stamp_if_changed, utcnow
from taskmanager.models.users import User, UserRole

TAKEN = "A user with this email or username already exists"


async def get(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_for_update(session: AsyncSession, user_id: int) -> User | None:
    # FOR UPDATE is a no-op on SQLite, whose write transactions are serialized anyway. NO KEY
    # UPDATE: it excludes the account's other changes, not a task write's foreign-key check
    # (KEY SHARE) naming the user, which would deadlock with an account deletion
    # (projects.repository.lock).
    return (
        await session.execute(
            select(User).where(User.id == user_id).with_for_update(key_share=True)
        )
    ).scalar_one_or_none()


async def id_by_login(session: AsyncSession, login: str) -> int | None:
    return (
        await session.execute(
            select(User.id).where(or_(User.username == login, User.email == login)).limit(1)
        )
    ).scalar_one_or_none()


async def taken(
    session: AsyncSession, *, email: str | None, username: str | None, exclude_id: int | None
) -> bool:
    conditions = []
    if email is not None:
        conditions.append(User.email == email)
    if username is not None:
        conditions.append(User.username == username)
    if not conditions:
        return False
    query = select(User.id).where(or_(*conditions))
    if exclude_id is not None:
        query = query.where(User.id != exclude_id)
    return (await session.execute(query.limit(1))).first() is not None


async def flush_unique(session: AsyncSession) -> None:
    """Flush; a unique-index violation (a race the pre-check lost) becomes a Conflict."""
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(TAKEN) from None


async def page(session: AsyncSession, window: Window) -> tuple[Sequence[User], int]:
    """A page of every account, by id, and how many there are."""
    return await entity_page(session, User, window)


async def lock_active_admin_ids(session: AsyncSession) -> list[int]:
    """Active admins, locked so two concurrent demotions cannot both pass the last-admin check."""
    rows = await session.execute(
        select(User.id)
        .where(User.role == UserRole.ADMIN.value, User.is_active.is_(True))
        .order_by(User.id)
        .with_for_update(key_share=True)
    )
    return list(rows.scalars().all())


def _at(user_id: int, expected_versions: Collection[int] | None) -> list[ColumnElement[bool]]:
    """The user, at one of ``expected_versions`` (``If-Match``; None: any)."""
    where = [User.id == user_id]
    where += at_version(User.version, expected_versions)
    return where


async def update_fields(
    session: AsyncSession,
    user_id: int,
    values: dict[str, Any],
    *,
    expected_versions: Collection[int] | None,
) -> User | None:
    """Compare-and-set update; None when nothing matched. The version and ``updated_at``
    move only if a value changes (``models.base.stamp_if_changed``).

    A unique-index violation (a race the caller's pre-check lost) becomes a Conflict.
    """
    try:
        result = await session.execute(
            update(User)
            .where(*_at(user_id, expected_versions))
            .values(**values, **stamp_if_changed(User.__table__.c, values, utcnow()))
            .returning(User)
            .execution_options(populate_existing=True, synchronize_session=False)
        )
    except IntegrityError:
        raise Conflict(TAKEN) from None
    return result.scalar_one_or_none()


async def delete_user(
    session: AsyncSession, user_id: int, *, expected_versions: Collection[int] | None
) -> bool:
    """Delete the user row if it is at one of ``expected_versions``; False if nothing matched.

    Keys, tokens and memberships go with it (FK cascades), and what they created or were
    assigned in shared projects stays, unattributed (SET NULL)."""
    result = await session.execute(
        delete(User)
        .where(*_at(user_id, expected_versions))
        .returning(User.id)
        .execution_options(synchronize_session=False)
    )
    return result.scalar_one_or_none() is not None
