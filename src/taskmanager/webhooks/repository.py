"""Webhook and delivery-log queries. Every webhook query is scoped to its owner."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter

from taskmanager.kit.pagination import Window, entity_page
from taskmanager.models.users import User
from taskmanager.models.webhooks import DeliveryStatus, Webhook, WebhookDelivery


async def add(session: AsyncSession, webhook: Webhook) -> Webhook:
    session.add(webhook)
    await session.flush()
    return webhook


def _mine(owner_id: int) -> ColumnElement[bool]:
    return Webhook.owner_id == owner_id


async def list_for_owner(
    session: AsyncSession, owner_id: int, window: Window
) -> tuple[Sequence[Webhook], int]:
    """A page of the owner's webhooks, oldest first, and how many there are."""
    return await entity_page(session, Webhook, window, _mine(owner_id))


async def get_for_owner(
    session: AsyncSession, owner_id: int, webhook_id: int, *, for_update: bool = False
) -> Webhook | None:
    stmt = select(Webhook).where(_mine(owner_id), Webhook.id == webhook_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def delete(session: AsyncSession, webhook: Webhook) -> None:
    await session.delete(webhook)
    await session.flush()


async def add_deliveries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert pending attempts (one statement for the whole batch)."""
    if rows:
        await session.execute(insert(WebhookDelivery), list(rows))


async def add_delivery(session: AsyncSession, delivery: WebhookDelivery) -> WebhookDelivery:
    session.add(delivery)
    await session.flush()
    return delivery


async def list_deliveries(
    session: AsyncSession, webhook_id: int, window: Window
) -> tuple[Sequence[WebhookDelivery], int]:
    """A page of the webhook's attempts, newest first, and how many there are."""
    of_webhook = WebhookDelivery.webhook_id == webhook_id
    return await entity_page(session, WebhookDelivery, window, of_webhook, descending=True)


async def get_delivery(
    session: AsyncSession, webhook_id: int, delivery_id: int
) -> WebhookDelivery | None:
    return (
        await session.execute(
            select(WebhookDelivery).where(
                WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.id == delivery_id
            )
        )
    ).scalar_one_or_none()


# ---- fan-out and delivery (background work; no caller to scope to) ---------------------------


async def subscriptions_for(
    session: AsyncSession,
    *,
    event_types: Collection[str],
    project_ids: Collection[int],
    member_ids: Collection[int],
) -> Sequence[tuple[Webhook, bool]]:
    """The active webhooks of active owners that a round's events may concern, with whether
    the owner is an administrator; one query.

    Concerned are a webhook bound to one of ``project_ids`` whose owner is one of
    ``member_ids`` or an administrator, and a webhook without a project whose owner is one of
    ``member_ids`` (the events' audiences). Nothing else is read, however many webhooks
    exist. The ids are rendered into the SQL as integer literals: an audience can be larger
    than a driver's bind-parameter limit (32,767 on asyncpg and SQLite).

    Filtered to ``event_types`` in Python: the JSON list column has no portable
    containment operator.
    """
    if not member_ids and not project_ids:
        return []
    members: BindParameter[list[int]] = bindparam(
        "member_ids", sorted(member_ids), expanding=True, literal_execute=True
    )
    projects: BindParameter[list[int]] = bindparam(
        "project_ids", sorted(project_ids), expanding=True, literal_execute=True
    )
    owner_is_admin = User.role == "admin"
    rows = (
        await session.execute(
            select(Webhook, owner_is_admin)
            .join(User, User.id == Webhook.owner_id)
            .where(
                Webhook.active,
                User.is_active,
                or_(
                    and_(Webhook.project_id.is_(None), Webhook.owner_id.in_(members)),
                    and_(
                        Webhook.project_id.in_(projects),
                        or_(Webhook.owner_id.in_(members), owner_is_admin),
                    ),
                ),
            )
            .order_by(Webhook.id)
        )
    ).all()
    wanted = set(event_types)
    return [(row[0], bool(row[1])) for row in rows if wanted & set(row[0].events)]


async def claim_due(
    session: AsyncSession, *, now: datetime, lease_until: datetime, token: str, limit: int
) -> Sequence[WebhookDelivery]:
    """Claim up to ``limit`` due pending attempts of active webhooks for this deliverer.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets several deliverers claim disjoint batches
    at once; SQLite runs write transactions one at a time, so the select-then-update is
    atomic there as it is. A claim whose lease ran out (a deliverer died) is claimable again.
    """
    due = (
        select(WebhookDelivery.id)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
            or_(
                WebhookDelivery.lease_expires_at.is_(None),
                WebhookDelivery.lease_expires_at <= now,
            ),
            Webhook.active,
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    )
    ids = list((await session.scalars(due)).all())
    if not ids:
        return []
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids))
        .values(lease_expires_at=lease_until, lease_token=token)
        .execution_options(synchronize_session=False)
    )
    return (
        await session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).order_by(WebhookDelivery.id)
        )
    ).all()


async def get_webhook(session: AsyncSession, webhook_id: int) -> Webhook | None:
    return await session.get(Webhook, webhook_id)


async def finish_attempt(
    session: AsyncSession, delivery_id: int, token: str, values: dict[str, Any]
) -> bool:
    """Record an attempt's outcome if this deliverer still holds its lease; False if not."""
    result = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.lease_token == token,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .values(lease_expires_at=None, lease_token=None, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)
