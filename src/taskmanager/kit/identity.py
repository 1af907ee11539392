"""Who is calling: what a credential proves (``Identity``) and the verified caller (``Principal``).

Framework-free, so services may take them; reading credentials off a request is ``kit.authn``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from taskmanager.models.users import UserRole


class Scope(StrEnum):
    """What an API key may do; a login token carries every scope."""

    TASKS_READ = "tasks:read"
    TASKS_WRITE = "tasks:write"
    PROJECTS_READ = "projects:read"
    PROJECTS_WRITE = "projects:write"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Identity:
    """What the credential alone proves: a user id, and for an API key its id and scopes.

    Not yet checked against the database (the user may since have been deactivated), so
    only queries that re-check the user in the same round trip may act on it.
    """

    user_id: int
    api_key_id: int | None = None
    scopes: frozenset[str] | None = None  # None: a login token, with all of the user's rights
    # The user's session generation the credential was issued under (``models.users``):
    # a query that re-checks the user must also find this generation still current.
    generation: int = 0

    def has_scope(self, scope: Scope) -> bool:
        return self.scopes is None or scope.value in self.scopes

    def verified(self, role: UserRole | str) -> Principal:
        """The principal this identity is, once a query has found the user active."""
        return Principal(
            self.user_id, UserRole(role), self.api_key_id, self.scopes, self.generation
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller verified against the database: the user exists and is active."""

    user_id: int
    role: UserRole
    api_key_id: int | None = None
    scopes: frozenset[str] | None = None
    generation: int = 0

    @property
    def identity(self) -> Identity:
        return Identity(self.user_id, self.api_key_id, self.scopes, self.generation)

    def has_scope(self, scope: Scope) -> bool:
        return self.scopes is None or scope.value in self.scopes

    @property
    def is_admin(self) -> bool:
        """Admin powers need the admin role, and for an API key the admin scope too."""
        return self.role is UserRole.ADMIN and self.has_scope(Scope.ADMIN)
