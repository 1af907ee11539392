"""The one access gate: may this caller see or act on this project or task, and in which role.

Every service asks here before it reads or changes anything that lives in a project; none
writes its own membership query. Each check is one scoped query (the row's project and the
caller's role in it), then ``projects.policy.decide``: a non-member gets NotFound (never
reveal existence), a member without the permission Forbidden, an admin passes.
Repositories that list rows scope them with ``visible_project_ids``.

The hot writes (``tasks.service``) authorize inside the write itself: ``may`` is the same
rule as ``decide`` (and the live-caller check of ``kit.authn.authenticate``) written as one
SQL condition, so "authorize, write and read back" is one statement. When such a write
matches nothing, ``principal_of`` and the checks above tell which error it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Exists,
    Integer,
    Row,
    ScalarSelect,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from taskmanager.kit.errors import InvalidCredentials, NotFound
from taskmanager.kit.identity import Identity, Principal, Scope
from taskmanager.models.projects import Project, ProjectMember
from taskmanager.models.tasks import Task
from taskmanager.models.users import User, UserRole
from taskmanager.projects.policy import Permission, decide, roles_allowing

_USERS: Table = User.__table__  # type: ignore[assignment]
_MEMBERS: Table = ProjectMember.__table__  # type: ignore[assignment]
_PROJECTS: Table = Project.__table__  # type: ignore[assignment]


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


def is_member_sql(project_id: Any, user_id: Any, *, hold: bool = False) -> Exists:
    """SQL: the user (a value or a column) is a member of the project (value or column).

    ``hold=True`` is for a write that makes the user a task's assignee: on PostgreSQL the
    membership row is locked (``FOR KEY SHARE``) until the write's transaction ends. A
    removal of that member then waits for the write to commit and unassigns what it wrote
    (``tasks.service.unassign_member``); a write that comes after a removal's delete waits
    for it and finds no row. Without the lock, READ COMMITTED judged membership by the
    snapshot taken before the removal committed, and the write left a task assigned to a
    non-member. SQLite runs one writer at a time, so it needs no lock (and has none).
    """
    member = _MEMBERS.c
    query = (
        select(literal(1))
        .where(member.project_id == project_id, member.user_id == user_id)
        .correlate_except(_MEMBERS)
    )
    if hold:
        query = query.with_for_update(read=True, key_share=True)
    return query.exists()


def may(identity: Identity, permission: Permission, project_id: Any) -> Exists:
    """SQL: the caller is live and allowed ``permission`` on the project (value or column).

    Live: the user exists, is active and is still at the credential's session generation
    (what ``kit.authn.authenticate`` checks). Allowed: a member whose role carries the
    permission (``projects.policy``), or an administrator — whose API key, if that is the
    credential, must carry the ``admin`` scope (``Principal.is_admin``). One ``EXISTS`` on
    the user's primary key, with the membership's primary key inside it.
    """
    return _may(
        identity.user_id,
        identity.generation,
        permission,
        project_id,
        admin=identity.has_scope(Scope.ADMIN),
    )


CALLER_ID = "caller_id"
CALLER_GENERATION = "caller_generation"


def may_bound(permission: Permission, project_id: Any, *, admin: bool) -> Exists:
    """``may`` for a statement built once: the caller is the bound parameters ``caller_id``
    and ``caller_generation`` (``caller_params``); ``admin``: the credential carries the
    ``admin`` scope (statements differ by it, so it is not a parameter)."""
    user_id = bindparam(CALLER_ID, type_=BigInteger)
    generation = bindparam(CALLER_GENERATION, type_=Integer)
    return _may(user_id, generation, permission, project_id, admin=admin)


def _role_constants(permission: Permission) -> list[ColumnElement[str]]:
    """The roles as SQL string constants, not parameters: a statement compiled once (and
    prepared by the driver) keeps them, and the planner sees the values. Role names are
    ``ProjectRole`` values, lower-case letters only (checked), so quoting is exact."""
    roles = roles_allowing(permission)
    if not all(role.isascii() and role.isalpha() and role.islower() for role in roles):
        raise ValueError(f"role names must be lower-case letters: {roles}")
    return [literal_column(f"'{role}'") for role in roles]


def caller_params(identity: Identity) -> dict[str, int]:
    """The values of ``may_bound``'s parameters for this caller."""
    return {CALLER_ID: identity.user_id, CALLER_GENERATION: identity.generation}


def _may(
    user_id: Any, generation: Any, permission: Permission, project_id: Any, *, admin: bool
) -> Exists:
    user, member = _USERS.c, _MEMBERS.c
    # Correlated explicitly: ``project_id`` may be a column of the enclosing statement
    # (tasks, projects), which must never be re-listed in the subquery's FROM.
    allowed: ColumnElement[bool] = (
        exists()
        .where(
            member.project_id == project_id,
            member.user_id == user_id,
            member.role.in_(_role_constants(permission)),
        )
        .correlate_except(_MEMBERS)
    )
    if admin:
        allowed = or_(user.role == UserRole.ADMIN.value, allowed)
    return (
        exists()
        .where(
            and_(
                user.id == user_id,
                user.is_active.is_(True),
                user.session_generation == generation,
                allowed,
            )
        )
        .correlate_except(_USERS)
    )


async def principal_of(session: AsyncSession, identity: Identity) -> Principal:
    """The verified caller behind ``identity``: one query on the user.

    For the error path of a write that authorized itself in SQL (``may``) and matched
    nothing. Raises InvalidCredentials when the user is gone, inactive or has ended the
    credential's sessions.
    """
    user = _USERS.c
    role = (
        await session.execute(
            select(user.role).where(
                user.id == identity.user_id,
                user.is_active.is_(True),
                user.session_generation == identity.generation,
            )
        )
    ).scalar_one_or_none()
    if role is None:
        raise InvalidCredentials("The credentials are invalid or the account is inactive")
    return identity.verified(role)


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
