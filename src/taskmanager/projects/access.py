"""The one access gate: may this caller see or act on this project or task, and in which role.

Every service asks here before it reads or changes anything that lives in a project; none
writes its own membership query. Each check is one scoped query (the row's project and the
caller's role in it), then ``projects.policy.decide``: a non-member gets NotFound (never
reveal existence), a member without the permission Forbidden, an admin passes.
Repositories that list rows scope them with ``visible_project_ids``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Exists, Row, ScalarSelect, Select, exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from taskmanager.kit.errors import NotFound
from taskmanager.kit.identity import Principal
from taskmanager.models.projects import Project, ProjectMember
from taskmanager.models.tasks import Task
from taskmanager.models.users import User
from taskmanager.projects.policy import Permission, decide


def project_not_found(project_id: int) -> NotFound:
    return NotFound(f"Project {project_id} not found")


def task_not_found(task_id: int) -> NotFound:
    return NotFound(f"Task {task_id} not found")


def member_role(user_id: Any, project_id: ColumnElement[int]) -> ScalarSelect[str]:
    """The user's role in the row's project, or NULL: a correlated scalar subquery.

    ``user_id`` may be a value or a column of the outer query (the fast read correlates it).
    """
    return (
        select(ProjectMember.role)
        .where(ProjectMember.project_id == project_id, ProjectMember.user_id == user_id)
        .scalar_subquery()
    )


def visible_project_ids(user_id: int) -> Select[int]:
    """The projects a (non-admin) user may see, for ``project_id IN (...)`` scoping."""
    return select(ProjectMember.project_id).where(ProjectMember.user_id == user_id)


@dataclass(frozen=True, slots=True)
class Access:
    """The row's project and the caller's role there (None: an admin who is not a member).

    ``row`` holds the extra columns the caller asked to load in the same query.
    """

    project_id: int
    role: str | None
    row: Row[Any] | None = None


async def _check(
    session: AsyncSession,
    principal: Principal,
    statement: Select[Any],
    permission: Permission,
    not_found: NotFound,
) -> Access:
    row = (await session.execute(statement)).first()
    if row is None:
        raise not_found
    role = row.member_role
    decide(principal, role, permission, not_found)
    return Access(project_id=row.access_project_id, role=role, row=row)


async def project_access(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    permission: Permission,
    *,
    load: Sequence[Any] = (),
) -> Access:
    """Allow ``permission`` on the project, or raise NotFound/Forbidden.

    ``load``: more columns (or the ``Project`` entity) to read in the same query (``Access.row``).
    """
    project = Project.__table__.c.id
    statement = select(
        project.label("access_project_id"),
        member_role(principal.user_id, project).label("member_role"),
        *load,
    ).where(project == project_id)
    return await _check(session, principal, statement, permission, project_not_found(project_id))


async def task_access(
    session: AsyncSession,
    principal: Principal,
    task_id: int,
    permission: Permission,
    *,
    load: Sequence[Any] = (),
) -> Access:
    """Allow ``permission`` on the task's project, or raise NotFound/Forbidden.

    ``load``: columns of the task to read in the same query (``Access.row``).
    """
    project = Task.__table__.c.project_id
    statement = select(
        project.label("access_project_id"),
        member_role(principal.user_id, project).label("member_role"),
        *load,
    ).where(Task.__table__.c.id == task_id)
    return await _check(session, principal, statement, permission, task_not_found(task_id))


def shares_a_project(user_id: int, other: ColumnElement[int]) -> Exists:
    """Whether ``user_id`` and the user ``other`` are members of one same project."""
    mine = aliased(ProjectMember)
    theirs = aliased(ProjectMember)
    return exists(
        select(mine.project_id)
        .join(theirs, theirs.project_id == mine.project_id)
        .where(mine.user_id == user_id, theirs.user_id == other)
    )


@dataclass(frozen=True, slots=True)
class UserAccess:
    """What the caller may see of another user: ``full`` (an admin, or themselves) or not."""

    full: bool
    row: Row[Any]


async def user_access(
    session: AsyncSession, principal: Principal, user_id: int, *, load: Sequence[Any]
) -> UserAccess:
    """The user ``user_id`` if the caller may see them, with the columns in ``load``.

    One scoped query. Admins and the user themselves see the full record; a user who shares
    a project with them sees it too (the caller decides how much to show); anyone else gets
    NotFound, as for a user that does not exist.
    """
    user = User.__table__.c
    statement = select(shares_a_project(principal.user_id, user.id).label("shares"), *load).where(
        user.id == user_id
    )
    row = (await session.execute(statement)).first()
    full = principal.is_admin or principal.user_id == user_id
    if row is None or not (full or row.shares):
        raise NotFound(f"User {user_id} not found")
    return UserAccess(full=full, row=row)
