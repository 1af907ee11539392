"""The public shape of an event (API.md §7), one payload schema per event type.

Every event is ``{"id", "type", "project_id", "actor_id", "occurred_at", "data"}`` plus
``changed`` on ``*.updated``. ``data`` is the resource as the API shows it: ``TaskOut``,
``CommentOut``, ``MemberOut``, a project without the viewer-specific ``role``; a
``project.deleted`` carries only the id. ``EVENT_SCHEMAS`` maps each type to its schema and
``event_json`` builds the message: the WebSocket stream sends it and a webhook delivery posts
it (``webhooks.payloads``), so both carry the same JSON, and the OpenAPI ``webhooks`` section
documents it from these schemas.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskmanager.attachments.schemas import AttachmentOut
from taskmanager.comments.schemas import CommentOut
from taskmanager.kit.fields import format_timestamp
from taskmanager.kit.outbox import EventType, format_event_id
from taskmanager.models.events import Event
from taskmanager.projects.schemas import MemberOut
from taskmanager.tasks.schemas import TaskOut

EVENT_ID_PATTERN = r"^evt_[0-9]{16}$"


class ProjectData(BaseModel):
    """A project as its events show it (``ProjectOut`` without the viewer's ``role``)."""

    id: int
    name: str
    description: str | None
    is_inbox: bool
    created_by: int | None
    created_at: datetime
    updated_at: datetime


class DeletedProjectData(BaseModel):
    id: int


class EventBase(BaseModel):
    """What every event carries; the id sorts as text in the order events were published."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=EVENT_ID_PATTERN, examples=["evt_0000000000000042"])
    project_id: int
    actor_id: int | None = Field(description="Who made the change; null if since deleted")
    occurred_at: datetime


class _Updated(EventBase):
    changed: list[str] = Field(description="The names of the fields whose values changed")


class TaskCreated(EventBase):
    type: Literal["task.created"]
    data: TaskOut


class TaskUpdated(_Updated):
    type: Literal["task.updated"]
    data: TaskOut


class TaskDeleted(EventBase):
    type: Literal["task.deleted"]
    data: TaskOut = Field(description="The task as it was when deleted")


class CommentCreated(EventBase):
    type: Literal["comment.created"]
    data: CommentOut


class CommentUpdated(_Updated):
    type: Literal["comment.updated"]
    data: CommentOut


class CommentDeleted(EventBase):
    type: Literal["comment.deleted"]
    data: CommentOut = Field(description="The comment as it was when deleted")


class AttachmentCreated(EventBase):
    type: Literal["attachment.created"]
    data: AttachmentOut


class AttachmentDeleted(EventBase):
    type: Literal["attachment.deleted"]
    data: AttachmentOut = Field(description="The attachment as it was when deleted")


class ProjectUpdated(_Updated):
    type: Literal["project.updated"]
    data: ProjectData


class ProjectDeleted(EventBase):
    type: Literal["project.deleted"]
    data: DeletedProjectData


class MemberAdded(EventBase):
    type: Literal["member.added"]
    data: MemberOut


class MemberUpdated(EventBase):
    type: Literal["member.updated"]
    data: MemberOut


class MemberRemoved(EventBase):
    type: Literal["member.removed"]
    data: MemberOut = Field(description="The membership as it was before the removal")


EVENT_SCHEMAS: dict[EventType, type[EventBase]] = {
    EventType.TASK_CREATED: TaskCreated,
    EventType.TASK_UPDATED: TaskUpdated,
    EventType.TASK_DELETED: TaskDeleted,
    EventType.COMMENT_CREATED: CommentCreated,
    EventType.COMMENT_UPDATED: CommentUpdated,
    EventType.COMMENT_DELETED: CommentDeleted,
    EventType.ATTACHMENT_CREATED: AttachmentCreated,
    EventType.ATTACHMENT_DELETED: AttachmentDeleted,
    EventType.PROJECT_UPDATED: ProjectUpdated,
    EventType.PROJECT_DELETED: ProjectDeleted,
    EventType.MEMBER_ADDED: MemberAdded,
    EventType.MEMBER_UPDATED: MemberUpdated,
    EventType.MEMBER_REMOVED: MemberRemoved,
}


def event_json(event: Event) -> dict[str, Any]:
    """The public JSON of a sequenced event (``changed`` on ``*.updated`` only).

    ``data`` was rendered with the resource's API schema when the event was recorded.
    """
    assert event.seq is not None
    message: dict[str, Any] = {
        "id": format_event_id(event.seq),
        "type": event.type,
        "project_id": event.project_id,
        "actor_id": event.actor_id,
        "occurred_at": format_timestamp(event.occurred_at),
        "data": event.data,
    }
    if event.type.endswith(".updated"):
        message["changed"] = event.changed or []
    return message
