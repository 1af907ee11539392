"""Credential queries: refresh and password-reset tokens (looked up by their SHA-256 digest
only) and the credential columns of ``users``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, CursorResult, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.models.auth import PasswordResetToken, RefreshToken
from taskmanager.models.users import User


@dataclass(frozen=True, slots=True)
class LoginUser:
    id: int
    password_hash: str
    is_active: bool
    generation: int


async def find_login_user(session: AsyncSession, login: str) -> LoginUser | None:
    """The user whose username or email is ``login`` (``kit.fields.normalize_login``-ed)."""
    row = (
        await session.execute(
            select(User.id, User.password_hash, User.is_active, User.session_generation)
            .where(or_(User.username == login, User.email == login))
            .limit(1)
        )
    ).first()
    return None if row is None else LoginUser(row[0], row[1], row[2], row[3])


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    username: str
    email: str
    is_active: bool
    generation: int


async def account(session: AsyncSession, user_id: int, *, lock: bool = False) -> Account | None:
    """The user's identifiers and session state; ``lock`` takes the row (FOR UPDATE).

    Locking serialises a refresh against "end every session": whichever comes second sees
    the other's effect, so no refresh token issued meanwhile outlives a logout-all.
    """
    statement = select(
        User.id, User.username, User.email, User.is_active, User.session_generation
    ).where(User.id == user_id)
    if lock:
        statement = statement.with_for_update()
    row = (await session.execute(statement)).first()
    return None if row is None else Account(row[0], row[1], row[2], row[3], row[4])


async def account_by_email(session: AsyncSession, email: str) -> Account | None:
    row = (
        await session.execute(
            select(
                User.id, User.username, User.email, User.is_active, User.session_generation
            ).where(User.email == email)
        )
    ).first()
    return None if row is None else Account(row[0], row[1], row[2], row[3], row[4])


async def next_generation(session: AsyncSession, user_id: int) -> None:
    """Raise the user's session generation: every access token issued before stops."""
    await session.execute(
        update(User)
        .where(User.id == user_id)
        .values(session_generation=User.session_generation + 1)
        .execution_options(synchronize_session=False)
    )


async def password_hash_of(session: AsyncSession, user_id: int) -> str | None:
    return (
        await session.execute(select(User.password_hash).where(User.id == user_id))
    ).scalar_one_or_none()


async def set_password_hash(session: AsyncSession, user_id: int, password_hash: str) -> None:
    await session.execute(
        update(User)
        .where(User.id == user_id)
        .values(password_hash=password_hash)
        .execution_options(synchronize_session=False)
    )


async def add(
    session: AsyncSession,
    *,
    user_id: int,
    family_id: str,
    token_hash: str,
    expires_at: datetime,
    family_expires_at: datetime,
) -> None:
    session.add(
        RefreshToken(
            user_id=user_id,
            family_id=family_id,
            token_hash=token_hash,
            expires_at=expires_at,
            family_expires_at=family_expires_at,
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


async def _revoke_live(session: AsyncSession, which: ColumnElement[bool], now: datetime) -> None:
    """Revoke the refresh tokens ``which`` selects that are not revoked yet."""
    await session.execute(
        update(RefreshToken)
        .where(which, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


async def revoke_family(session: AsyncSession, family_id: str, now: datetime) -> None:
    await _revoke_live(session, RefreshToken.family_id == family_id, now)


async def revoke_all_of_user(session: AsyncSession, user_id: int, now: datetime) -> None:
    await _revoke_live(session, RefreshToken.user_id == user_id, now)


# ---- password reset ---------------------------------------------------------------------


async def add_reset_token(
    session: AsyncSession, *, user_id: int, token_hash: str, expires_at: datetime
) -> None:
    session.add(PasswordResetToken(user_id=user_id, token_hash=token_hash, expires_at=expires_at))
    await session.flush()


async def live_reset_token(
    session: AsyncSession, token_hash: str, now: datetime
) -> PasswordResetToken | None:
    """The unspent, unexpired reset token with this digest, if any."""
    return (
        await session.execute(
            select(PasswordResetToken).where(
                PasswordResetToken.token_hash == token_hash,
                PasswordResetToken.used_at.is_(None),
                PasswordResetToken.expires_at > now,
            )
        )
    ).scalar_one_or_none()


async def spend_reset_tokens(
    session: AsyncSession, user_id: int, token_id: int, now: datetime
) -> bool:
    """Spend the token (compare-and-set: True if this call won) and every other of the user's."""
    result: CursorResult[tuple[()]] = await session.execute(  # type: ignore[assignment]
        update(PasswordResetToken)
        .where(
            PasswordResetToken.id == token_id,
            PasswordResetToken.used_at.is_(None),
            PasswordResetToken.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    await session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user_id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return True


async def recent_reset_tokens(session: AsyncSession, user_id: int, since: datetime) -> int:
    """How many reset tokens were issued to the user since ``since`` (mail flood guard)."""
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(PasswordResetToken)
                .where(
                    PasswordResetToken.user_id == user_id,
                    PasswordResetToken.created_at > since,
                )
            )
        ).scalar_one()
    )
