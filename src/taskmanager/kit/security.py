"""Password hashing, access tokens and secret digests.

Passwords are hashed with Argon2id at the OWASP Password Storage Cheat Sheet's first
recommended setting (m = 19 MiB, t = 2, p = 1). A hash stored with other parameters still
verifies and is replaced at the next login (``verify_password`` returns the new hash).
Each worker computes at most ``password_hash_concurrency`` hashes at once: a login storm
then costs bounded memory and CPU; the excess waits ``password_hash_wait_seconds`` and is
refused with 503 after that. Nothing is hashed at import: the dummy hash that makes an
unknown user cost what a wrong password costs is computed on first use.

Access tokens are HS256 JWTs (RFC 7519) whose claims are checked strictly: ``sub`` a
canonical decimal user id in range, ``iat`` not in the future, ``exp - iat`` no longer than
the configured lifetime, and ``gen`` the user's session generation at issue (compared with
the user row by every query that authenticates, ``kit.authn``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import secrets
import sys
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import anyio

from taskmanager.kit.errors import ServiceUnavailable
from taskmanager.kit.fields import normalize_password

# PyJWT imports ``cryptography`` as it loads, for the RSA, EC and EdDSA algorithms: ~9 MiB
# of resident memory and ~30 ms in every worker (measured: issue 13's RSS bar). Access tokens
# are HS256 only, which PyJWT computes with the standard library's hmac; so ``cryptography``
# is hidden while PyJWT loads (a None entry in sys.modules makes its import fail), and PyJWT
# leaves the asymmetric algorithms out (``jwt.algorithms.has_crypto`` is False). Once loaded,
# ``cryptography`` imports normally for what needs it (webhook secrets, webhooks/crypto.py).
# If either is already loaded, nothing is hidden: the only cost is the memory.
if "jwt" not in sys.modules and "cryptography" not in sys.modules:
    sys.modules["cryptography"] = None  # type: ignore[assignment]
    try:
        import jwt
    finally:
        del sys.modules["cryptography"]
else:
    import jwt

if TYPE_CHECKING:
    from pwdlib import PasswordHash

JWT_ALGORITHM = "HS256"
# Every API key starts with this, so a key sent in the wrong header can be recognised.
API_KEY_PREFIX = "tm_"
ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - a claim value
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "type", "gen"]

# OWASP Password Storage Cheat Sheet, Argon2id: m=19456 KiB, t=2, p=1.
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1


@functools.cache
def _hasher() -> PasswordHash:
    # Built on first use: the Argon2 bindings are only needed by password routes, not start-up.
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    return PasswordHash(
        (
            Argon2Hasher(
                time_cost=ARGON2_TIME_COST,
                memory_cost=ARGON2_MEMORY_KIB,
                parallelism=ARGON2_PARALLELISM,
            ),
        )
    )


class _PasswordHash:
    """``pwdlib.PasswordHash``'s three calls used here, on a hasher made at first use."""

    def hash(self, password: str) -> str:
        return _hasher().hash(password)

    def verify(self, password: str, password_hash: str) -> bool:
        return _hasher().verify(password, password_hash)

    def verify_and_update(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        return _hasher().verify_and_update(password, password_hash)


_password_hash = _PasswordHash()

# Ids are 64-bit signed integers on every backend; "0", "007", "+7" and non-ASCII
# digits are not ids.
MAX_USER_ID = 2**63 - 1
_CANONICAL_ID = re.compile(r"[1-9][0-9]{0,18}")
# Clock skew tolerated between the process that issued a token and the one checking it.
CLOCK_SKEW_SECONDS = 30

_T = TypeVar("_T")


@dataclass
class _HashLimits:
    concurrency: int = 2
    wait_seconds: float = 2.0


_limits = _HashLimits()
# One semaphore per event loop: the CLI and the tests run several loops in one process.
_semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)
_dummy_hash: str | None = None

PASSWORD_HASH_BUSY = "Too many password checks are in progress; try again shortly"  # noqa: S105


def configure_password_hashing(*, concurrency: int, wait_seconds: float) -> None:
    """Set this process's limit on concurrent Argon2 hashes (from settings, at start)."""
    _limits.concurrency = concurrency
    _limits.wait_seconds = wait_seconds
    _semaphores.clear()


def _semaphore() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    semaphore = _semaphores.get(loop)
    if semaphore is None:
        semaphore = _semaphores[loop] = asyncio.Semaphore(_limits.concurrency)
    return semaphore


async def _bounded(func: Callable[..., _T], *args: str) -> _T:
    """Run an Argon2 call in a thread, at most ``concurrency`` at once in this process.

    Raises ServiceUnavailable (503, Retry-After) when no slot frees up within the wait.
    """
    semaphore = _semaphore()
    try:
        async with asyncio.timeout(_limits.wait_seconds):
            await semaphore.acquire()
    except TimeoutError:
        raise ServiceUnavailable(PASSWORD_HASH_BUSY, headers={"Retry-After": "1"}) from None
    try:
        # Argon2 is deliberately slow and CPU-bound: keep it off the event loop.
        return await anyio.to_thread.run_sync(func, *args)
    finally:
        semaphore.release()


async def hash_password(password: str) -> str:
    """An Argon2id hash of the password's NFKC form (``kit.fields.normalize_password``).

    Raises ServiceUnavailable when hashing is saturated.
    """
    return await _bounded(_password_hash.hash, normalize_password(password))


async def _get_dummy_hash() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = await hash_password(secrets.token_urlsafe(16))
    return _dummy_hash


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


def _verify_dummy(password: str, dummy_hash: str) -> tuple[bool, str | None]:
    # As many verifications as a wrong password for a real account costs (two when the
    # password is not NFKC-invariant), so timing does not tell whether the account exists.
    _verify(password, dummy_hash)
    return False, None


async def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """Check a password; return (ok, new hash if the stored one should be replaced).

    A new hash comes back when the hash parameters changed or the password matched only as
    typed (a hash from before NFKC normalisation). With no stored hash (no such user) a
    dummy hash is verified, so the answer takes as long as a wrong password. Raises
    ServiceUnavailable when hashing is saturated.
    """
    if password_hash is None:
        return await _bounded(_verify_dummy, password, await _get_dummy_hash())
    return await _bounded(_verify, password, password_hash)


def digest(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret (refresh tokens, API keys, reset tokens)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    jti: str
    expires_at: datetime
    generation: int


def create_access_token(
    user_id: int, signing_key: str, expires_in: timedelta, *, generation: int = 0
) -> str:
    """A signed access token for ``user_id`` at session ``generation``, valid ``expires_in``."""
    now = datetime.now(UTC)
    payload = {
        "sub": str(user_id),
        "type": ACCESS_TOKEN_TYPE,
        "iat": int(now.timestamp()),
        "exp": int((now + expires_in).timestamp()),
        "jti": uuid.uuid4().hex,
        "gen": generation,
    }
    return jwt.encode(payload, signing_key, algorithm=JWT_ALGORITHM)


class InvalidToken(Exception):
    """The token is not a valid, unexpired access token signed with our key."""


# Tokens already verified, by (signing key, token). A token is immutable, so its signature
# check need not be repeated on every request; expiry is still checked on every use.
# Verification is ~60 us of PyJWT per request otherwise: a large share of a cached GET.
_VERIFIED: dict[tuple[str, str], AccessClaims] = {}
_VERIFIED_MAX = 10_000


def decode_access_token(token: str, signing_key: str, max_lifetime: timedelta) -> AccessClaims:
    """The claims of a valid access token. Raises InvalidToken otherwise.

    ``max_lifetime`` is the configured access-token lifetime: a token claiming to live longer
    (``exp - iat``) was not issued by this configuration and is refused.
    """
    cache_key = (signing_key, token)
    cached = _VERIFIED.get(cache_key)
    if cached is not None:
        if datetime.now(UTC) < cached.expires_at:
            return cached
        del _VERIFIED[cache_key]
        raise InvalidToken("Signature has expired")
    claims = _verify_access_token(token, signing_key, max_lifetime)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        del _VERIFIED[next(iter(_VERIFIED))]  # oldest first: dicts keep insertion order
    _VERIFIED[cache_key] = claims
    return claims


def _int_claim(payload: dict[str, object], name: str) -> int:
    value = payload.get(name)
    # bool is an int in Python; JSON true is not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidToken(f"bad {name}")
    return value


def _verify_access_token(token: str, signing_key: str, max_lifetime: timedelta) -> AccessClaims:
    try:
        # The algorithm list is pinned: "none" and any algorithm switch are rejected here.
        payload = jwt.decode(
            token,
            signing_key,
            algorithms=[JWT_ALGORITHM],
            # iat is checked below, with the clock skew allowed between processes.
            options={"require": _REQUIRED_CLAIMS, "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    if payload.get("type") != ACCESS_TOKEN_TYPE:
        raise InvalidToken("not an access token")
    sub = payload.get("sub")
    # str.isdigit() accepts any Unicode digit; ids are ASCII digits without leading zeros.
    if not isinstance(sub, str) or not _CANONICAL_ID.fullmatch(sub) or int(sub) > MAX_USER_ID:
        raise InvalidToken("bad subject")
    issued_at, expires_at = _int_claim(payload, "iat"), _int_claim(payload, "exp")
    if issued_at > datetime.now(UTC).timestamp() + CLOCK_SKEW_SECONDS:
        raise InvalidToken("issued in the future")
    if expires_at - issued_at > max_lifetime.total_seconds():
        raise InvalidToken("lifetime longer than this server issues")
    generation = _int_claim(payload, "gen")
    if not 0 <= generation <= 2**31 - 1:
        raise InvalidToken("bad generation")
    jti = payload.get("jti")
    if not isinstance(jti, str):
        raise InvalidToken("bad jti")
    return AccessClaims(
        user_id=int(sub),
        jti=jti,
        expires_at=datetime.fromtimestamp(expires_at, UTC),
        generation=generation,
    )
