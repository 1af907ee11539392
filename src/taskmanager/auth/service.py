"""Logins, refresh-token rotation, logout, and the password that guards them.

A refresh token is a random secret; only its SHA-256 digest is stored. The tokens issued
from one login form a family: each refresh spends the presented token and issues the next
one in the family. Presenting a spent token again means it leaked (or a client replayed
it), so the whole family is revoked and whoever holds its newest token must log in again.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.auth import repository
from taskmanager.auth.schemas import TokenPair
from taskmanager.kit.config import Settings
from taskmanager.kit.db import Database, utcnow
from taskmanager.kit.errors import InvalidCredentials
from taskmanager.kit.fields import normalize_login
from taskmanager.kit.security import create_access_token, digest, hash_password, verify_password

BAD_LOGIN = "Incorrect username or password"
BAD_REFRESH = "The refresh token is invalid, expired or revoked"


async def issue_pair(
    session: AsyncSession, settings: Settings, user_id: int, *, family_id: str | None = None
) -> TokenPair:
    """A new access token and a new refresh token (in a new family unless one is given)."""
    refresh_token = secrets.token_urlsafe(48)
    await repository.add(
        session,
        user_id=user_id,
        family_id=family_id or uuid.uuid4().hex,
        token_hash=digest(refresh_token),
        expires_at=utcnow() + timedelta(days=settings.refresh_token_expire_days),
    )
    lifetime = timedelta(minutes=settings.access_token_expire_minutes)
    return TokenPair(
        access_token=create_access_token(user_id, settings.signing_key, lifetime),
        expires_in=int(lifetime.total_seconds()),
        refresh_token=refresh_token,
    )


async def login(
    database: Database, session: AsyncSession, settings: Settings, login: str, password: str
) -> TokenPair:
    """Check a username-or-email and password; unknown, wrong and inactive look the same."""
    # NUL is refused here because PostgreSQL cannot even compare text containing it.
    # (Lengths are bounded by the form, ``auth.schemas.LoginForm``.)
    if "\x00" in login:
        raise InvalidCredentials(BAD_LOGIN)
    # Looked up on a snapshot so the slow password check holds no write lock (SQLite).
    async with database.snapshot() as reader:
        user = await repository.find_login_user(reader, normalize_login(login))
    # With no such user a dummy hash is verified, so the answer takes as long as a wrong password.
    ok, new_hash = await verify_password(password, user.password_hash if user else None)
    if user is None or not ok or not user.is_active:
        raise InvalidCredentials(BAD_LOGIN)
    if new_hash is not None:
        await repository.set_password_hash(session, user.id, new_hash)
    return await issue_pair(session, settings, user.id)


async def refresh(database: Database, settings: Settings, token: str) -> TokenPair:
    """Spend a refresh token and issue the next pair of its family."""
    # A side transaction, committed even when the answer is 401: revoking a family on re-use
    # must persist, and the request's transaction is rolled back when an error is raised.
    async with database.side_transaction() as session:
        pair = await _rotate(session, settings, token, utcnow())
    if pair is None:
        raise InvalidCredentials(BAD_REFRESH)
    return pair


async def _rotate(
    session: AsyncSession, settings: Settings, token: str, now: datetime
) -> TokenPair | None:
    row = await repository.by_hash(session, digest(token))
    if row is None or row.revoked_at is not None:
        return None
    if row.used_at is not None:
        await repository.revoke_family(session, row.family_id, now)
        return None
    if row.expires_at <= now:
        return None
    if not await repository.is_active(session, row.user_id):
        return None
    if not await repository.spend(session, row.id, now):
        # Another request spent it between our read and our write: the same re-use.
        await repository.revoke_family(session, row.family_id, now)
        return None
    return await issue_pair(session, settings, row.user_id, family_id=row.family_id)


async def logout(session: AsyncSession, token: str) -> None:
    """Revoke the token's family. An unknown token is ignored: the answer reveals nothing."""
    row = await repository.by_hash(session, digest(token))
    if row is not None:
        await repository.revoke_family(session, row.family_id, utcnow())


async def end_sessions(session: AsyncSession, user_id: int) -> None:
    """Every refresh token of the user stops working (password change, deactivation)."""
    await repository.revoke_all_of_user(session, user_id, utcnow())


async def change_password(
    session: AsyncSession, user_id: int, current_password: str, new_password: str
) -> None:
    """Replace the password after checking the current one, and end every session.

    Raises InvalidCredentials when ``current_password`` is wrong.
    """
    stored = await repository.password_hash_of(session, user_id)
    ok, _ = await verify_password(current_password, stored)
    if not ok:
        raise InvalidCredentials("The current password is incorrect")
    await repository.set_password_hash(session, user_id, await hash_password(new_password))
    await end_sessions(session, user_id)
