"""Webhook request and response bodies (API.md §7)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool

from taskmanager.kit.fields import EntityId, Text
from taskmanager.kit.outbox import EventType
from taskmanager.kit.pagination import Page
from taskmanager.kit.patch import PatchModel
from taskmanager.webhooks.targets import MAX_URL_CHARS

DESCRIPTION_MAX = 500

# Checked for its form only here (length, http/https); the SSRF rules, which need settings
# and DNS, are the service's (``webhooks.targets``), answered with the same 422 shape.
TargetUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_URL_CHARS,
        pattern="^[hH][tT][tT][pP][sS]?://",
        description="Where to POST events: an http or https URL that does not lead to a "
        "private, loopback or link-local address",
        examples=["https://example.com/hooks/taskmanager"],
    ),
]


def _distinct(value: list[EventType]) -> list[EventType]:
    return list(dict.fromkeys(value))


EventTypes = Annotated[
    list[EventType],
    Field(min_length=1, max_length=len(EventType), description="The event types to receive"),
    AfterValidator(_distinct),
]
WebhookDescription = Annotated[str, Text(DESCRIPTION_MAX, single_line=True)]

_EXAMPLE: dict[str, Any] = {
    "url": "https://example.com/hooks/taskmanager",
    "events": ["task.created", "task.updated"],
    "project_id": 3,
    "description": "CI board sync",
}


class WebhookCreate(BaseModel):
    """A new webhook. Without ``project_id`` it receives the events of every project its
    owner belongs to at the time of each event."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})

    url: TargetUrl
    events: EventTypes
    project_id: EntityId | None = Field(
        default=None, description="Only this project's events (one you can see)"
    )
    description: WebhookDescription | None = None


class WebhookPatch(PatchModel):
    """Change a webhook; ``active: true`` re-enables one that was disabled."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"active": True}]})
    nullable = frozenset({"description"})

    url: TargetUrl | None = None
    events: EventTypes | None = None
    active: StrictBool | None = None
    description: WebhookDescription | None = None


class WebhookOut(BaseModel):
    """A webhook as listed: never its secret."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    **_EXAMPLE,
                    "id": 7,
                    "active": True,
                    "disabled_reason": None,
                    "created_at": "2026-11-30T09:30:00Z",
                    "updated_at": "2026-11-30T09:30:00Z",
                }
            ]
        },
    )

    id: int
    url: str
    events: list[str]
    project_id: int | None
    description: str | None
    active: bool
    disabled_reason: str | None = Field(
        description="Why the server disabled the webhook (410 Gone, or 3 days of failures)"
    )
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    """The new webhook (or the rotated one) with its signing secret: shown this once."""

    secret: str = Field(
        description="`whsec_` + base64 of 32 random bytes: the Standard Webhooks signing "
        "secret; store it now, it is not shown again",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhookPage(Page[WebhookOut]):
    pass


class DeliveryOut(BaseModel):
    """One delivery attempt (a row of the delivery log)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    event_id: str = Field(description="The event id, sent as `webhook-id` on every attempt")
    event_type: str
    attempt: int = Field(description="1 for the first attempt at an event, then 2, 3, ...")
    status: Literal["pending", "succeeded", "failed"]
    response_status: int | None = Field(description="The target's HTTP status, if it answered")
    duration_ms: int | None
    error: str | None = Field(description="Why the attempt failed")
    created_at: datetime
    next_attempt_at: datetime | None = Field(
        description="Pending: when it is due; failed: when the retry is due (null: no retry)"
    )


class DeliveryPage(Page[DeliveryOut]):
    pass
