"""Accounts: registration, profile and password changes, deletion, and administration.

Changing the login identifiers and deleting the account need the current password again
(step-up), so a stolen access token alone cannot take the account over or destroy it.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.auth import service as auth
from taskmanager.comments import service as comments
from taskmanager.kit.errors import Conflict, Forbidden, NotFound, PreconditionFailed
from taskmanager.kit.etags import require_version, stale
from taskmanager.kit.fields import normalize_login
from taskmanager.kit.identity import Principal
from taskmanager.kit.outbox import credentials_changed
from taskmanager.kit.pagination import KeysetList, ListPage, PageRequest
from taskmanager.kit.security import hash_password
from taskmanager.models.users import User, UserRole
from taskmanager.projects import service as projects
from taskmanager.projects.access import UserAccess, user_access
from taskmanager.projects.inbox import create_inbox, inbox_id_of
from taskmanager.tasks import service as tasks
from taskmanager.users import repository
from taskmanager.users.schemas import PasswordChange, UserAdminUpdate, UserCreate, UserUpdateMe

LAST_ADMIN = "The last active administrator cannot be demoted, deactivated or deleted"
_USERS: KeysetList[User] = KeysetList(b"taskmanager/users/cursor/v1", row_id=lambda user: user.id)


async def create_user(session: AsyncSession, data: UserCreate, *, role: UserRole) -> User:
    """Create an account and its Inbox in the caller's transaction."""
    # Hashed before the first query, so the slow hash holds no database lock.
    password_hash = await hash_password(data.password)
    if await repository.taken(session, email=data.email, username=data.username, exclude_id=None):
        raise Conflict(repository.TAKEN)
    user = User(
        email=data.email,
        username=data.username,
        password_hash=password_hash,
        role=role.value,
        is_active=True,
    )
    session.add(user)
    # The unique indexes settle a race two registrations both won at the pre-check.
    await repository.flush_unique(session)
    await create_inbox(session, user.id)
    return user


async def register(session: AsyncSession, data: UserCreate, *, allow_registration: bool) -> User:
    if not allow_registration:
        raise Forbidden("Registration is disabled on this server")
    return await create_user(session, data, role=UserRole.USER)


async def get(session: AsyncSession, user_id: int) -> User:
    user = await repository.get(session, user_id)
    if user is None:
        raise NotFound(f"User {user_id} not found")
    return user


async def me(session: AsyncSession, user_id: int) -> tuple[User, int | None]:
    """The caller's account and the id of their Inbox project."""
    return await get(session, user_id), await inbox_id_of(session, user_id)


async def profile(session: AsyncSession, principal: Principal, user_id: int) -> UserAccess:
    """Another user as the caller may see them (``projects.access.user_access``): the full
    record for an admin or the user themselves, ``{id, username}`` for someone sharing a
    project with them, NotFound for anyone else."""
    return await user_access(session, principal, user_id, load=[User])


async def _lost(session: AsyncSession, user_id: int) -> PreconditionFailed:
    """Why a compare-and-set on a user matched no row: NotFound (raised) if the account is
    gone, else the 412. Runs only on that failure path."""
    await get(session, user_id)
    return stale("user")


async def update_me(
    session: AsyncSession,
    user_id: int,
    data: UserUpdateMe,
    *,
    expected_versions: Collection[int] | None = None,
) -> User:
    """Change the caller's email or username after checking ``current_password``.

    Raises InvalidCredentials (wrong password) before anything else is looked at, so the
    answer says nothing about which addresses are taken to a caller without the password;
    PreconditionFailed unless the account is at one of ``expected_versions`` (``If-Match``).
    """
    await auth.verify_current_password(session, user_id, data.current_password)
    changes = data.changes()
    user = await get(session, user_id)
    require_version(user.version, expected_versions, "user")
    if await repository.taken(
        session, email=data.email, username=data.username, exclude_id=user_id
    ):
        raise Conflict(repository.TAKEN)
    if not changes:
        return user
    updated = await repository.update_fields(
        session, user_id, changes, expected_versions=expected_versions
    )
    if updated is None:
        raise await _lost(session, user_id)
    return updated


async def change_password(session: AsyncSession, user_id: int, data: PasswordChange) -> None:
    """Replace the password and end every session (refresh and access tokens; not API keys)."""
    await auth.change_password(session, user_id, data.current_password, data.new_password)


async def list_users(
    session: AsyncSession, page: PageRequest, *, signing_key: str
) -> ListPage[User]:
    """A page of every account, by id (administrators only; the route checks)."""
    return await _USERS.page(page, lambda window: repository.page(session, window), key=signing_key)


async def delete_me(
    session: AsyncSession,
    user_id: int,
    current_password: str,
    *,
    expected_versions: Collection[int] | None = None,
) -> None:
    """Delete the caller's account after checking ``current_password``.

    Their Inbox and the projects only they belong to are deleted with it; the tasks and
    comments they leave in shared projects lose them (new versions, events). Raises
    InvalidCredentials (wrong password), Conflict while they are the last owner of a project
    with other members, or the last active administrator; PreconditionFailed unless the
    account is at one of ``expected_versions`` (``If-Match``), checked in the DELETE itself.
    """
    await auth.verify_current_password(session, user_id, current_password)
    user = await get(session, user_id)
    # Early, before projects are released: a stale ETag costs nothing more.
    require_version(user.version, expected_versions, "user")
    if user.role == UserRole.ADMIN.value:
        admin_ids = await repository.lock_active_admin_ids(session)
        if admin_ids == [user_id]:
            raise Conflict(LAST_ADMIN)
    await projects.release_member(session, user_id)
    # What survives in shared projects loses them, as changes with versions and events
    # (the foreign keys alone would null the columns silently).
    await tasks.forget_user(session, user_id)
    await comments.forget_author(session, user_id)
    if not await repository.delete_user(session, user_id, expected_versions=expected_versions):
        raise await _lost(session, user_id)
    credentials_changed(session, user_id)  # open WebSockets are checked again on commit


async def find_id(session: AsyncSession, login: str) -> int | None:
    """The id of the account whose username or email is ``login``, normalised as login
    normalises it (``kit.fields.normalize_login``)."""
    return await repository.id_by_login(session, normalize_login(login))


async def admin_update(
    session: AsyncSession,
    user_id: int,
    data: UserAdminUpdate,
    *,
    expected_versions: Collection[int] | None = None,
) -> User:
    """Change a user's role or activity; the last active administrator is kept.

    PreconditionFailed unless the user is at one of ``expected_versions`` (``If-Match``),
    compared on the row this transaction has locked (``FOR UPDATE``; SQLite's writers run
    one at a time), so it holds until the write.
    """
    # Admin rows are locked before the target, always in id order, so concurrent changes
    # queue instead of deadlocking and cannot together remove every administrator.
    admin_ids = await repository.lock_active_admin_ids(session)
    user = await repository.get_for_update(session, user_id)
    if user is None:
        raise NotFound(f"User {user_id} not found")
    require_version(user.version, expected_versions, "user")
    role = data.role if data.role is not None else UserRole(user.role)
    is_active = data.is_active if data.is_active is not None else user.is_active
    loses_admin = user.id in admin_ids and (role is not UserRole.ADMIN or not is_active)
    if loses_admin and len(admin_ids) <= 1:
        raise Conflict(LAST_ADMIN)
    if user.is_active != is_active:
        # Deactivation: API keys stop at once because every request re-checks is_active;
        # sessions end, so neither refresh tokens nor access tokens issued before a later
        # reactivation come back to life with it. Reactivation ends them again, for tokens
        # that might have been minted in between.
        await auth.end_sessions(session, user.id)
    elif user.role != role.value:
        # What the user may see changed (an administrator sees every project's events):
        # their open WebSockets are checked again on commit and take the new role.
        credentials_changed(session, user.id)
    user.role = role.value
    user.is_active = is_active
    await session.flush()
    return user
