"""Authentication: the one place that turns a request's credential into who is calling.

Every entry point — route dependencies, the fast task read, middleware, WebSockets — goes
through ``identify`` (what the credential proves), ``authenticate`` (that, verified
against the database) or ``verified_user_id`` (whose credential it is, for rate limits).
Results are cached in the ASGI scope's state, so a request verifies its token's signature
and looks up its API key once however many layers ask.

An access token is good only while its ``gen`` claim equals the user's
``session_generation``: every query that authenticates compares them, so a password change,
"log out everywhere", a deactivation or a reactivation ends earlier tokens at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Update, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import Headers
from starlette.types import Scope as ASGIScope

from taskmanager.kit.config import Settings
from taskmanager.kit.db import SAFE_METHODS, Database
from taskmanager.kit.errors import InvalidCredentials, NotAuthenticated
from taskmanager.kit.identity import Identity, Principal
from taskmanager.kit.security import (
    API_KEY_PREFIX,
    AccessClaims,
    InvalidToken,
    decode_access_token,
    digest,
)
from taskmanager.models.api_keys import ApiKey
from taskmanager.models.base import utcnow
from taskmanager.models.users import User, UserRole

# last_used_at is advisory: writing it on every request would turn reads into writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)

API_KEY_HEADER = "x-api-key"
_CLAIMS_KEY = "access_claims"
_PRINCIPAL_KEY = "principal"
INVALID_TOKEN = "The access token is invalid or expired"  # noqa: S105 - a message
INVALID_KEY = "The API key is invalid, expired or revoked"
KEY_AS_BEARER = "This is an API key: send API keys in the X-API-Key header, not as a bearer token"
# Far above any credential this service issues (access tokens are ~250 characters, API keys
# 46): anything longer is refused before it is decoded, hashed or looked up.
MAX_BEARER_TOKEN_CHARS = 4096
MAX_API_KEY_CHARS = 256


@dataclass(frozen=True, slots=True)
class Credential:
    """A credential as sent: a bearer access token or an API key (not yet verified)."""

    kind: Literal["bearer", "api_key"]
    value: str


def read_credential(scope: ASGIScope) -> Credential | None:
    """The credential sent with the request, if any. A malformed header is a bad credential.

    Raises InvalidCredentials for an ``Authorization`` header that is not ``Bearer <token>``
    and for a token or key over its maximum length (refused without decoding).
    """
    headers = Headers(scope=scope)
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise InvalidCredentials("Authorization header must be 'Bearer <token>'")
        if len(token) > MAX_BEARER_TOKEN_CHARS:
            raise InvalidCredentials(INVALID_TOKEN)
        return Credential("bearer", token)
    api_key = headers.get(API_KEY_HEADER)
    if api_key:
        if len(api_key) > MAX_API_KEY_CHARS:
            raise InvalidCredentials(INVALID_KEY)
        return Credential("api_key", api_key.strip())
    return None


def _state(scope: ASGIScope) -> dict[str, object]:
    state: dict[str, object] = scope.setdefault("state", {})
    return state


def _settings(scope: ASGIScope) -> Settings:
    settings: Settings = scope["app"].state.settings
    return settings


def _database(scope: ASGIScope) -> Database:
    database: Database = scope["app"].state.database
    return database


def remember_user(scope: ASGIScope, user_id: int) -> None:
    """Record the caller for the access log and per-user limits."""
    _state(scope)["user_id"] = user_id


def access_claims(scope: ASGIScope, token: str) -> AccessClaims:
    """Verify a bearer token once per request (cached in scope state).

    Raises InvalidCredentials for a bad signature, a wrong token type or an expired token.
    """
    state = _state(scope)
    cached = state.get(_CLAIMS_KEY)
    if isinstance(cached, AccessClaims):
        return cached
    settings = _settings(scope)
    try:
        claims = decode_access_token(
            token,
            settings.signing_key,
            timedelta(minutes=settings.access_token_expire_minutes),
        )
    except InvalidToken:
        if token.startswith(API_KEY_PREFIX):
            raise InvalidCredentials(KEY_AS_BEARER) from None
        raise InvalidCredentials(INVALID_TOKEN) from None
    state[_CLAIMS_KEY] = claims
    return claims


def _require_credential(scope: ASGIScope) -> Credential:
    credential = read_credential(scope)
    if credential is None:
        raise NotAuthenticated("Authentication required")
    return credential


async def identify(scope: ASGIScope, *, session: AsyncSession | None = None) -> Identity:
    """What the request's credential proves, with as little database work as possible.

    A bearer token needs no query: only its signature and claims are checked, so the user may
    since have been deactivated or signed out everywhere — act on the result only in a query
    that re-checks the user, active and at ``identity.generation`` (the fast task read does).
    An API key is looked up, which also proves its owner active.
    ``session`` is the request's session when there is one (else a snapshot is used).
    Raises NotAuthenticated (no credential) or InvalidCredentials.
    """
    credential = _require_credential(scope)
    if credential.kind == "api_key":
        return (await _api_key_principal(scope, credential.value, session)).identity
    claims = access_claims(scope, credential.value)
    remember_user(scope, claims.user_id)
    return Identity(user_id=claims.user_id, generation=claims.generation)


async def authenticate(scope: ASGIScope, *, session: AsyncSession | None = None) -> Principal:
    """The verified caller: the credential is good and its user exists and is active (and, for
    an access token, has not ended its sessions since the token was issued).

    One query at most (the user row, or the API key joined to its user); cached for the rest
    of the request. Raises NotAuthenticated (no credential) or InvalidCredentials.
    """
    state = _state(scope)
    cached = state.get(_PRINCIPAL_KEY)
    if isinstance(cached, Principal):
        return cached
    credential = _require_credential(scope)
    if credential.kind == "api_key":
        return await _api_key_principal(scope, credential.value, session)
    identity = await identify(scope)
    statement = select(User.role).where(
        User.id == identity.user_id,
        User.is_active.is_(True),
        User.session_generation == identity.generation,
    )
    if session is None:
        async with _database(scope).snapshot() as snapshot:
            role = (await snapshot.execute(statement)).scalar_one_or_none()
    else:
        role = (await session.execute(statement)).scalar_one_or_none()
    if role is None:
        raise InvalidCredentials(INVALID_TOKEN)
    principal = identity.verified(role)
    state[_PRINCIPAL_KEY] = principal
    return principal


def claimed_caller(scope: ASGIScope) -> str | None:
    """A cheap label for the caller from the credential alone (no query); None without one.

    ``user:<id>`` for a validly signed token, ``key:<first 32 hex of its SHA-256>`` for an
    API key (not looked up). Raises InvalidCredentials for a bad token or header.
    """
    credential = read_credential(scope)
    if credential is None:
        return None
    if credential.kind == "api_key":
        return "key:" + digest(credential.value)[:32]
    return f"user:{access_claims(scope, credential.value).user_id}"


# API keys recently verified in this process, by digest: owner id and when to look again.
# Only rate limiting reads this (to pick the owner's bucket without a query); authorization
# always looks the key up, so a revoked key stops at once.
_KEY_OWNERS: dict[str, tuple[int, float]] = {}
_KEY_OWNERS_MAX = 10_000
KEY_OWNER_TTL_SECONDS = 30.0


async def verified_user_id(scope: ASGIScope) -> int | None:
    """The user a request's credential verifiably belongs to; None without a credential.

    A bearer token counts as verified by its signature (no query); an API key by a lookup,
    remembered per process for ``KEY_OWNER_TTL_SECONDS`` — and when it is looked up here, the
    route reuses that lookup (scope state) instead of repeating it.
    Raises InvalidCredentials for a bad token, key or header.
    """
    credential = read_credential(scope)
    if credential is None:
        return None
    if credential.kind == "bearer":
        return access_claims(scope, credential.value).user_id
    key_hash = digest(credential.value)
    now = time.monotonic()
    known = _KEY_OWNERS.get(key_hash)
    if known is not None and known[1] > now:
        return known[0]
    principal = await _api_key_principal(scope, credential.value, None)
    if len(_KEY_OWNERS) >= _KEY_OWNERS_MAX:
        del _KEY_OWNERS[next(iter(_KEY_OWNERS))]
    _KEY_OWNERS[key_hash] = (principal.user_id, now + KEY_OWNER_TTL_SECONDS)
    return principal.user_id


def caller_label(scope: ASGIScope) -> tuple[int | None, str | None]:
    """(user id, caller label) for logs, without a query: the user the request was
    authenticated as, else the user a validly signed bearer token names, or the owner of an
    API key this process verified lately; the label is ``claimed_caller``'s. For requests
    answered before any route ran (429, replays)."""
    user_id = _state(scope).get("user_id")
    if isinstance(user_id, int):
        return user_id, None  # the usual case: authenticated by the route, nothing to add
    try:
        label = claimed_caller(scope)
    except InvalidCredentials:
        return None, None
    if label is not None and label.startswith("user:"):
        return int(label.removeprefix("user:")), label
    credential = read_credential(scope)
    if credential is not None and credential.kind == "api_key":
        # The owner, if this process verified the key lately (the rate limit does): no query.
        known = _KEY_OWNERS.get(digest(credential.value))
        if known is not None:
            return known[0], label
    return None, label


@dataclass(frozen=True, slots=True)
class _LiveKey:
    key_id: int
    user_id: int
    user_role: str
    scopes: frozenset[str]
    last_used_at: datetime | None
    generation: int


async def _live_key(session: AsyncSession, key_hash: str, now: datetime) -> _LiveKey | None:
    """The key with this hash if it is unrevoked, unexpired and its owner is active."""
    row = (
        await session.execute(
            select(
                ApiKey.id,
                ApiKey.user_id,
                User.role,
                ApiKey.scopes,
                ApiKey.last_used_at,
                User.session_generation,
            )
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
    return _LiveKey(row[0], row[1], row[2], frozenset(row[3] or ()), row[4], row[5])


def _touch(key_id: int, now: datetime) -> Update:
    return update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now)


async def _api_key_principal(scope: ASGIScope, key: str, session: AsyncSession | None) -> Principal:
    state = _state(scope)
    cached = state.get(_PRINCIPAL_KEY)
    if isinstance(cached, Principal):
        return cached
    now = utcnow()
    database = _database(scope)
    if session is None:
        async with database.snapshot() as snapshot:
            live = await _live_key(snapshot, digest(key), now)
    else:
        live = await _live_key(session, digest(key), now)
    if live is None:
        raise InvalidCredentials(INVALID_KEY)
    if live.last_used_at is None or now - live.last_used_at > LAST_USED_RESOLUTION:
        writing = scope.get("method", "GET") not in SAFE_METHODS
        if session is not None and database.dialect == "sqlite" and writing:
            # The request's session already holds SQLite's one write connection: a second
            # writer would wait for it until the pool times out. Commits with the request.
            await session.execute(_touch(live.key_id, now))
        else:
            async with database.side_transaction() as writer:
                await writer.execute(_touch(live.key_id, now))
    remember_user(scope, live.user_id)
    principal = Principal(
        user_id=live.user_id,
        role=UserRole(live.user_role),
        api_key_id=live.key_id,
        scopes=live.scopes,
        # API keys survive the end of sessions; the fast read compares this value.
        generation=live.generation,
    )
    state[_PRINCIPAL_KEY] = principal
    return principal
