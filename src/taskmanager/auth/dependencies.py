"""Boundary wiring: who is calling, and may they use this route at all."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy import select

from taskmanager.api_keys import repository as api_keys
from taskmanager.auth.credentials import access_claims, read_credential
from taskmanager.auth.principal import Identity, Principal, Scope, UserRole
from taskmanager.config import Settings
from taskmanager.db import SAFE_METHODS, SessionDep, get_database, utcnow
from taskmanager.errors import Forbidden, InvalidCredentials, NotAuthenticated
from taskmanager.security import digest
from taskmanager.users.models import User

# Declared for OpenAPI (Swagger's Authorize button); the headers are read by read_credential.
# OAuth2PasswordBearer, so Swagger's Authorize button can log in with a username and password.
_bearer_scheme = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    auto_error=False,
    description="JWT access token from POST /api/v1/auth/token",
)
_api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key from POST /api/v1/api-keys"
)
# For a route that authenticates inline (identity_for_read): the same OpenAPI security.
OPENAPI_SECURITY: dict[str, object] = {
    "security": [{_bearer_scheme.scheme_name: []}, {_api_key_scheme.scheme_name: []}]
}


async def get_settings(request: Request) -> Settings:
    # async: a plain def dependency would cost a thread-pool hop on every request.
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def _remember(request: Request, user_id: int) -> None:
    # For the access log and the per-user rate limit.
    request.scope.setdefault("state", {})["user_id"] = user_id


async def _principal_from_api_key(request: Request, session: SessionDep, key: str) -> Principal:
    state = request.scope.setdefault("state", {})
    cached = state.get("api_key_principal")
    if isinstance(cached, Principal):
        return cached
    now = utcnow()
    resolved = await api_keys.resolve_live_key(session, digest(key), now)
    if resolved is None:
        raise InvalidCredentials("The API key is invalid, expired or revoked")
    if resolved.last_used_at is None or now - resolved.last_used_at > api_keys.LAST_USED_RESOLUTION:
        database = get_database(request)
        if database.dialect == "sqlite" and request.method not in SAFE_METHODS:
            # The request's session already holds SQLite's one write connection: a second
            # writer would wait for it until the pool times out. Commits with the request.
            await api_keys.touch_last_used(session, resolved.key_id, now)
        else:
            # Own short write transaction: the request's session may be a read-only one.
            async with database.session(write=True) as writer:
                await api_keys.touch_last_used(writer, resolved.key_id, now)
                await writer.commit()
    _remember(request, resolved.user_id)
    principal = Principal(
        user_id=resolved.user_id,
        role=UserRole(resolved.user_role),
        api_key_id=resolved.key_id,
        scopes=resolved.scopes,
    )
    state["api_key_principal"] = principal
    return principal


async def get_identity(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _bearer: Annotated[str | None, Depends(_bearer_scheme)],
    _api_key: Annotated[str | None, Depends(_api_key_scheme)],
) -> Identity:
    """The caller as the credential proves it, without a query for login tokens.

    Only for routes whose query re-checks the user in the same round trip (the hot path).
    """
    credential = read_credential(request.scope)
    if credential is None:
        raise NotAuthenticated("Authentication required")
    if credential.kind == "bearer":
        claims = access_claims(request.scope, credential.value, settings.signing_key)
        _remember(request, claims.user_id)
        return Identity(user_id=claims.user_id)
    principal = await _principal_from_api_key(request, session, credential.value)
    return principal.identity


async def identity_for_read(request: Request) -> Identity:
    """``get_identity`` without FastAPI's dependency machinery, for the hottest read route.

    A bearer token needs no query at all; an API key is resolved on its own short read
    session. Only for safe methods: on SQLite a write request must reuse its own session.
    """
    assert request.method in SAFE_METHODS
    credential = read_credential(request.scope)
    if credential is None:
        raise NotAuthenticated("Authentication required")
    if credential.kind == "bearer":
        settings: Settings = request.app.state.settings
        claims = access_claims(request.scope, credential.value, settings.signing_key)
        _remember(request, claims.user_id)
        return Identity(user_id=claims.user_id)
    async with get_database(request).session(write=False) as session:
        principal = await _principal_from_api_key(request, session, credential.value)
    return principal.identity


async def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _bearer: Annotated[str | None, Depends(_bearer_scheme)],
    _api_key: Annotated[str | None, Depends(_api_key_scheme)],
) -> Principal:
    """The verified caller: the credential is good and the user exists and is active."""
    credential = read_credential(request.scope)
    if credential is None:
        raise NotAuthenticated("Authentication required")
    if credential.kind == "api_key":
        return await _principal_from_api_key(request, session, credential.value)
    claims = access_claims(request.scope, credential.value, settings.signing_key)
    row = (
        await session.execute(select(User.role, User.is_active).where(User.id == claims.user_id))
    ).one_or_none()
    if row is None or not row.is_active:
        raise InvalidCredentials("The access token is invalid or expired")
    _remember(request, claims.user_id)
    return Principal(user_id=claims.user_id, role=UserRole(row.role))


CurrentIdentity = Annotated[Identity, Depends(get_identity)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


class RequireScope:
    """Route dependency: an API key must carry ``scope`` (login tokens carry every scope)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, identity: CurrentIdentity) -> None:
        if not identity.has_scope(self.scope):
            raise Forbidden(f"This API key lacks the '{self.scope.value}' scope")


async def require_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("Administrator rights required")
    return principal


async def require_login_token(principal: CurrentPrincipal) -> Principal:
    """For credential management: an API key may not mint or manage credentials."""
    if principal.api_key_id is not None:
        raise Forbidden("This action needs a login token, not an API key")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]
LoginPrincipal = Annotated[Principal, Depends(require_login_token)]
