"""``/auth``: the OAuth2 password flow, refresh-token rotation, logout, password reset."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, Form, Response, status

from taskmanager.auth import service
from taskmanager.auth.schemas import (
    LoginForm,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    TokenPair,
)
from taskmanager.auth.throttle import LoginThrottle
from taskmanager.kit.deps import (
    ClientAddress,
    CountersDep,
    DatabaseDep,
    LoginPrincipal,
    MailerDep,
    SessionDep,
    SettingsDep,
)
from taskmanager.kit.errors import (
    DomainError,
    Forbidden,
    InvalidCredentials,
    MalformedRequest,
    NotAuthenticated,
    RateLimited,
    ServiceUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from taskmanager.kit.http import domain_router
from taskmanager.kit.problems import problem_responses

router = domain_router("auth", prefix="/auth")

# RFC 6749 §5.1: responses carrying tokens must not be cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _responses(invalid: str | None, *errors: type[DomainError]) -> dict[int | str, Any]:
    responses = problem_responses(*errors, MalformedRequest, UnsupportedMediaType, ValidationFailed)
    if invalid is not None:
        responses.update(problem_responses(InvalidCredentials))
        responses[401]["description"] = invalid
    return responses


async def _login_throttle(settings: SettingsDep, counters: CountersDep) -> LoginThrottle | None:
    return LoginThrottle(counters, settings) if settings.rate_limit_enabled else None


LoginThrottleDep = Annotated[LoginThrottle | None, Depends(_login_throttle)]


@router.post(
    "/token",
    response_model=TokenPair,
    summary="Log in (OAuth2 password flow)",
    responses=_responses(
        "Wrong username or password, or the account is inactive", RateLimited, ServiceUnavailable
    ),
)
async def token(
    form: Annotated[LoginForm, Form()],
    response: Response,
    database: DatabaseDep,
    session: SessionDep,
    settings: SettingsDep,
    throttle: LoginThrottleDep,
    address: ClientAddress,
) -> TokenPair:
    """Exchange a username (or email) and password, sent as a form, for a token pair.

    Attempts are limited per address, per account and address, and per account (429).
    """
    response.headers.update(_NO_STORE)
    return await service.login(
        database,
        session,
        settings,
        form.username,
        form.password,
        throttle=throttle,
        address=address,
    )


@router.post(
    "/refresh",
    response_model=TokenPair,
    summary="Rotate a refresh token",
    responses=_responses("The refresh token is unknown, spent, expired or revoked", RateLimited),
)
async def refresh(
    body: RefreshRequest, response: Response, database: DatabaseDep, settings: SettingsDep
) -> TokenPair:
    """Spend a refresh token for a new pair; re-using a spent one revokes its whole family."""
    response.headers.update(_NO_STORE)
    return await service.refresh(database, settings, body.refresh_token)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Log out (revoke a refresh token)",
    responses=_responses(None),
)
async def logout(body: RefreshRequest, session: SessionDep) -> Response:
    """Revoke the refresh token and its family; an unknown token is accepted silently."""
    await service.logout(session, body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/logout-all",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Log out everywhere",
    responses=problem_responses(NotAuthenticated, Forbidden),
)
async def logout_all(principal: LoginPrincipal, session: SessionDep) -> Response:
    """End every session of the caller: all refresh tokens are revoked and every access token
    issued until now stops working at once (this one included). API keys keep working."""
    await service.end_sessions(session, principal.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    summary="Ask for a password-reset mail",
    responses={
        202: {"description": "Accepted; a link is mailed if an active account has this address"},
        **_responses(None, RateLimited, ServiceUnavailable),
    },
)
async def password_reset(
    body: PasswordResetRequest,
    background: BackgroundTasks,
    database: DatabaseDep,
    settings: SettingsDep,
    mailer: MailerDep,
) -> Response:
    """Always 202, whether or not the address belongs to an account (no oracle); an active
    account gets a single-use link valid for 30 minutes. 503 when the server cannot mail."""
    if not mailer.available:
        raise ServiceUnavailable(
            "Password reset is unavailable: this server has no mail configured",
            headers={"Retry-After": "3600"},
        )
    # After the answer is sent: its timing must not depend on whether the account exists.
    background.add_task(
        service.send_password_reset, database, mailer, settings, body.email.strip().lower()
    )
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Set a new password with a reset token",
    responses=_responses(None, RateLimited, ServiceUnavailable),
)
async def password_reset_confirm(body: PasswordResetConfirm, session: SessionDep) -> Response:
    """Spend the mailed token and set the new password; every session of the account ends.

    422 on ``token`` when it is unknown, used or expired; nothing changes then.
    """
    await service.confirm_password_reset(session, body.token, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
