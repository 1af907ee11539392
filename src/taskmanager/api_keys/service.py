"""API keys: minted for scripts, scoped, shown once, stored only as a digest."""

from __future__ import annotations

import secrets
from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.api_keys import repository
from taskmanager.api_keys.schemas import ApiKeyCreate
from taskmanager.auth.service import verify_current_password
from taskmanager.kit.db import utcnow
from taskmanager.kit.errors import Forbidden, NotFound
from taskmanager.kit.etags import stale
from taskmanager.kit.identity import Principal, Scope
from taskmanager.kit.outbox import credentials_changed
from taskmanager.kit.pagination import KeysetList, ListPage, PageRequest
from taskmanager.kit.security import API_KEY_PREFIX, digest
from taskmanager.models.api_keys import ApiKey
from taskmanager.models.users import UserRole

KEY_PREFIX = API_KEY_PREFIX
# Enough of the key to tell keys apart in a list, far too little to guess the rest.
DISPLAY_PREFIX_CHARS = 10
_LIST: KeysetList[ApiKey] = KeysetList(b"taskmanager/api-keys/cursor/v1", row_id=lambda key: key.id)


def generate_key() -> str:
    # 32 random bytes (256 bits): a fast digest is then as safe to store as a slow hash.
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create(
    session: AsyncSession, principal: Principal, data: ApiKeyCreate
) -> tuple[ApiKey, str]:
    """Mint a key; return it with its secret, which is not stored and cannot be shown again.

    Raises InvalidCredentials when ``current_password`` is wrong (step-up), Forbidden for
    the admin scope without the admin role.
    """
    await verify_current_password(session, principal.user_id, data.current_password)
    if Scope.ADMIN in data.scopes and principal.role is not UserRole.ADMIN:
        raise Forbidden("Only administrators may create keys with the 'admin' scope")
    secret = generate_key()
    key = ApiKey(
        user_id=principal.user_id,
        name=data.name,
        prefix=secret[:DISPLAY_PREFIX_CHARS],
        key_hash=digest(secret),
        scopes=[scope.value for scope in data.scopes],
        expires_at=data.expires_at,
    )
    return await repository.add(session, key), secret


async def list_keys(
    session: AsyncSession, user_id: int, page: PageRequest, *, signing_key: str
) -> ListPage[ApiKey]:
    """A page of the user's unrevoked keys, by id."""
    return await _LIST.page(
        page,
        lambda window: repository.list_live_for_user(session, user_id, window),
        key=signing_key,
        scope={"user_id": user_id},
    )


async def get(session: AsyncSession, user_id: int, key_id: int) -> ApiKey:
    """One of the user's unrevoked keys; anyone else's key is simply not found."""
    key = await repository.get_live(session, user_id=user_id, key_id=key_id)
    if key is None:
        raise NotFound(f"API key {key_id} not found")
    return key


async def revoke(
    session: AsyncSession,
    user_id: int,
    key_id: int,
    *,
    expected_versions: Collection[int] | None = None,
) -> None:
    """Revoke one of the caller's keys; anyone else's key is simply not found. Only while
    the key is at one of ``expected_versions`` (``If-Match``), else PreconditionFailed."""
    if not await repository.revoke(
        session, key_id=key_id, user_id=user_id, now=utcnow(), expected_versions=expected_versions
    ):
        # The failure path only: gone (404) or at another version (412)?
        await get(session, user_id, key_id)
        raise stale("API key")
    credentials_changed(session, user_id)  # open WebSockets are checked again on commit
