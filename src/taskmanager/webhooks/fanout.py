"""Fan-out: sequenced events become pending deliveries for the webhooks that match them.

``enqueue_deliveries`` is an ``on_sequenced`` hook of the events dispatcher: it runs in the
same transaction that numbered the events (``kit.outbox.sequence``), so each event fans out
exactly once — if the transaction rolls back, neither the numbers nor the deliveries exist
and the next round does both again.

A webhook matches an event when it is active, its owner is active, the event's type is
one of its ``events``, and:

* without ``project_id``: its owner was a member of the event's project at the time of the
  event (the owner's id is in the event's ``audience``, which ``kit.outbox.record``
  snapshots in the writing transaction; API.md §7). Administrators get no special
  treatment here: a webhook is not a way to receive every project's events.
* with ``project_id``: the event is that project's, and its owner was a member then (so
  removal from the project stops deliveries) — or is an administrator, who may see every
  project (API.md §7: "a member of the event's project (or an admin)").

Each round reads only the webhooks its events can concern, in one query
(``repository.subscriptions_for``: those bound to the events' projects, and those of the
users in the events' audiences), so its cost follows the round's events, not the number of
webhooks in the deployment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.db import utcnow
from taskmanager.kit.outbox import format_event_id
from taskmanager.models.events import Event
from taskmanager.models.webhooks import DeliveryStatus, Webhook
from taskmanager.webhooks import repository
from taskmanager.webhooks.payloads import event_body


def matches(webhook: Webhook, owner_is_admin: bool, event: Event) -> bool:
    """Whether ``webhook`` receives ``event`` (the rules in the module docstring)."""
    if event.type not in webhook.events:
        return False
    member = webhook.owner_id in (event.audience or [])
    if webhook.project_id is None:
        return member
    return webhook.project_id == event.project_id and (member or owner_is_admin)


async def enqueue_deliveries(session: AsyncSession, events: Sequence[Event]) -> int:
    """Queue one pending delivery per (matching webhook, event); return how many.

    Call it in the transaction that sequenced ``events`` (the dispatcher does), with the
    events in ``seq`` order: each webhook's deliveries are queued in that order.
    """
    if not events:
        return 0
    # Only the webhooks these events can reach: those of their projects and of the users
    # who were members then (a project-less webhook follows its owner), never every webhook.
    subscriptions = await repository.subscriptions_for(
        session,
        event_types={e.type for e in events},
        project_ids={e.project_id for e in events if e.project_id is not None},
        member_ids={user_id for e in events for user_id in e.audience or ()},
    )
    if not subscriptions:
        return 0
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for event in events:
        body: str | None = None
        for webhook, owner_is_admin in subscriptions:
            if not matches(webhook, owner_is_admin, event):
                continue
            body = body or event_body(event)
            rows.append(
                {
                    "webhook_id": webhook.id,
                    "event_id": format_event_id(event.seq or 0),
                    "event_type": event.type,
                    "payload": body,
                    "attempt": 1,
                    "status": DeliveryStatus.PENDING,
                    "created_at": now,
                    "next_attempt_at": now,
                }
            )
    await repository.add_deliveries(session, rows)
    return len(rows)
