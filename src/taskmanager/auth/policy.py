"""The authorization policy: what each project role may do. The only place that decides.

Repositories scope their queries to what a caller may see, so an invisible row is simply
not found; this module turns a found row plus the caller's role into allow / 403.
"""

from __future__ import annotations

from enum import StrEnum

from taskmanager.auth.principal import Principal
from taskmanager.errors import Forbidden, NotFound


class ProjectRole(StrEnum):
    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"


class Permission(StrEnum):
    VIEW = "view"  # the project, its tasks and comments
    EDIT_TASKS = "edit_tasks"  # create, update, delete tasks and comments
    MANAGE = "manage"  # the project itself: rename, members, delete


ROLE_PERMISSIONS: dict[ProjectRole, frozenset[Permission]] = {
    ProjectRole.OWNER: frozenset(Permission),
    ProjectRole.EDITOR: frozenset({Permission.VIEW, Permission.EDIT_TASKS}),
    ProjectRole.VIEWER: frozenset({Permission.VIEW}),
}


def role_allows(role: str | None, permission: Permission) -> bool:
    return role is not None and permission in ROLE_PERMISSIONS[ProjectRole(role)]


def authorize(
    principal: Principal, member_role: str | None, permission: Permission, *, not_found: str
) -> None:
    """Allow, or raise: NotFound for a non-member (never reveal existence), Forbidden else."""
    if principal.is_admin:
        return
    if member_role is None:
        raise NotFound(not_found)
    if not role_allows(member_role, permission):
        raise Forbidden(f"Your role '{member_role}' does not allow this action")


def authorize_comment_edit(
    principal: Principal, member_role: str | None, author_id: int | None, *, not_found: str
) -> None:
    """Only the author may reword a comment, and only while they may still edit in the project.

    Admins are not exempt: rewriting someone else's words would put them in that person's mouth.
    """
    if member_role is None and not principal.is_admin:
        raise NotFound(not_found)
    if author_id != principal.user_id:
        raise Forbidden("Only the author may edit a comment")
    if not principal.is_admin and not role_allows(member_role, Permission.EDIT_TASKS):
        raise Forbidden(f"Your role '{member_role}' does not allow this action")


def authorize_comment_delete(
    principal: Principal, member_role: str | None, author_id: int | None, *, not_found: str
) -> None:
    """The author (while they may edit), a project owner or an admin may delete a comment."""
    authorize(principal, member_role, Permission.VIEW, not_found=not_found)
    if principal.is_admin or role_allows(member_role, Permission.MANAGE):
        return
    if author_id == principal.user_id and role_allows(member_role, Permission.EDIT_TASKS):
        return
    raise Forbidden("Only the author or a project owner may delete a comment")
