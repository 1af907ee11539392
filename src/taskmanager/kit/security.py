"""Password hashing, access tokens and secret digests."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from taskmanager.kit.fields import normalize_password

JWT_ALGORITHM = "HS256"
# Every API key starts with this, so a key sent in the wrong header can be recognised.
API_KEY_PREFIX = "tm_"
ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - a claim value
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "type"]

_password_hash = PasswordHash((Argon2Hasher(),))
# Verified when the user does not exist, so "no such user" costs what "wrong password" does.
_DUMMY_HASH = _password_hash.hash(secrets.token_urlsafe(16))


async def hash_password(password: str) -> str:
    """The Argon2id hash of the password's NFKC form (``kit.fields.normalize_password``)."""
    # Argon2 is deliberately slow and CPU-bound: keep it off the event loop.
    return await anyio.to_thread.run_sync(_password_hash.hash, normalize_password(password))


def _verify(password: str, password_hash: str) -> tuple[bool, str | None]:
    """(ok, new hash): the NFKC form first; then, for a hash made before passwords were
    normalised, the password as typed — a match there is re-hashed in NFKC form."""
    normalized = normalize_password(password)
    ok, updated = _password_hash.verify_and_update(normalized, password_hash)
    if ok or normalized == password:
        return ok, updated
    if _password_hash.verify(password, password_hash):
        return True, _password_hash.hash(normalized)
    return False, None


def _verify_dummy(password: str) -> None:
    # As many verifications as a wrong password for a real account costs, so timing does
    # not tell whether the account exists.
    for _ in range(1 if normalize_password(password) == password else 2):
        _password_hash.verify(password, _DUMMY_HASH)


async def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """Check a password; return (ok, new hash if the stored one should be replaced).

    A new hash comes back when the hash parameters changed or the password matched only as
    typed (a hash from before NFKC normalisation). With no hash (no such user) a dummy hash
    is verified, so the answer takes as long as a wrong password.
    """
    if password_hash is None:
        await anyio.to_thread.run_sync(_verify_dummy, password)
        return False, None
    return await anyio.to_thread.run_sync(_verify, password, password_hash)


def digest(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret (refresh tokens, API keys)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    jti: str
    expires_at: datetime


def create_access_token(user_id: int, signing_key: str, expires_in: timedelta) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": str(user_id),
        "type": ACCESS_TOKEN_TYPE,
        "iat": int(now.timestamp()),
        "exp": int((now + expires_in).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, signing_key, algorithm=JWT_ALGORITHM)


class InvalidToken(Exception):
    """The token is not a valid, unexpired access token signed with our key."""


# Tokens already verified, by (signing key, token). A token is immutable, so its signature
# check need not be repeated on every request; expiry is still checked on every use.
# Verification is ~60 us of PyJWT per request otherwise: a large share of a cached GET.
_VERIFIED: dict[tuple[str, str], AccessClaims] = {}
_VERIFIED_MAX = 10_000


def decode_access_token(token: str, signing_key: str) -> AccessClaims:
    cache_key = (signing_key, token)
    cached = _VERIFIED.get(cache_key)
    if cached is not None:
        if datetime.now(UTC) < cached.expires_at:
            return cached
        del _VERIFIED[cache_key]
        raise InvalidToken("Signature has expired")
    claims = _verify_access_token(token, signing_key)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        del _VERIFIED[next(iter(_VERIFIED))]  # oldest first: dicts keep insertion order
    _VERIFIED[cache_key] = claims
    return claims


def _verify_access_token(token: str, signing_key: str) -> AccessClaims:
    try:
        # The algorithm list is pinned: "none" and any algorithm switch are rejected here.
        payload = jwt.decode(
            token,
            signing_key,
            algorithms=[JWT_ALGORITHM],
            options={"require": _REQUIRED_CLAIMS},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    if payload.get("type") != ACCESS_TOKEN_TYPE:
        raise InvalidToken("not an access token")
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub.isdigit():
        raise InvalidToken("bad subject")
    return AccessClaims(
        user_id=int(sub),
        jti=str(payload["jti"]),
        expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
    )
