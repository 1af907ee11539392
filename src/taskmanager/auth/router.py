"""``/auth``: the OAuth2 password flow, refresh-token rotation and logout."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Response, status

from taskmanager.auth import service
from taskmanager.auth.schemas import LoginForm, RefreshRequest, TokenPair
from taskmanager.kit.deps import DatabaseDep, SessionDep, SettingsDep
from taskmanager.kit.errors import (
    DomainError,
    InvalidCredentials,
    MalformedRequest,
    RateLimited,
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


@router.post(
    "/token",
    response_model=TokenPair,
    summary="Log in (OAuth2 password flow)",
    responses=_responses("Wrong username or password, or the account is inactive", RateLimited),
)
async def token(
    form: Annotated[LoginForm, Form()],
    response: Response,
    database: DatabaseDep,
    session: SessionDep,
    settings: SettingsDep,
) -> TokenPair:
    """Exchange a username (or email) and password, sent as a form, for a token pair."""
    response.headers.update(_NO_STORE)
    return await service.login(database, session, settings, form.username, form.password)


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
