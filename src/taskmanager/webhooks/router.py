"""``/webhooks``: the caller's webhooks, their secrets and delivery log (API.md §7).

Managed with a login token only, like API keys: a webhook is a standing channel that sends
the owner's project events to any URL, and its secret is a credential.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Response, status

from taskmanager.kit.deps import ListingDep, LoginPrincipal, SessionDep, SettingsDep
from taskmanager.kit.errors import (
    Conflict,
    Forbidden,
    MalformedRequest,
    NotAuthenticated,
    NotFound,
    PreconditionFailed,
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
    location,
    versioned_responses,
)
from taskmanager.kit.problems import problem_responses
from taskmanager.models.webhooks import Webhook
from taskmanager.webhooks import service
from taskmanager.webhooks.schemas import (
    DeliveryOut,
    DeliveryPage,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookPage,
    WebhookPatch,
)

router = domain_router("webhooks", prefix="/webhooks")

WebhookId = Annotated[int, id_path("webhook")]
DeliveryId = Annotated[int, id_path("delivery")]

_ERRORS = (NotAuthenticated, Forbidden, NotFound, ValidationFailed)
_NO_STORE = {
    "Cache-Control": {
        "description": "`no-store`: the answer carries a secret",
        "schema": {"type": "string"},
    }
}


def _policy(settings: Any) -> service.TargetPolicy:
    return service.TargetPolicy(allow_private=settings.webhook_allow_private_targets)


def _created(webhook: Any, secret: str) -> WebhookCreated:
    return WebhookCreated.model_validate(
        {**WebhookOut.model_validate(webhook).model_dump(), "secret": secret}
    )


def _versioned(webhook: Webhook, response: Response) -> WebhookOut:
    """The webhook, with its ETag ``"<id>-<version>"`` on ``response``."""
    response.headers["ETag"] = strong_etag(webhook.id, webhook.version)
    return WebhookOut.model_validate(webhook)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a webhook",
    responses=created_responses(
        *_ERRORS, MalformedRequest, UnsupportedMediaType, headers=_NO_STORE
    ),
)
async def create(
    body: WebhookCreate,
    principal: LoginPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> WebhookCreated:
    """Subscribe a URL to events; the signing ``secret`` is in this response only.

    422 for a target that is not http(s) or leads to a private, loopback or link-local
    address; 404 for a ``project_id`` you cannot see.
    """
    webhook, secret = await service.create(
        session, principal, body, settings=settings, policy=_policy(settings)
    )
    response.headers["Location"] = location("webhooks", webhook.id)
    response.headers["Cache-Control"] = "no-store"
    return _created(webhook, secret)


@router.get(
    "",
    summary="List your webhooks",
    responses=list_responses(*_ERRORS),
)
async def list_(principal: LoginPrincipal, session: SessionDep, listing: ListingDep) -> WebhookPage:
    """The caller's webhooks, oldest first (never their secrets)."""
    result = await service.list_webhooks(
        session, principal, listing.page, signing_key=listing.signing_key
    )
    return listing.page_of(WebhookPage, result, WebhookOut.model_validate)


@router.get("/{webhook_id}", summary="Get a webhook", responses=problem_responses(*_ERRORS))
async def get(
    webhook_id: WebhookId, principal: LoginPrincipal, session: SessionDep, response: Response
) -> WebhookOut:
    """One of the caller's webhooks, with its ETag; anyone else's is not found."""
    return _versioned(await service.get(session, principal, webhook_id), response)


@router.patch(
    "/{webhook_id}",
    summary="Change a webhook",
    responses=versioned_responses(
        *_ERRORS, PreconditionFailed, MalformedRequest, UnsupportedMediaType
    ),
)
async def update(
    webhook_id: WebhookId,
    body: WebhookPatch,
    principal: LoginPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    if_match: IfMatch = None,
) -> WebhookOut:
    """Change the URL, events, description, or ``active`` (``true`` re-enables a webhook the
    server disabled). A stale If-Match → 412."""
    webhook = await service.update(
        session,
        principal,
        webhook_id,
        body,
        policy=_policy(settings),
        expected_versions=expected_versions(if_match, webhook_id),
    )
    return _versioned(webhook, response)


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a webhook",
    responses=problem_responses(*_ERRORS, PreconditionFailed),
)
async def delete(
    webhook_id: WebhookId,
    principal: LoginPrincipal,
    session: SessionDep,
    if_match: IfMatch = None,
) -> Response:
    """Delete the webhook and its delivery log; nothing more is sent. A stale If-Match → 412."""
    await service.delete(
        session, principal, webhook_id, expected_versions=expected_versions(if_match, webhook_id)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{webhook_id}/rotate-secret",
    summary="Rotate a webhook's secret",
    responses={200: {"headers": _NO_STORE}, **problem_responses(*_ERRORS)},
)
async def rotate_secret(
    webhook_id: WebhookId,
    principal: LoginPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> WebhookCreated:
    """A new signing secret, shown this once. For 24 hours deliveries carry signatures with
    both the new and the previous secret, so receivers can switch without a gap."""
    webhook, secret = await service.rotate_secret(session, principal, webhook_id, settings=settings)
    response.headers["Cache-Control"] = "no-store"
    return _created(webhook, secret)


@router.post(
    "/{webhook_id}/ping",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a test event",
    responses=problem_responses(*_ERRORS, Conflict),
)
async def ping(
    webhook_id: WebhookId, principal: LoginPrincipal, session: SessionDep
) -> DeliveryOut:
    """Queue a ``webhook.ping`` event; the answer is its pending delivery. 409 if the webhook
    is disabled."""
    return DeliveryOut.model_validate(await service.ping(session, principal, webhook_id))


@router.get(
    "/{webhook_id}/deliveries",
    summary="List a webhook's delivery attempts",
    responses=list_responses(*_ERRORS),
)
async def list_deliveries(
    webhook_id: WebhookId, principal: LoginPrincipal, session: SessionDep, listing: ListingDep
) -> DeliveryPage:
    """Every attempt, newest first: status, the target's HTTP status, duration and error."""
    result = await service.list_deliveries(
        session, principal, webhook_id, listing.page, signing_key=listing.signing_key
    )
    return listing.page_of(DeliveryPage, result, DeliveryOut.model_validate)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Redeliver an event",
    responses=problem_responses(*_ERRORS, Conflict),
)
async def redeliver(
    webhook_id: WebhookId, delivery_id: DeliveryId, principal: LoginPrincipal, session: SessionDep
) -> DeliveryOut:
    """Queue a new attempt at that delivery's event (same body and ``webhook-id``, a fresh
    retry schedule); the answer is the new pending attempt. 409 if the webhook is disabled."""
    delivery = await service.redeliver(session, principal, webhook_id, delivery_id)
    return DeliveryOut.model_validate(delivery)
