"""The boundary dependencies every route uses: session, database, settings, the caller, scopes.

Defined once here and used as ``Annotated`` aliases (``SessionDep``, ``CurrentPrincipal``…).
All are ``async``: a plain ``def`` dependency would cost a thread-pool hop per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit import authn, faults, storage, transaction
from taskmanager.kit.config import Settings
from taskmanager.kit.db import SAFE_METHODS, Database
from taskmanager.kit.errors import Forbidden
from taskmanager.kit.http import API_PREFIX, Listing, PageDep
from taskmanager.kit.identity import Identity, Principal, Scope
from taskmanager.kit.mail import Mailer
from taskmanager.kit.throttle import Counters

# Declared for OpenAPI (Swagger's Authorize button); the headers are read by kit.authn.
# OAuth2PasswordBearer, so Swagger's Authorize button can log in with a username and password.
_bearer_scheme = OAuth2PasswordBearer(
    tokenUrl=f"{API_PREFIX}/auth/token",
    auto_error=False,
    description=f"JWT access token from POST {API_PREFIX}/auth/token",
)
_api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description=f"API key from POST {API_PREFIX}/api-keys"
)
# For a route that authenticates inline (the fast task read): the same OpenAPI security.
OPENAPI_SECURITY: dict[str, object] = {
    "security": [{_bearer_scheme.scheme_name: []}, {_api_key_scheme.scheme_name: []}]
}


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request; writes commit before the response is sent.

    Used with ``scope="function"`` so the commit runs when the endpoint returns, before
    FastAPI sends anything: a client never sees 2xx for a write that failed to commit.
    A ``kit.transaction`` hook on the request (the ``Idempotency-Key`` record) joins the
    transaction. Raises ServiceUnavailable while the database is known to be down.
    """
    database: Database = request.app.state.database
    write = request.method not in SAFE_METHODS
    hook = transaction.hook_of(request.scope) if write else None
    async with database.request_session(write=write) as session:
        if hook is not None:
            await hook.begin(session)
        yield session
        if write:
            if hook is not None:
                await hook.before_commit(session)
            faults.die_if_requested(request.scope, faults.KILL_BEFORE_COMMIT)
            # A write served on the driver (``tasks.fast_write``) never used its session:
            # nothing began, so there is nothing to commit (and a commit would still cost a
            # greenlet round of the unit of work).
            if session.in_transaction():
                await session.commit()
            faults.die_if_requested(request.scope, faults.KILL_AFTER_COMMIT)
            # Objects whose rows this transaction deleted (attachments): gone only now.
            await storage.discard_committed(session, request.app.state.storage)
    database.breaker.succeeded()


async def get_storage(request: Request) -> storage.Storage:
    chosen: storage.Storage = request.app.state.storage
    return chosen


async def get_mailer(request: Request) -> Mailer:
    mailer: Mailer = request.app.state.mailer
    return mailer


async def get_counters(request: Request) -> Counters:
    counters: Counters = request.app.state.counters
    return counters


async def get_client_address(request: Request) -> str:
    """The client's address, as the proxy rule (TASKMANAGER_FORWARDED_ALLOW_IPS) resolved it."""
    return request.client.host if request.client else "unknown"


SettingsDep = Annotated[Settings, Depends(get_settings)]
MailerDep = Annotated[Mailer, Depends(get_mailer)]
CountersDep = Annotated[Counters, Depends(get_counters)]
ClientAddress = Annotated[str, Depends(get_client_address)]
DatabaseDep = Annotated[Database, Depends(get_database)]
StorageDep = Annotated[storage.Storage, Depends(get_storage)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_listing(
    request: Request, response: Response, settings: SettingsDep, page: PageDep
) -> Listing:
    """What every list route takes: ``skip``/``limit``/``cursor`` and the cursor key."""
    return Listing(page, settings.signing_key, request, response)


ListingDep = Annotated[Listing, Depends(get_listing)]


async def get_identity(
    request: Request,
    session: SessionDep,
    _bearer: Annotated[str | None, Depends(_bearer_scheme)],
    _api_key: Annotated[str | None, Depends(_api_key_scheme)],
) -> Identity:
    """What the credential proves (see ``kit.authn.identify``); for scope checks."""
    return await authn.identify(request.scope, session=session)


async def get_principal(
    request: Request,
    session: SessionDep,
    _bearer: Annotated[str | None, Depends(_bearer_scheme)],
    _api_key: Annotated[str | None, Depends(_api_key_scheme)],
) -> Principal:
    """The verified caller: the credential is good and the user exists and is active."""
    return await authn.authenticate(request.scope, session=session)


CurrentIdentity = Annotated[Identity, Depends(get_identity)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_scope(identity: Identity | Principal, scope: Scope) -> None:
    """Raise Forbidden unless the caller's API key carries ``scope`` (login tokens carry all)."""
    if not identity.has_scope(scope):
        raise Forbidden(f"This API key lacks the '{scope.value}' scope")


class RequireScope:
    """Route dependency: an API key must carry ``scope`` (login tokens carry every scope)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, identity: CurrentIdentity) -> None:
        require_scope(identity, self.scope)


class ScopedIdentity:
    """Route dependency of the hot task writes: ``CurrentIdentity`` and ``RequireScope`` in
    one, without their sub-dependencies (FastAPI resolves each dependency per request; the
    route declares ``OPENAPI_SECURITY`` for the document instead). A dependency, not a call
    in the route, so that a stranger still gets 401 before the body is validated.
    Raises NotAuthenticated, InvalidCredentials or Forbidden."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, request: Request) -> Identity:
        identity = await authn.identify(request.scope)
        require_scope(identity, self.scope)
        return identity


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


def scope_dependencies(read: Scope, write: Scope) -> tuple[list[Any], list[Any]]:
    """The ``dependencies=`` lists of a domain's read routes and of its write routes."""
    return [Depends(RequireScope(read))], [Depends(RequireScope(write))]
