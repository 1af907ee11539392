"""``/api-keys``: the caller's API keys. Managed with a login token only."""

from __future__ import annotations

from typing import Annotated

from fastapi import Response, status

from taskmanager.api_keys import service
from taskmanager.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut
from taskmanager.kit.deps import ListingDep, LoginPrincipal, SessionDep
from taskmanager.kit.errors import (
    Forbidden,
    InvalidCredentials,
    MalformedRequest,
    NotAuthenticated,
    NotFound,
    PreconditionFailed,
    ServiceUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from taskmanager.kit.etags import expected_versions, strong_etag
from taskmanager.kit.http import (
    IfMatch,
    created_responses,
    domain_router,
    id_path,
    list_responses,
)
from taskmanager.kit.problems import problem_responses

router = domain_router("api-keys", prefix="/api-keys")

KeyId = Annotated[int, id_path("key")]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    summary="Create an API key",
    responses={
        **created_responses(
            NotAuthenticated,
            Forbidden,
            MalformedRequest,
            UnsupportedMediaType,
            ValidationFailed,
            ServiceUnavailable,
        ),
        401: problem_responses(InvalidCredentials)[401]
        | {"description": "Not authenticated, or the current password is wrong"},
    },
)
async def create(
    body: ApiKeyCreate, principal: LoginPrincipal, session: SessionDep, response: Response
) -> ApiKeyCreated:
    """Mint a scoped key; the full key is in this response only, so store it now.

    ``current_password`` is required (401 if wrong): a key outlives every session.
    """
    key, secret = await service.create(session, principal, body)
    response.headers["Cache-Control"] = "no-store"
    return ApiKeyCreated.model_validate(
        {**ApiKeyOut.model_validate(key).model_dump(), "key": secret}
    )


@router.get(
    "",
    response_model=list[ApiKeyOut],
    summary="List your API keys",
    responses=list_responses(NotAuthenticated, Forbidden, ValidationFailed),
)
async def list_(
    principal: LoginPrincipal, session: SessionDep, listing: ListingDep
) -> list[ApiKeyOut]:
    """The caller's unrevoked keys, oldest first, never the secret: an array, paged by
    ``skip``/``limit`` or ``cursor`` with ``X-Total-Count`` and ``Link`` headers."""
    result = await service.list_keys(
        session, principal.user_id, listing.page, signing_key=listing.signing_key
    )
    return listing.items(result, ApiKeyOut.model_validate)


@router.get(
    "/{key_id}",
    response_model=ApiKeyOut,
    summary="Get an API key",
    responses=problem_responses(NotAuthenticated, Forbidden, NotFound, ValidationFailed),
)
async def get(
    key_id: KeyId, principal: LoginPrincipal, session: SessionDep, response: Response
) -> ApiKeyOut:
    """One of the caller's unrevoked keys (never the secret), with its ETag; anyone else's
    is not found. Each use of the key (``last_used_at``) is a new version."""
    key = await service.get(session, principal.user_id, key_id)
    response.headers["ETag"] = strong_etag(key.id, key.version)
    return ApiKeyOut.model_validate(key)


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Revoke an API key",
    responses=problem_responses(
        NotAuthenticated, Forbidden, NotFound, PreconditionFailed, ValidationFailed
    ),
)
async def delete(
    key_id: KeyId, principal: LoginPrincipal, session: SessionDep, if_match: IfMatch = None
) -> Response:
    """Revoke one of the caller's keys; it stops working at once. A stale If-Match → 412."""
    await service.revoke(
        session, principal.user_id, key_id, expected_versions=expected_versions(if_match, key_id)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
