"""Project and membership rules. Raises domain errors; knows nothing of HTTP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.errors import Conflict, NotFound, PreconditionFailed
from taskmanager.kit.etags import require_version, stale
from taskmanager.kit.identity import Principal
from taskmanager.kit.outbox import EventType, record
from taskmanager.kit.pagination import KeysetList, ListPage, PageRequest, Window
from taskmanager.kit.storage import discard_attachments
from taskmanager.models.projects import Project, ProjectRole
from taskmanager.projects import repository
from taskmanager.projects.access import project_access, project_not_found
from taskmanager.projects.policy import Permission
from taskmanager.projects.repository import MemberRow
from taskmanager.projects.schemas import MemberOut, ProjectOut


def project_data(project: Project) -> dict[str, Any]:
    """A project as its events show it: ``ProjectOut`` without the viewer's ``role``."""
    return ProjectOut.of(project, None).model_dump(mode="json", exclude={"role"})


def member_data(member: MemberRow) -> dict[str, Any]:
    """A membership as the API shows it (``MemberOut``)."""
    return MemberOut.model_validate(member).model_dump(mode="json")


async def _record_member(
    session: AsyncSession,
    type: EventType,
    project_id: int,
    actor_id: int,
    member: MemberRow,
    *,
    also_notify: tuple[int, ...] = (),
    changed: list[str] | None = None,
) -> None:
    await record(
        session,
        type=type,
        project_id=project_id,
        actor_id=actor_id,
        data=member_data(member),
        changed=changed,
        also_notify=also_notify,
    )


# What a member's departure changes in the domains built on projects (the tasks assigned to
# them there: tasks.service.unassign_member). Those domains import projects, so projects
# cannot import them: each registers here as it is imported (the app imports them all).
# Called as (session, project_id, user_id, actor_id) in the removal's transaction.
MemberDeparture = Callable[[AsyncSession, int, int, int], Awaitable[None]]
_departures: list[MemberDeparture] = []


def on_member_departure(handler: MemberDeparture) -> MemberDeparture:
    """Run ``handler`` whenever a member is removed from a project or leaves it (after the
    membership is gone and ``member.removed`` is recorded, in the same transaction).
    Registering the same handler again changes nothing. Returns it (usable as a decorator)."""
    if handler not in _departures:
        _departures.append(handler)
    return handler


@dataclass(frozen=True, slots=True)
class ProjectView:
    """A project as one caller sees it: the row plus the caller's role (None: admin outsider)."""

    project: Project
    role: str | None


# Each list names itself in its cursors' signatures, so no other list's cursor is accepted.
_PROJECTS: KeysetList[ProjectView] = KeysetList(
    b"taskmanager/projects/cursor/v1", row_id=lambda view: view.project.id
)
_MEMBERS: KeysetList[MemberRow] = KeysetList(
    b"taskmanager/members/cursor/v1", row_id=lambda member: member.user_id
)


async def _load(
    session: AsyncSession, principal: Principal, project_id: int, permission: Permission
) -> ProjectView:
    """The project if the caller holds ``permission`` on it; NotFound/Forbidden otherwise."""
    access = await project_access(session, principal, project_id, permission, load=[Project])
    assert access.row is not None
    return ProjectView(access.row.Project, access.role)


async def list_projects(
    session: AsyncSession, principal: Principal, page: PageRequest, *, signing_key: str
) -> ListPage[ProjectView]:
    """A page of the projects the caller is a member of, by id."""

    async def fetch(window: Window) -> tuple[list[ProjectView], int]:
        rows, total = await repository.list_for_member(session, principal.user_id, window)
        return [ProjectView(project, role) for project, role in rows], total

    return await _PROJECTS.page(page, fetch, key=signing_key)


async def create_project(
    session: AsyncSession, principal: Principal, *, name: str, description: str | None
) -> ProjectView:
    project = await repository.insert(
        session, name=name, description=description, owner_id=principal.user_id
    )
    return ProjectView(project, ProjectRole.OWNER.value)


async def get_project(session: AsyncSession, principal: Principal, project_id: int) -> ProjectView:
    return await _load(session, principal, project_id, Permission.VIEW)


async def update_project(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    values: dict[str, Any],
    expected_versions: Collection[int] | None,
) -> ProjectView:
    """Apply ``values`` (already validated) if the caller may manage the project, and if its
    version is one of ``expected_versions`` (``If-Match``; None: any). Raises NotFound,
    Forbidden, PreconditionFailed."""
    view = await _load(session, principal, project_id, Permission.MANAGE)
    before = {name: getattr(view.project, name) for name in values}
    updated = await repository.update_fields(
        session, project_id, values, expected_versions=expected_versions
    )
    if updated is None:
        raise stale("project")
    await record(
        session,
        type=EventType.PROJECT_UPDATED,
        project_id=project_id,
        actor_id=principal.user_id,
        data=project_data(updated),
        changed=[name for name, old in before.items() if getattr(updated, name) != old],
    )
    return ProjectView(updated, view.role)


async def _record_deleted(session: AsyncSession, project_ids: list[int], actor_id: int) -> None:
    """Before projects are deleted: a ``project.deleted`` event each, while the members (the
    audience) are still there, and their attachments' objects marked for removal. Their
    tasks, comments and memberships go with them, with no event each (README, "Events")."""
    for project_id in project_ids:
        await record(
            session,
            type=EventType.PROJECT_DELETED,
            project_id=project_id,
            actor_id=actor_id,
            data={"id": project_id},
        )
    await discard_attachments(session, project_ids=project_ids)


async def delete_project(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    *,
    expected_versions: Collection[int] | None,
) -> None:
    view = await _load(session, principal, project_id, Permission.MANAGE)
    if view.project.is_inbox:
        raise Conflict("An Inbox cannot be deleted")
    await _record_deleted(session, [project_id], principal.user_id)
    if not await repository.delete_project(
        session, project_id, expected_versions=expected_versions
    ):
        raise stale("project")


# --- members -------------------------------------------------------------------------------


async def list_members(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    page: PageRequest,
    *,
    signing_key: str,
) -> ListPage[MemberRow]:
    """A page of the project's members, by user id."""
    await _load(session, principal, project_id, Permission.VIEW)
    return await _MEMBERS.page(
        page,
        lambda window: repository.list_members(session, project_id, window),
        key=signing_key,
        scope={"project_id": project_id},
    )


async def get_member(
    session: AsyncSession, principal: Principal, project_id: int, user_id: int
) -> MemberRow:
    await _load(session, principal, project_id, Permission.VIEW)
    return await _require_member(session, project_id, user_id)


async def _load_for_membership_change(
    session: AsyncSession, principal: Principal, project_id: int, permission: Permission
) -> Project:
    """Lock the project, then read the caller's role under that lock.

    Reading the role after the lock matters: an owner demoted by a concurrent request
    must not still act as owner on the role it had before.
    """
    if not await repository.lock(session, project_id):
        raise project_not_found(project_id)
    return (await _load(session, principal, project_id, permission)).project


async def add_member(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    *,
    user_id: int | None,
    username: str | None,
    role: ProjectRole,
) -> MemberRow:
    project = await _load_for_membership_change(session, principal, project_id, Permission.MANAGE)
    if project.is_inbox:
        raise Conflict("An Inbox is personal; it cannot have other members")
    user = await repository.find_active_user(session, user_id=user_id, username=username)
    if user is None:
        raise NotFound("User not found")
    if await repository.is_member(session, project_id, user[0]):
        raise Conflict(f"User {user[0]} is already a member of project {project_id}")
    await repository.add_member(session, project_id, user[0], role.value)
    await repository.touch(session, project_id)
    member = MemberRow(user[0], user[1], role.value)
    # After the insert: the new member is in the audience of its own member.added.
    await _record_member(session, EventType.MEMBER_ADDED, project_id, principal.user_id, member)
    return member


async def _require_member(session: AsyncSession, project_id: int, user_id: int) -> MemberRow:
    member = await repository.get_member(session, project_id, user_id)
    if member is None:
        raise NotFound(f"User {user_id} is not a member of project {project_id}")
    return member


async def _ensure_owner_remains(session: AsyncSession, project_id: int, member: MemberRow) -> None:
    if member.role == ProjectRole.OWNER and await repository.count_owners(session, project_id) <= 1:
        raise Conflict("A project must keep at least one owner")


async def change_member_role(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    user_id: int,
    role: ProjectRole,
    *,
    expected_versions: Collection[int] | None = None,
) -> MemberRow:
    """Change a member's role (owners); the last owner cannot be demoted. Only while the
    membership is at one of ``expected_versions`` (``If-Match``), else PreconditionFailed."""
    await _load_for_membership_change(session, principal, project_id, Permission.MANAGE)
    member = await _require_member(session, project_id, user_id)
    # Read under the project's lock, which every membership change takes: the comparison
    # holds until the write (and decides an unchanged role's answer too).
    require_version(member.version, expected_versions, "membership")
    if member.role == role.value:
        return member
    if role is not ProjectRole.OWNER:
        await _ensure_owner_remains(session, project_id, member)
    version = await repository.set_role(
        session, project_id, user_id, role.value, expected_versions=expected_versions
    )
    if version is None:
        raise await _lost_member(session, project_id, user_id)
    await repository.touch(session, project_id)
    changed = MemberRow(member.user_id, member.username, role.value, version)
    await _record_member(
        session, EventType.MEMBER_UPDATED, project_id, principal.user_id, changed, changed=["role"]
    )
    return changed


async def _lost_member(session: AsyncSession, project_id: int, user_id: int) -> PreconditionFailed:
    """Why a compare-and-set on a membership matched no row: NotFound (raised) if it is gone,
    else the 412. Runs only on that failure path."""
    await _require_member(session, project_id, user_id)
    return stale("membership")


async def remove_member(
    session: AsyncSession,
    principal: Principal,
    project_id: int,
    user_id: int,
    *,
    expected_versions: Collection[int] | None = None,
) -> None:
    """Owners (and admins) remove anyone; any member may remove themselves (leave). Only
    while the membership is at one of ``expected_versions`` (``If-Match``)."""
    # Leaving needs no more than membership; removing someone else needs MANAGE.
    permission = Permission.VIEW if user_id == principal.user_id else Permission.MANAGE
    await _load_for_membership_change(session, principal, project_id, permission)
    member = await _require_member(session, project_id, user_id)
    require_version(member.version, expected_versions, "membership")
    await _ensure_owner_remains(session, project_id, member)
    if not await repository.remove_member(
        session, project_id, user_id, expected_versions=expected_versions
    ):
        raise await _lost_member(session, project_id, user_id)
    await repository.touch(session, project_id)
    # The removed member is no longer in the audience; it still hears of its removal.
    await _record_member(
        session,
        EventType.MEMBER_REMOVED,
        project_id,
        principal.user_id,
        member,
        also_notify=(user_id,),
    )
    for departure in _departures:
        await departure(session, project_id, user_id, principal.user_id)


# --- a member's account ends ---------------------------------------------------------------


async def release_member(session: AsyncSession, user_id: int) -> None:
    """Before a user's account is deleted: delete the projects only they belong to (their
    Inbox among them), mark the shared ones changed and delete their memberships.

    Raises Conflict while they are the last owner of a project that has other members:
    ownership must be handed over first (API.md §3).
    """
    memberships = await repository.lock_memberships_of(session, user_id)
    stranded = [
        m.project_id
        for m in memberships
        if m.role == ProjectRole.OWNER and m.owners <= 1 and m.members > 1
    ]
    if stranded:
        listed = ", ".join(str(project_id) for project_id in stranded)
        raise Conflict(
            f"You are the last owner of project(s) {listed}, which have other members: "
            "make someone else an owner, or remove the other members, first"
        )
    alone = [m.project_id for m in memberships if m.members == 1]
    await _record_deleted(session, alone, user_id)
    await repository.delete_projects(session, alone)
    for membership in memberships:
        if membership.members > 1:
            await repository.touch(session, membership.project_id)
            # The others hear of it; the membership goes below.
            member = await _require_member(session, membership.project_id, user_id)
            await _record_member(
                session, EventType.MEMBER_REMOVED, membership.project_id, user_id, member
            )
    await repository.delete_memberships_of(session, user_id)
