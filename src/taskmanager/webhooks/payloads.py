"""What a webhook delivery carries: the event JSON of API.md §7, as the WebSocket sends it.

The body of every delivery is ``events.schemas.event_json`` of the outbox row (one shape for
both channels, one schema per type in ``EVENT_SCHEMAS``). The one event of webhooks' own,
``webhook.ping``, is built here; it has the same envelope.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import orjson
from pydantic import BaseModel, Field

from taskmanager.events.schemas import EVENT_SCHEMAS, EventBase, event_json
from taskmanager.kit.fields import format_timestamp
from taskmanager.models.events import Event

PING = "webhook.ping"


class PingData(BaseModel):
    """The webhook that was pinged."""

    webhook_id: int
    url: str


class WebhookPing(EventBase):
    """The ``webhook.ping`` event: sent once, on request, to check a receiver."""

    id: str = Field(
        examples=["ping_3f9c2a7b1e6d4c08a51b77e0"]
    )  # not an outbox event: no ``evt_`` seq
    type: Literal["webhook.ping"]
    project_id: int | None  # type: ignore[assignment]  # the webhook's project, if it has one
    data: PingData


#: Every type a webhook may receive, with its payload model, in API.md §7's order.
PAYLOAD_MODELS: dict[str, type[BaseModel]] = {
    **{event_type.value: model for event_type, model in EVENT_SCHEMAS.items()},
    PING: WebhookPing,
}


def event_body(event: Event) -> str:
    """The exact JSON sent for a sequenced outbox event (compact, keys in a fixed order)."""
    return orjson.dumps(event_json(event)).decode()


def ping_body(
    event_id: str,
    *,
    webhook_id: int,
    url: str,
    project_id: int | None,
    actor_id: int,
    occurred_at: datetime,
) -> str:
    """The JSON of a ``webhook.ping`` event."""
    return orjson.dumps(
        {
            "id": event_id,
            "type": PING,
            "project_id": project_id,
            "actor_id": actor_id,
            "occurred_at": format_timestamp(occurred_at),
            "data": {"webhook_id": webhook_id, "url": url},
        }
    ).decode()
