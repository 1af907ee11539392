"""The authorization policy: what each project role may do (API.md §4). The only place that decides.

``projects.access`` asks it; nothing else compares roles.
"""

from __future__ import annotations

from enum import StrEnum

from taskmanager.kit.errors import Forbidden, NotFound
from taskmanager.kit.identity import Principal
from taskmanager.models.projects import ProjectRole


class Permission(StrEnum):
    VIEW = "view"  # the project, its tasks, comments and attachments
    EDIT_TASKS = "edit_tasks"  # create, update, delete tasks, comments and attachments
    MANAGE = "manage"  # the project itself: rename, members, delete


ROLE_PERMISSIONS: dict[ProjectRole, frozenset[Permission]] = {
    ProjectRole.OWNER: frozenset(Permission),
    ProjectRole.EDITOR: frozenset({Permission.VIEW, Permission.EDIT_TASKS}),
    ProjectRole.VIEWER: frozenset({Permission.VIEW}),
}


def role_allows(role: str | None, permission: Permission) -> bool:
    return role is not None and permission in ROLE_PERMISSIONS[ProjectRole(role)]


def roles_allowing(permission: Permission) -> tuple[str, ...]:
    """The project roles that carry ``permission``, for a query that decides in SQL."""
    return tuple(role.value for role, allowed in ROLE_PERMISSIONS.items() if permission in allowed)


def decide(
    principal: Principal, role: str | None, permission: Permission, not_found: NotFound
) -> None:
    """Allow, or raise: ``not_found`` for a non-member (never reveal existence), Forbidden else.

    An administrator is allowed everything (the admin rule, once).
    """
    if principal.is_admin:
        return
    if role is None:
        raise not_found
    if not role_allows(role, permission):
        raise Forbidden(f"Your role '{role}' does not allow this action")
