"""Project and membership queries. Access is decided before them, by ``projects.access``."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.db import at_version
from taskmanager.kit.fields import normalize_username
from taskmanager.kit.pagination import Window, count_rows, keyset_select
from taskmanager.models.base import stamp_if_changed, utcnow
from taskmanager.models.projects import Project, ProjectMember
from taskmanager.models.users import User


@dataclass(frozen=True, slots=True)
class MemberRow:
    user_id: int
    username: str
    role: str
    # The membership row's version: its ETag is ``"<user_id>-<version>"``.
    version: int = 1


async def list_for_member(
    session: AsyncSession, user_id: int, window: Window
) -> tuple[list[tuple[Project, str]], int]:
    """A page of the projects the user belongs to, by id, and how many there are."""
    of_user = ProjectMember.user_id == user_id
    total = await count_rows(session, ProjectMember, of_user)
    stmt = keyset_select(
        select(Project, ProjectMember.role)
        .join(ProjectMember, ProjectMember.project_id == Project.id)
        .where(of_user),
        window,
        Project.__table__.c.id,
    )
    rows = (await session.execute(stmt)).all()
    return [(row[0], row[1]) for row in rows], total


async def insert(
    session: AsyncSession, *, name: str, description: str | None, owner_id: int
) -> Project:
    """A new project with its owner, in the caller's transaction."""
    now = utcnow()
    project = Project(
        name=name, description=description, created_by=owner_id, created_at=now, updated_at=now
    )
    session.add(project)
    await session.flush()
    session.add(ProjectMember(project_id=project.id, user_id=owner_id, role="owner"))
    await session.flush()
    return project


async def update_fields(
    session: AsyncSession,
    project_id: int,
    values: dict[str, Any],
    *,
    expected_versions: Collection[int] | None,
) -> Project | None:
    """Compare-and-set update; None when ``expected_versions`` no longer holds (or it is gone).
    The version and ``updated_at`` move only if a value changes (``stamp_if_changed``).

    The version check sits in the UPDATE itself, so two writers holding the same ETag
    cannot both succeed.
    """
    stmt = update(Project).where(Project.id == project_id)
    stmt = stmt.where(*at_version(Project.version, expected_versions))
    result = await session.execute(
        stmt.values(**values, **stamp_if_changed(Project.__table__.c, values, utcnow()))
        .returning(Project)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    return result.scalar_one_or_none()


async def delete_project(
    session: AsyncSession, project_id: int, *, expected_versions: Collection[int] | None
) -> bool:
    """Compare-and-set delete; tasks, comments and memberships go with it (FK cascades)."""
    stmt = delete(Project).where(Project.id == project_id)
    stmt = stmt.where(*at_version(Project.version, expected_versions))
    result = await session.execute(
        stmt.returning(Project.id).execution_options(synchronize_session=False)
    )
    return result.scalar_one_or_none() is not None


async def lock(session: AsyncSession, project_id: int) -> bool:
    """Lock the project row for the rest of the transaction; False if it does not exist.

    Membership changes take this lock before they read any role, so two of them on one
    project run one after the other and each sees the other's result. (SQLite ignores
    FOR UPDATE; its writers are serialized by BEGIN IMMEDIATE already.)

    ``FOR NO KEY UPDATE``, not ``FOR UPDATE``: it excludes the other membership changes
    but not a task write's foreign-key check (``KEY SHARE`` on the project). A write that
    assigns a member holds that membership first (``access.is_member_sql(hold=True)``),
    then checks the project; with ``FOR UPDATE`` here it waited for the membership change,
    which waited for its membership row: a deadlock (one of them answered 503).
    """
    found = (
        await session.execute(
            select(Project.id).where(Project.id == project_id).with_for_update(key_share=True)
        )
    ).scalar_one_or_none()
    return found is not None


async def touch(session: AsyncSession, project_id: int) -> None:
    """Record a change to the project (membership): new version, new ETag."""
    await session.execute(
        update(Project)
        .where(Project.id == project_id)
        .values(version=Project.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def is_member(session: AsyncSession, project_id: int, user_id: int) -> bool:
    found = await session.execute(
        select(ProjectMember.user_id).where(
            ProjectMember.project_id == project_id, ProjectMember.user_id == user_id
        )
    )
    return found.first() is not None


async def member_ids(session: AsyncSession, project_id: int) -> list[int]:
    """The ids of the project's members."""
    rows = await session.scalars(
        select(ProjectMember.user_id).where(ProjectMember.project_id == project_id)
    )
    return list(rows.all())


async def list_members(
    session: AsyncSession, project_id: int, window: Window
) -> tuple[list[MemberRow], int]:
    """A page of the project's members, by user id, and how many there are."""
    of_project = ProjectMember.project_id == project_id
    total = await count_rows(session, ProjectMember, of_project)
    stmt = keyset_select(
        select(ProjectMember.user_id, User.username, ProjectMember.role, ProjectMember.version)
        .join(User, User.id == ProjectMember.user_id)
        .where(of_project),
        window,
        ProjectMember.__table__.c.user_id,
    )
    rows = (await session.execute(stmt)).all()
    return [MemberRow(row[0], row[1], row[2], row[3]) for row in rows], total


async def get_member(session: AsyncSession, project_id: int, user_id: int) -> MemberRow | None:
    row = (
        await session.execute(
            select(ProjectMember.user_id, User.username, ProjectMember.role, ProjectMember.version)
            .join(User, User.id == ProjectMember.user_id)
            .where(ProjectMember.project_id == project_id, ProjectMember.user_id == user_id)
        )
    ).one_or_none()
    return None if row is None else MemberRow(row[0], row[1], row[2], row[3])


async def count_owners(session: AsyncSession, project_id: int) -> int:
    return await count_rows(
        session,
        ProjectMember,
        ProjectMember.project_id == project_id,
        ProjectMember.role == "owner",
    )


async def find_active_user(
    session: AsyncSession, *, user_id: int | None, username: str | None
) -> tuple[int, str] | None:
    """An active user by id or (case-insensitively) by username."""
    stmt = select(User.id, User.username).where(User.is_active.is_(True))
    if user_id is not None:
        stmt = stmt.where(User.id == user_id)
    else:
        assert username is not None
        stmt = stmt.where(User.username == normalize_username(username))
    row = (await session.execute(stmt)).one_or_none()
    return None if row is None else (row[0], row[1])


async def add_member(session: AsyncSession, project_id: int, user_id: int, role: str) -> None:
    session.add(ProjectMember(project_id=project_id, user_id=user_id, role=role))
    await session.flush()


def _membership(
    project_id: int, user_id: int, expected_versions: Collection[int] | None
) -> list[ColumnElement[bool]]:
    """One membership, at one of ``expected_versions`` (``If-Match``; None: any)."""
    where = [ProjectMember.project_id == project_id, ProjectMember.user_id == user_id]
    where += at_version(ProjectMember.version, expected_versions)
    return where


async def set_role(
    session: AsyncSession,
    project_id: int,
    user_id: int,
    role: str,
    *,
    expected_versions: Collection[int] | None,
) -> int | None:
    """Compare-and-set role change; the membership's new version, or None if nothing matched."""
    result = await session.execute(
        update(ProjectMember)
        .where(*_membership(project_id, user_id, expected_versions))
        .values(role=role)
        .returning(ProjectMember.version)
        .execution_options(synchronize_session=False)
    )
    return result.scalar_one_or_none()


async def remove_member(
    session: AsyncSession,
    project_id: int,
    user_id: int,
    *,
    expected_versions: Collection[int] | None,
) -> bool:
    """Compare-and-set removal; False if nothing matched."""
    result = await session.execute(
        delete(ProjectMember)
        .where(*_membership(project_id, user_id, expected_versions))
        .returning(ProjectMember.user_id)
        .execution_options(synchronize_session=False)
    )
    return result.scalar_one_or_none() is not None


@dataclass(frozen=True, slots=True)
class Membership:
    """One of a user's memberships, with its project's head counts."""

    project_id: int
    role: str
    members: int
    owners: int


async def lock_memberships_of(session: AsyncSession, user_id: int) -> list[Membership]:
    """The user's memberships with head counts, their projects locked (in id order, and
    ``FOR NO KEY UPDATE`` as in ``lock``) first, so no membership change on them can
    interleave."""
    mine = select(ProjectMember.project_id).where(ProjectMember.user_id == user_id)
    await session.execute(
        select(Project.id)
        .where(Project.id.in_(mine))
        .order_by(Project.id)
        .with_for_update(key_share=True)
    )
    others = ProjectMember.__table__.alias("others")
    members = (
        select(func.count())
        .where(others.c.project_id == ProjectMember.project_id)
        .scalar_subquery()
    )
    owners = (
        select(func.count())
        .where(others.c.project_id == ProjectMember.project_id, others.c.role == "owner")
        .scalar_subquery()
    )
    rows = (
        await session.execute(
            select(ProjectMember.project_id, ProjectMember.role, members, owners)
            .where(ProjectMember.user_id == user_id)
            .order_by(ProjectMember.project_id)
        )
    ).all()
    return [Membership(row[0], row[1], row[2], row[3]) for row in rows]


async def delete_projects(session: AsyncSession, project_ids: Collection[int]) -> None:
    """Delete projects with their tasks, comments and memberships (FK cascades)."""
    if project_ids:
        await session.execute(
            delete(Project)
            .where(Project.id.in_(project_ids))
            .execution_options(synchronize_session=False)
        )


async def delete_memberships_of(session: AsyncSession, user_id: int) -> None:
    """Before an account is deleted: its memberships go now, not with the user row at the
    end, so a task write assigning the user waits for this and then finds no member (422),
    or commits first and is unassigned by ``tasks.forget_user`` after this."""
    await session.execute(
        delete(ProjectMember)
        .where(ProjectMember.user_id == user_id)
        .execution_options(synchronize_session=False)
    )
