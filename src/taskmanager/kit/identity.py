"""Who is calling: the credential a request carries, what it proves, and the verified caller."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from starlette.datastructures import Headers
from starlette.types import Scope as ASGIScope

from taskmanager.kit.errors import InvalidCredentials
from taskmanager.models.users import UserRole

API_KEY_HEADER = "x-api-key"


class Scope(StrEnum):
    """What an API key may do (API.md §3); a login token carries every scope."""

    TASKS_READ = "tasks:read"
    TASKS_WRITE = "tasks:write"
    PROJECTS_READ = "projects:read"
    PROJECTS_WRITE = "projects:write"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Credential:
    """A credential as sent: a bearer access token or an API key (not yet verified)."""

    kind: Literal["bearer", "api_key"]
    value: str


def read_credential(scope: ASGIScope) -> Credential | None:
    """The credential sent with the request, if any. A malformed header is a bad credential.

    Raises InvalidCredentials for an ``Authorization`` header that is not ``Bearer <token>``.
    """
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


@dataclass(frozen=True, slots=True)
class Identity:
    """What the credential alone proves: a user id, and for an API key its id and scopes.

    Not yet checked against the database (the user may since have been deactivated), so
    only queries that re-check the user in the same round trip may act on it.
    """

    user_id: int
    api_key_id: int | None = None
    scopes: frozenset[str] | None = None  # None: a login token, with all of the user's rights

    def has_scope(self, scope: Scope) -> bool:
        return self.scopes is None or scope.value in self.scopes

    def verified(self, role: UserRole | str) -> Principal:
        """The principal this identity is, once a query has found the user active."""
        return Principal(self.user_id, UserRole(role), self.api_key_id, self.scopes)


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller verified against the database: the user exists and is active."""

    user_id: int
    role: UserRole
    api_key_id: int | None = None
    scopes: frozenset[str] | None = None

    @property
    def identity(self) -> Identity:
        return Identity(self.user_id, self.api_key_id, self.scopes)

    def has_scope(self, scope: Scope) -> bool:
        return self.scopes is None or scope.value in self.scopes

    @property
    def is_admin(self) -> bool:
        """Admin powers need the admin role, and for an API key the admin scope too."""
        return self.role is UserRole.ADMIN and self.has_scope(Scope.ADMIN)
