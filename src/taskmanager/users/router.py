"""``/users``: registration, the caller's own account, and administration."""

from __future__ import annotations

from typing import Any

from fastapi import Response, status

from taskmanager.kit.deps import (
    AdminPrincipal,
    CurrentPrincipal,
    ListingDep,
    LoginPrincipal,
    SessionDep,
    SettingsDep,
)
from taskmanager.kit.errors import (
    Conflict,
    Forbidden,
    InvalidCredentials,
    MalformedRequest,
    NotAuthenticated,
    NotFound,
    PreconditionFailed,
    RateLimited,
    ServiceUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from taskmanager.kit.etags import expected_versions, strong_etag
from taskmanager.kit.http import (
    ETAG_HEADER,
    IfMatch,
    UserId,
    created_responses,
    domain_router,
    list_responses,
    versioned_responses,
)
from taskmanager.kit.problems import problem_responses
from taskmanager.models.users import User
from taskmanager.users import service
from taskmanager.users.schemas import (
    AccountDeletion,
    CurrentUserOut,
    PasswordChange,
    UserAdminUpdate,
    UserCreate,
    UserOut,
    UserPage,
    UserPublic,
    UserUpdateMe,
)

router = domain_router("users", prefix="/users")


def _tag(user: User, response: Response, *, public: bool = False) -> None:
    """The account's ETag: ``"<id>-<version>"`` for the full record (the same on /users/me
    and /users/{id}); ``"<id>-<version>-public"`` for ``{id, username}``. A strong ETag names
    one representation (RFC 9110 §8.8.3): a caller whose view widens (made an admin) must not
    be told by a 304 that its ``{id, username}`` copy is the current full record."""
    response.headers["ETag"] = strong_etag(user.id, user.version, "public" if public else "")


# Step-up routes: a 401 also means the current password was wrong.
_WRONG_CURRENT_PASSWORD: dict[int | str, dict[str, Any]] = {
    401: problem_responses(InvalidCredentials)[401]
    | {"description": "Not authenticated, or the current password is wrong"}
}
# Changing or deleting one's own account (step-up; 409 for a taken name or a last owner).
_ACCOUNT_CHANGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **problem_responses(
        NotAuthenticated,
        Forbidden,
        Conflict,
        MalformedRequest,
        UnsupportedMediaType,
        ValidationFailed,
        ServiceUnavailable,
        PreconditionFailed,
    ),
    **_WRONG_CURRENT_PASSWORD,
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    summary="Register a user",
    responses=created_responses(
        Forbidden,
        Conflict,
        MalformedRequest,
        UnsupportedMediaType,
        ValidationFailed,
        RateLimited,
        ServiceUnavailable,
    ),
)
async def create(body: UserCreate, session: SessionDep, settings: SettingsDep) -> UserOut:
    """Create an account (with its Inbox project); 403 when registration is disabled."""
    user = await service.register(session, body, allow_registration=settings.allow_registration)
    return UserOut.model_validate(user)


@router.get(
    "/me",
    response_model=CurrentUserOut,
    summary="Get the current user",
    responses=problem_responses(NotAuthenticated),
)
async def get_me(
    principal: CurrentPrincipal, session: SessionDep, response: Response
) -> CurrentUserOut:
    """The account the credential belongs to, with its Inbox project's id and ETag."""
    user, inbox_id = await service.me(session, principal.user_id)
    _tag(user, response)
    return CurrentUserOut.model_validate(
        {**UserOut.model_validate(user).model_dump(), "inbox_project_id": inbox_id}
    )


@router.patch(
    "/me",
    response_model=UserOut,
    summary="Update the current user",
    responses={200: {"headers": ETAG_HEADER}, **_ACCOUNT_CHANGE_RESPONSES},
)
async def update_me(
    body: UserUpdateMe,
    principal: LoginPrincipal,
    session: SessionDep,
    response: Response,
    if_match: IfMatch = None,
) -> UserOut:
    """Change the caller's email or username; ``current_password`` is required (401 if wrong).

    Login identifiers: not with an API key. A stale If-Match → 412.
    """
    user = await service.update_me(
        session,
        principal.user_id,
        body,
        expected_versions=expected_versions(if_match, principal.user_id),
    )
    _tag(user, response)
    return UserOut.model_validate(user)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete the current user's account",
    responses=_ACCOUNT_CHANGE_RESPONSES,
)
async def delete_me(
    body: AccountDeletion,
    principal: LoginPrincipal,
    session: SessionDep,
    if_match: IfMatch = None,
) -> Response:
    """Delete the account (``current_password`` required, 401 if wrong) with its Inbox and the
    projects only it belongs to; 409 while it is the last owner of a project with others;
    412 for a stale If-Match."""
    await service.delete_me(
        session,
        principal.user_id,
        body.current_password,
        expected_versions=expected_versions(if_match, principal.user_id),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Change the current user's password",
    responses={
        **problem_responses(
            NotAuthenticated,
            Forbidden,
            MalformedRequest,
            UnsupportedMediaType,
            ValidationFailed,
            ServiceUnavailable,
        ),
        **_WRONG_CURRENT_PASSWORD,
    },
)
async def change_password(
    body: PasswordChange, principal: LoginPrincipal, session: SessionDep
) -> Response:
    """Replace the password; every session of the account ends (refresh tokens revoked,
    access tokens issued before stop working). API keys keep working."""
    await service.change_password(session, principal.user_id, body)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "",
    response_model=UserPage,
    summary="List users (admin)",
    responses=list_responses(NotAuthenticated, Forbidden, ValidationFailed),
)
async def list_(_admin: AdminPrincipal, session: SessionDep, listing: ListingDep) -> UserPage:
    """Every account, ordered by id; administrators only."""
    result = await service.list_users(session, listing.page, signing_key=listing.signing_key)
    return listing.page_of(UserPage, result, UserOut.model_validate)


@router.patch(
    "/{user_id}",
    response_model=UserOut,
    summary="Change a user's role or activity (admin)",
    responses=versioned_responses(
        NotAuthenticated,
        Forbidden,
        NotFound,
        Conflict,
        PreconditionFailed,
        MalformedRequest,
        UnsupportedMediaType,
        ValidationFailed,
    ),
)
async def update(
    user_id: UserId,
    body: UserAdminUpdate,
    _admin: AdminPrincipal,
    session: SessionDep,
    response: Response,
    if_match: IfMatch = None,
) -> UserOut:
    """Promote, demote, deactivate or reactivate; a deactivated user is locked out at once.
    A stale If-Match → 412."""
    user = await service.admin_update(
        session, user_id, body, expected_versions=expected_versions(if_match, user_id)
    )
    _tag(user, response)
    return UserOut.model_validate(user)


@router.get(
    "/{user_id}",
    response_model=UserOut | UserPublic,
    summary="Get a user",
    responses=problem_responses(NotAuthenticated, NotFound, ValidationFailed),
)
async def get(
    user_id: UserId, principal: CurrentPrincipal, session: SessionDep, response: Response
) -> Any:
    """``{id, username}`` to users who share a project with that user; the full record to
    administrators and to the user themselves; 404 for anyone else. The ETag is the
    account's, as on /users/me, with ``-public`` for the ``{id, username}`` form."""
    access = await service.profile(session, principal, user_id)
    user = access.row.User
    _tag(user, response, public=not access.full)
    if access.full:
        return UserOut.model_validate(user)
    return UserPublic(id=user.id, username=user.username)
