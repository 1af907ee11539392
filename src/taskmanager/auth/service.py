"""Logins, refresh-token rotation, logout, the password that guards them, and its reset.

A refresh token is a random secret; only its SHA-256 digest is stored. The tokens issued
from one login form a family: each refresh spends the presented token and issues the next
one in the family. Presenting a spent token again means it leaked (or a client replayed
it), so the whole family is revoked and whoever holds its newest token must log in again.
A family ends ``TASKMANAGER_SESSION_MAX_DAYS`` after its login however often it is rotated.

"Ending every session" of a user (password change or reset, log out everywhere,
deactivation, reactivation) revokes all their refresh tokens and raises their session
generation, which every access token carries: tokens issued before stop at once.
API keys are not sessions and survive it.

Password reset: a single-use token (256 random bits, only its digest stored) valid for
``RESET_TOKEN_MINUTES`` is mailed to an active account's address; confirming it sets the
new password, spends every outstanding reset token of the user and ends every session.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.auth import repository
from taskmanager.auth.schemas import TokenPair
from taskmanager.auth.throttle import LoginThrottle
from taskmanager.kit.config import Settings
from taskmanager.kit.db import Database, utcnow
from taskmanager.kit.errors import InvalidCredentials, ValidationFailed
from taskmanager.kit.fields import normalize_login
from taskmanager.kit.mail import Mailer, MailError
from taskmanager.kit.outbox import credentials_changed
from taskmanager.kit.passwords import identifier_problem
from taskmanager.kit.security import create_access_token, digest, hash_password, verify_password

log = structlog.get_logger("taskmanager.auth")

BAD_LOGIN = "Incorrect username or password"
BAD_REFRESH = "The refresh token is invalid, expired or revoked"
BAD_CURRENT_PASSWORD = "The current password is incorrect"  # noqa: S105 - a message
BAD_RESET_TOKEN = "The reset token is invalid, already used or expired"  # noqa: S105
RESET_TOKEN_MINUTES = 30
# Reset mails one account may be sent per hour: enough for a lost mail, too few to flood.
RESET_MAILS_PER_HOUR = 3
# Beyond anything registration accepts: refused without a hash spent on it.
_MAX_PASSWORD_CHARS = 1024


async def issue_pair(
    session: AsyncSession,
    settings: Settings,
    user_id: int,
    generation: int,
    *,
    family_id: str | None = None,
    family_expires_at: datetime | None = None,
) -> TokenPair:
    """A new access token and refresh token (in a new family unless one is given)."""
    now = utcnow()
    family_end = family_expires_at or now + timedelta(days=settings.session_max_days)
    refresh_token = secrets.token_urlsafe(48)
    await repository.add(
        session,
        user_id=user_id,
        family_id=family_id or uuid.uuid4().hex,
        token_hash=digest(refresh_token),
        expires_at=min(now + timedelta(days=settings.refresh_token_expire_days), family_end),
        family_expires_at=family_end,
    )
    lifetime = timedelta(minutes=settings.access_token_expire_minutes)
    return TokenPair(
        access_token=create_access_token(
            user_id, settings.signing_key, lifetime, generation=generation
        ),
        expires_in=int(lifetime.total_seconds()),
        refresh_token=refresh_token,
    )


async def login(
    database: Database,
    session: AsyncSession,
    settings: Settings,
    login: str,
    password: str,
    *,
    throttle: LoginThrottle | None = None,
    address: str = "unknown",
) -> TokenPair:
    """Check a username-or-email and password; unknown, wrong and inactive look the same.

    Raises RateLimited (too many attempts for this account, see ``auth.throttle``),
    InvalidCredentials, or ServiceUnavailable (password hashing saturated).
    """
    # One normaliser for the lookup and the per-account throttle: every spelling of one
    # account (case, NFC, IDNA) is one account.
    login = normalize_login(login)
    if throttle is not None:
        await throttle.attempt(login, address)
    # NUL is refused here because PostgreSQL cannot even compare text containing it.
    # (Lengths are bounded by the form, ``auth.schemas.LoginForm``.)
    if "\x00" in login:
        raise InvalidCredentials(BAD_LOGIN)
    # Looked up on a snapshot so the slow password check holds no write lock (SQLite).
    async with database.snapshot() as reader:
        user = await repository.find_login_user(reader, login)
    # With no such user a dummy hash is verified, so the answer takes as long as a wrong password.
    ok, new_hash = await verify_password(password, user.password_hash if user else None)
    if user is None or not ok or not user.is_active:
        raise InvalidCredentials(BAD_LOGIN)
    if throttle is not None:
        await throttle.succeeded(login, address)
    if new_hash is not None:
        await repository.set_password_hash(session, user.id, new_hash)
    return await issue_pair(session, settings, user.id, user.generation)


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
    if row.expires_at <= now or row.family_expires_at <= now:
        return None
    # Locked: a concurrent "end every session" either sees this rotation's new token (and
    # revokes it) or has already revoked the presented one (and the spend below fails).
    account = await repository.account(session, row.user_id, lock=True)
    if account is None or not account.is_active:
        return None
    if not await repository.spend(session, row.id, now):
        # Another request spent it between our read and our write: the same re-use.
        await repository.revoke_family(session, row.family_id, now)
        return None
    return await issue_pair(
        session,
        settings,
        row.user_id,
        account.generation,
        family_id=row.family_id,
        family_expires_at=row.family_expires_at,
    )


async def logout(session: AsyncSession, token: str) -> None:
    """Revoke the token's family. An unknown token is ignored: the answer reveals nothing."""
    row = await repository.by_hash(session, digest(token))
    if row is not None:
        await repository.revoke_family(session, row.family_id, utcnow())


async def end_sessions(session: AsyncSession, user_id: int) -> None:
    """Every refresh token of the user is revoked and every access token issued so far stops.

    For log out everywhere, password change and reset, deactivation and reactivation.
    """
    # The user row first: the same lock order as a refresh (see _rotate).
    await repository.next_generation(session, user_id)
    await repository.revoke_all_of_user(session, user_id, utcnow())
    credentials_changed(session, user_id)  # open WebSockets are checked again on commit


async def verify_current_password(session: AsyncSession, user_id: int, password: str) -> None:
    """Step-up: the caller proves again that they know the password.

    Raises InvalidCredentials (401) when it is wrong, ServiceUnavailable when hashing is
    saturated.
    """
    if len(password) > _MAX_PASSWORD_CHARS:
        raise InvalidCredentials(BAD_CURRENT_PASSWORD)
    stored = await repository.password_hash_of(session, user_id)
    ok, _ = await verify_password(password, stored)
    if not ok:
        raise InvalidCredentials(BAD_CURRENT_PASSWORD)


async def _set_password(session: AsyncSession, user_id: int, new_password: str) -> None:
    account = await repository.account(session, user_id, lock=True)
    problem = identifier_problem(
        new_password, account.username if account else None, account.email if account else None
    )
    if problem:
        raise ValidationFailed.field(("body", "new_password"), problem)
    await repository.set_password_hash(session, user_id, await hash_password(new_password))
    await end_sessions(session, user_id)


async def change_password(
    session: AsyncSession, user_id: int, current_password: str, new_password: str
) -> None:
    """Replace the password after checking the current one, and end every session.

    Raises InvalidCredentials when ``current_password`` is wrong, ValidationFailed when the
    new password contains the username or the email's local part.
    """
    await verify_current_password(session, user_id, current_password)
    await _set_password(session, user_id, new_password)


def reset_mail_text(link: str, token: str, minutes: int) -> str:
    return (
        "Someone (hopefully you) asked to reset the password of your Taskmanager account.\n\n"
        f"Open this link within {minutes} minutes to choose a new password:\n\n"
        f"{link}\n\n"
        "Or send this token, with your new password, to "
        "POST /api/v1/auth/password-reset/confirm:\n\n"
        f"{token}\n\n"
        "The link works once. If you did not ask for it, ignore this mail: your password "
        "stays as it is.\n"
    )


async def send_password_reset(
    database: Database, mailer: Mailer, settings: Settings, email: str
) -> None:
    """Mail a reset link to the active account with this address, if there is one.

    Runs after the 202 is sent, so the answer's timing says nothing about the account.
    Failures are logged, never raised: the client was told only that a mail may come.
    """
    now = utcnow()
    token = secrets.token_urlsafe(32)
    async with database.side_transaction() as session:
        # Normalised as registration stored it (NFC, IDNA U-labels, lower case).
        account = await repository.account_by_email(session, normalize_login(email))
        if account is None or not account.is_active:
            return
        recent = await repository.recent_reset_tokens(session, account.id, now - timedelta(hours=1))
        if recent >= RESET_MAILS_PER_HOUR:
            log.info("password_reset_mail_suppressed", user_id=account.id, reason="hourly cap")
            return
        await repository.add_reset_token(
            session,
            user_id=account.id,
            token_hash=digest(token),
            expires_at=now + timedelta(minutes=RESET_TOKEN_MINUTES),
        )
    link = settings.password_reset_url.replace("{token}", token)
    message = mailer.message(
        account.email,
        "Reset your Taskmanager password",
        reset_mail_text(link, token, RESET_TOKEN_MINUTES),
    )
    try:
        await mailer.send(message)
    except MailError as exc:
        log.error("password_reset_mail_failed", user_id=account.id, error=str(exc))
        return
    log.info("password_reset_mail_sent", user_id=account.id)


async def confirm_password_reset(session: AsyncSession, token: str, new_password: str) -> None:
    """Spend a reset token and set the new password; every session of the user ends.

    Raises ValidationFailed on ``token`` (unknown, used or expired) or on ``new_password``
    (contains the username or the email's local part); in both cases nothing changes.
    """
    now = utcnow()
    row = await repository.live_reset_token(session, digest(token), now)
    account = await repository.account(session, row.user_id) if row is not None else None
    if row is None or account is None or not account.is_active:
        raise ValidationFailed.field(("body", "token"), BAD_RESET_TOKEN, "invalid_token")
    user_id, token_id = row.user_id, row.id
    if not await repository.spend_reset_tokens(session, user_id, token_id, now):
        raise ValidationFailed.field(("body", "token"), BAD_RESET_TOKEN, "invalid_token")
    # A refusal below rolls the request back, so the token is not spent after all.
    await _set_password(session, user_id, new_password)
