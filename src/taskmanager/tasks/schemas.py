"""Task request and response shapes (API.md §5)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from taskmanager.kit.fields import EntityId, Text, UTCTimestamp, json_integer
from taskmanager.kit.pagination import CursorPage
from taskmanager.kit.patch import PatchModel
from taskmanager.models.tasks import TaskStatus

MAX_TAGS = 20

TITLE_MAX = 200
DESCRIPTION_MAX = 2000
TAG_MAX = 50

Title = Annotated[str, Text(TITLE_MAX)]
Description = Annotated[str, Text(DESCRIPTION_MAX, min_length=0, strip=False)]
Tag = Annotated[str, Text(TAG_MAX)]
Priority = Annotated[int, Field(strict=True, ge=1, le=5), BeforeValidator(json_integer)]
DueDate = UTCTimestamp


def lower_tag(tag: str) -> str:
    """A tag as stored and filtered on: lower-case NFC (lower-casing can un-compose)."""
    return unicodedata.normalize("NFC", tag.lower())


def normalize_tags(tags: list[str]) -> list[str]:
    """Lower-case, drop repeats (first one wins) and enforce the distinct-tag limit."""
    seen: dict[str, None] = {}
    for tag in tags:
        lowered = lower_tag(tag)
        if len(lowered) > TAG_MAX:  # lower-casing can lengthen ("İ" is two code points)
            raise ValueError(f"tag {lowered!r} is longer than {TAG_MAX} characters in lower case")
        seen.setdefault(lowered, None)
    if len(seen) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} distinct tags are allowed")
    return list(seen)


# At most MAX_TAGS items as sent — the schema's maxItems, so clients and server agree — and
# refused by length before any item is validated (half a million tags cost microseconds).
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(normalize_tags)]

_EXAMPLE_TASK_BODY: dict[str, Any] = {
    "title": "Buy groceries",
    "description": "Milk, eggs, bread",
    "status": "pending",
    "priority": 2,
    "due_date": "2026-12-01T17:00:00Z",
    "tags": ["home", "errands"],
    "assignee_id": None,
}


class TaskCreate(BaseModel):
    """A new task. Without ``project_id`` it goes to the caller's Inbox."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{**_EXAMPLE_TASK_BODY, "project_id": 3}]},
    )

    title: Title
    description: Description | None = None
    status: TaskStatus = TaskStatus.PENDING
    priority: Priority = 1
    due_date: DueDate | None = None
    tags: Tags = Field(default_factory=list, description="Stored lower-case, without repeats")
    assignee_id: EntityId | None = Field(
        default=None, description="Must be a member of the task's project"
    )
    project_id: EntityId | None = Field(default=None, description="Defaults to your Inbox")


class TaskReplace(TaskCreate):
    """Full replacement: every field left out goes back to its default.

    ``project_id`` left out keeps the task in its project; a different one moves it.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE_TASK_BODY]})

    project_id: EntityId | None = Field(
        default=None, description="Left out: the task stays where it is; else it moves"
    )


class TaskPatch(PatchModel):
    """Partial update: only the fields sent change; ``null`` clears a nullable field."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "completed"}, {"assignee_id": None}]},
    )
    nullable = frozenset({"description", "due_date", "assignee_id"})

    title: Title | None = None
    description: Description | None = None
    status: TaskStatus | None = None
    priority: Priority | None = None
    due_date: DueDate | None = None
    tags: Tags | None = None
    assignee_id: EntityId | None = None
    project_id: EntityId | None = Field(default=None, description="Moves the task")


@dataclass(frozen=True)
class TaskFields:
    """A task's fields as the API shows them, declared once.

    ``TaskOut`` (the API model) and ``tasks.repository.TaskRow`` (a row as read, which
    orjson serialises as is) both take them from here: a dataclass, because a dataclass
    inherits fields only from one, and pydantic reads the annotations of any base.
    Frozen, not slotted: a base with slots could not sit under ``BaseModel``.
    """

    id: int
    project_id: int
    title: str
    description: str | None
    status: str  # as stored; ``TaskOut`` narrows it to ``TaskStatus``
    priority: int
    due_date: datetime | None
    tags: list[str]
    assignee_id: int | None
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    version: int


class TaskOut(BaseModel, TaskFields):
    """A task as the API shows it. Times are RFC 3339 UTC."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                **_EXAMPLE_TASK_BODY,
                "id": 17,
                "project_id": 3,
                "created_by": 5,
                "created_at": "2026-11-22T09:30:00Z",
                "updated_at": "2026-11-22T09:30:00Z",
                "completed_at": None,
                "version": 1,
            }
        }
    )

    status: TaskStatus


class TaskPage(CursorPage[TaskOut]):
    """One page of tasks. ``next_cursor`` is null on the last page."""


TASK_FIELDS = tuple(TaskOut.model_fields)
