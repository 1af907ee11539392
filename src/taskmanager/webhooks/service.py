"""Webhooks: the caller's subscriptions, their secrets and their delivery log (API.md §7).

A webhook belongs to the user who created it and only they see or manage it (anyone
else's is not found). Secrets are shown once, at creation and rotation, and stored
encrypted (``webhooks.crypto``). Targets pass the SSRF rules (``webhooks.targets``) here,
when they are set, and again at every delivery.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.config import Settings
from taskmanager.kit.db import utcnow
from taskmanager.kit.errors import Conflict, NotFound, ValidationFailed
from taskmanager.kit.etags import require_version
from taskmanager.kit.identity import Principal
from taskmanager.kit.pagination import KeysetList, ListPage, PageRequest
from taskmanager.models.webhooks import DeliveryStatus, Webhook, WebhookDelivery
from taskmanager.projects.access import project_access
from taskmanager.projects.policy import Permission
from taskmanager.webhooks import repository
from taskmanager.webhooks.crypto import SecretBox, generate_secret
from taskmanager.webhooks.payloads import PING, ping_body
from taskmanager.webhooks.schemas import WebhookCreate, WebhookPatch
from taskmanager.webhooks.targets import (
    Resolver,
    TargetRefused,
    TargetUnresolved,
    parse_target,
    resolve_checked,
    system_resolver,
)

# After a rotation the previous secret signs beside the new one for this long (API.md §7).
PREVIOUS_SECRET_GRACE = timedelta(hours=24)
INVALID_TARGET = "invalid_webhook_target"
_WEBHOOKS: KeysetList[Webhook] = KeysetList(
    b"taskmanager/webhooks/cursor/v1", row_id=lambda w: w.id
)
_DELIVERIES: KeysetList[WebhookDelivery] = KeysetList(
    b"taskmanager/webhook-deliveries/cursor/v1", row_id=lambda d: d.id
)


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """What the SSRF check needs: the setting, and how names are resolved."""

    allow_private: bool
    resolver: Resolver = system_resolver


def not_found(webhook_id: int) -> NotFound:
    return NotFound(f"Webhook {webhook_id} not found")


async def check_target(url: str, policy: TargetPolicy) -> str:
    """The URL if it is an allowed target; ValidationFailed (422, ``body.url``) if not.

    A name that cannot be resolved now is accepted (it may be set up later; each delivery
    checks again); a name that resolves to a refused address is not.
    """
    try:
        target = parse_target(url)
        await resolve_checked(target, allow_private=policy.allow_private, resolver=policy.resolver)
    except TargetUnresolved:
        return url
    except TargetRefused as exc:
        raise ValidationFailed.field(("body", "url"), str(exc), INVALID_TARGET) from None
    return url


async def _own(
    session: AsyncSession, principal: Principal, webhook_id: int, *, for_update: bool = False
) -> Webhook:
    webhook = await repository.get_for_owner(
        session, principal.user_id, webhook_id, for_update=for_update
    )
    if webhook is None:
        raise not_found(webhook_id)
    return webhook


async def create(
    session: AsyncSession,
    principal: Principal,
    data: WebhookCreate,
    *,
    settings: Settings,
    policy: TargetPolicy,
) -> tuple[Webhook, str]:
    """A new webhook and its secret (not stored in plain text; cannot be shown again).

    Raises NotFound for a ``project_id`` the caller cannot see, ValidationFailed for a
    refused target.
    """
    if data.project_id is not None:
        await project_access(session, principal, data.project_id, Permission.VIEW)
    url = await check_target(data.url, policy)
    secret = generate_secret()
    now = utcnow()
    webhook = Webhook(
        owner_id=principal.user_id,
        project_id=data.project_id,
        url=url,
        events=[str(event) for event in data.events],
        description=data.description,
        secret_encrypted=SecretBox(settings.signing_key).seal(secret),
        created_at=now,
        updated_at=now,
    )
    return await repository.add(session, webhook), secret


async def list_webhooks(
    session: AsyncSession, principal: Principal, page: PageRequest, *, signing_key: str
) -> ListPage[Webhook]:
    """A page of the caller's webhooks, oldest first."""
    return await _WEBHOOKS.page(
        page,
        lambda window: repository.list_for_owner(session, principal.user_id, window),
        key=signing_key,
        scope={"owner_id": principal.user_id},
    )


async def get(session: AsyncSession, principal: Principal, webhook_id: int) -> Webhook:
    """One of the caller's webhooks; anyone else's is not found."""
    return await _own(session, principal, webhook_id)


async def update(
    session: AsyncSession,
    principal: Principal,
    webhook_id: int,
    patch: WebhookPatch,
    *,
    policy: TargetPolicy,
    expected_versions: Collection[int] | None = None,
) -> Webhook:
    """Apply a PATCH. ``active: true`` re-enables a disabled webhook and forgets why it was
    disabled and its run of failures; ``active: false`` pauses it (nothing is queued for it
    meanwhile, and its pending attempts wait).

    PreconditionFailed unless the webhook is at one of ``expected_versions`` (``If-Match``),
    compared on the row this transaction has locked (``FOR UPDATE``; SQLite's writers run
    one at a time), so it holds until the write.
    """
    webhook = await _own(session, principal, webhook_id, for_update=True)
    require_version(webhook.version, expected_versions, "webhook")
    changes: dict[str, Any] = patch.changes()
    if "url" in changes:
        webhook.url = await check_target(changes["url"], policy)
    if "events" in changes:
        webhook.events = [str(event) for event in changes["events"]]
    if "description" in changes:
        webhook.description = changes["description"]
    if "active" in changes:
        if changes["active"] and not webhook.active:
            webhook.disabled_reason = None
            webhook.failing_since = None
        webhook.active = changes["active"]
    if session.is_modified(webhook):
        # Only a change moves updated_at (and, with the UPDATE, the version): writing the
        # values it already has keeps the ETag (API.md §6).
        webhook.updated_at = utcnow()
    await session.flush()
    return webhook


async def delete(
    session: AsyncSession,
    principal: Principal,
    webhook_id: int,
    *,
    expected_versions: Collection[int] | None = None,
) -> None:
    """Delete a webhook and its delivery log; nothing more is sent to it. PreconditionFailed
    unless it is at one of ``expected_versions`` (``If-Match``; compared as in ``update``)."""
    webhook = await _own(session, principal, webhook_id, for_update=True)
    require_version(webhook.version, expected_versions, "webhook")
    await repository.delete(session, webhook)


async def rotate_secret(
    session: AsyncSession, principal: Principal, webhook_id: int, *, settings: Settings
) -> tuple[Webhook, str]:
    """A new secret (returned once); the previous one keeps signing beside it for 24 hours,
    so receivers can switch without losing a delivery (Standard Webhooks: several
    space-separated signatures)."""
    webhook = await _own(session, principal, webhook_id, for_update=True)
    box = SecretBox(settings.signing_key)
    secret = generate_secret()
    now = utcnow()
    webhook.previous_secret_encrypted = webhook.secret_encrypted
    webhook.previous_secret_expires_at = now + PREVIOUS_SECRET_GRACE
    webhook.secret_encrypted = box.seal(secret)
    webhook.updated_at = now
    await session.flush()
    return webhook, secret


def _refuse_inactive(webhook: Webhook) -> None:
    if not webhook.active:
        raise Conflict(
            f'Webhook {webhook.id} is disabled; re-enable it with PATCH {{"active": true}} first'
        )


async def _queue(
    session: AsyncSession,
    webhook: Webhook,
    event_id: str,
    event_type: str,
    payload: str,
    now: datetime,
) -> WebhookDelivery:
    """A pending first attempt at an event, due now, on a fresh retry schedule."""
    return await repository.add_delivery(
        session,
        WebhookDelivery(
            webhook_id=webhook.id,
            event_id=event_id,
            event_type=event_type,
            payload=payload,
            attempt=1,
            status=DeliveryStatus.PENDING,
            created_at=now,
            next_attempt_at=now,
        ),
    )


async def ping(session: AsyncSession, principal: Principal, webhook_id: int) -> WebhookDelivery:
    """Queue a ``webhook.ping`` event for the webhook (Conflict if it is disabled)."""
    webhook = await _own(session, principal, webhook_id)
    _refuse_inactive(webhook)
    now = utcnow()
    event_id = f"ping_{secrets.token_hex(12)}"
    body = ping_body(
        event_id,
        webhook_id=webhook.id,
        url=webhook.url,
        project_id=webhook.project_id,
        actor_id=principal.user_id,
        occurred_at=now,
    )
    return await _queue(session, webhook, event_id, PING, body, now)


async def list_deliveries(
    session: AsyncSession,
    principal: Principal,
    webhook_id: int,
    page: PageRequest,
    *,
    signing_key: str,
) -> ListPage[WebhookDelivery]:
    """A page of the webhook's delivery attempts, newest first."""
    await _own(session, principal, webhook_id)
    return await _DELIVERIES.page(
        page,
        lambda window: repository.list_deliveries(session, webhook_id, window),
        key=signing_key,
        scope={"webhook_id": webhook_id},
    )


async def redeliver(
    session: AsyncSession, principal: Principal, webhook_id: int, delivery_id: int
) -> WebhookDelivery:
    """Queue a new attempt at a logged delivery's event: the same body and ``webhook-id``,
    attempt 1 of a fresh retry schedule. Conflict if the webhook is disabled."""
    webhook = await _own(session, principal, webhook_id)
    original = await repository.get_delivery(session, webhook_id, delivery_id)
    if original is None:
        raise NotFound(f"Delivery {delivery_id} not found")
    _refuse_inactive(webhook)
    return await _queue(
        session, webhook, original.event_id, original.event_type, original.payload, utcnow()
    )
