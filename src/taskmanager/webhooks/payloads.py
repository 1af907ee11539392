"""What a webhook delivery carries: the event JSON of API.md §7, one schema per event type.

The body of every delivery is the event as API.md §7 shows it: ``{id, type, project_id,
actor_id, occurred_at, data, changed}`` (``changed`` on ``*.updated`` only; ``data`` is the
resource as the API shows it, and for ``*.deleted`` at least its id). The per-type models
below document ``data`` for the OpenAPI ``webhooks`` section (``webhooks.openapi``); the
bytes sent are built by ``event_body`` from the outbox row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, create_model

from taskmanager.comments.schemas import CommentOut
from taskmanager.kit.outbox import EventType, format_event_id
from taskmanager.models.events import Event
from taskmanager.projects.schemas import MemberOut, ProjectOut
from taskmanager.tasks.schemas import TaskOut

PING = "webhook.ping"


class DeletedData(BaseModel):
    """What is left of a deleted resource: at least its id."""

    model_config = ConfigDict(extra="allow")

    id: int


class AttachmentData(BaseModel):
    """An attachment as the API shows it (its own schema is the attachments API's)."""

    model_config = ConfigDict(extra="allow")

    id: int


class PingData(BaseModel):
    """The webhook that was pinged."""

    webhook_id: int
    url: str


class WebhookEvent(BaseModel):
    """One event as delivered: the body of every webhook POST (API.md §7)."""

    id: str = Field(
        description="The event id, also the `webhook-id` header", examples=["evt_0000000000000042"]
    )
    type: str
    project_id: int | None
    actor_id: int | None = Field(description="The user who made the change; null if none")
    occurred_at: datetime = Field(description="When the change committed, RFC 3339 UTC")
    data: dict[str, Any] = Field(description="The resource as the API shows it")
    changed: list[str] | None = Field(
        default=None, description="The changed fields: `*.updated` events only"
    )


def _data_schema(event_type: str) -> type[BaseModel]:
    if event_type == PING:
        return PingData
    if event_type.endswith(".deleted"):
        return DeletedData
    kind = event_type.split(".", 1)[0]
    schemas: dict[str, type[BaseModel]] = {
        "task": TaskOut,
        "comment": CommentOut,
        "attachment": AttachmentData,
        "project": ProjectOut,
        "member": MemberOut,
    }
    return schemas[kind]


def _payload_model(event_type: str) -> type[BaseModel]:
    """``WebhookEvent`` with ``type`` fixed and ``data`` typed, e.g. ``TaskCreatedEvent``."""
    name = "".join(part.capitalize() for part in event_type.split(".")) + "Event"
    fields: dict[str, Any] = {
        "type": (Literal[event_type], ...),
        "data": (_data_schema(event_type), ...),
    }
    if not event_type.endswith(".updated"):
        fields["changed"] = (None, Field(default=None, description="Only on `*.updated`"))
    else:
        fields["changed"] = (list[str], Field(description="The fields the change touched"))
    model: type[BaseModel] = create_model(
        name,
        __base__=WebhookEvent,
        __doc__=f"The `{event_type}` event, as a webhook delivery's body.",
        **fields,
    )
    return model


#: Every type a webhook may receive, with its payload model, in API.md §7's order.
EVENT_TYPES: tuple[str, ...] = (*(t.value for t in EventType), PING)
PAYLOAD_MODELS: dict[str, type[BaseModel]] = {t: _payload_model(t) for t in EVENT_TYPES}


def _timestamp(value: datetime) -> str:
    """RFC 3339 UTC with a ``Z``, as the API writes every time."""
    return value.isoformat().replace("+00:00", "Z")


def event_body(event: Event) -> str:
    """The exact JSON sent for a sequenced outbox event (compact, keys in a fixed order)."""
    assert event.seq is not None, "only sequenced events are delivered"
    body: dict[str, Any] = {
        "id": format_event_id(event.seq),
        "type": event.type,
        "project_id": event.project_id,
        "actor_id": event.actor_id,
        "occurred_at": _timestamp(event.occurred_at),
        "data": event.data,
    }
    if event.changed is not None:
        body["changed"] = event.changed
    return orjson.dumps(body).decode()


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
            "occurred_at": _timestamp(occurred_at),
            "data": {"webhook_id": webhook_id, "url": url},
        }
    ).decode()
