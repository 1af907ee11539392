"""Reading credentials off a request, shared by middleware and dependencies.

Decoded access-token claims are cached in the ASGI scope's state, so the rate limiter,
the logger and the route dependency verify a token's signature once per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.datastructures import Headers
from starlette.types import Scope

from taskmanager.errors import InvalidCredentials
from taskmanager.security import AccessClaims, InvalidToken, decode_access_token

API_KEY_HEADER = "x-api-key"
_CLAIMS_STATE_KEY = "access_claims"


@dataclass(frozen=True, slots=True)
class Credential:
    kind: Literal["bearer", "api_key"]
    value: str


def read_credential(scope: Scope) -> Credential | None:
    """The credential sent with the request, if any. A malformed header is a bad credential."""
    headers = Headers(scope=scope)
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise InvalidCredentials("Authorization header must be 'Bearer <token>'")
        return Credential("bearer", token)
    api_key = headers.get(API_KEY_HEADER)
    if api_key:
        return Credential("api_key", api_key.strip())
    return None


def access_claims(scope: Scope, token: str, signing_key: str) -> AccessClaims:
    """Verify a bearer token once per request (cached in scope state)."""
    state = scope.setdefault("state", {})
    cached = state.get(_CLAIMS_STATE_KEY)
    if isinstance(cached, AccessClaims):
        return cached
    try:
        claims = decode_access_token(token, signing_key)
    except InvalidToken:
        raise InvalidCredentials("The access token is invalid or expired") from None
    state[_CLAIMS_STATE_KEY] = claims
    return claims
