"""Task request and response shapes, and the fast JSON form of a task row."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
)

from taskmanager.pagination import Page
from taskmanager.validation import MAX_ID as MAX_ID  # the router's too
from taskmanager.validation import StorableText, storable_text

MAX_TAGS = 20


class TaskStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


SortBy = Literal["created_at", "updated_at", "priority", "title", "due_date"]
SortOrder = Literal["desc", "asc"]


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of the supported date range") from None


def _rfc3339_only(value: Any) -> Any:
    # Numbers would be read as Unix timestamps; the contract speaks RFC 3339 only.
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string with an offset")
    return value


Text = StorableText
Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(storable_text),
]
Description = Annotated[str, StringConstraints(max_length=2000), AfterValidator(storable_text)]
Tag = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=50),
    AfterValidator(storable_text),
]
Priority = Annotated[StrictInt, Field(ge=1, le=5)]
EntityId = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]
DueDate = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only), AfterValidator(_utc)]
# Query strings are text, so ids and datetimes there are parsed leniently but bounded alike.
QueryId = Annotated[int, Field(ge=1, le=MAX_ID)]
QueryDateTime = Annotated[AwareDatetime, AfterValidator(_utc)]


def normalize_tags(tags: list[str]) -> list[str]:
    """Lower-case, drop repeats (first one wins) and enforce the distinct-tag limit."""
    seen: dict[str, None] = {}
    for tag in tags:
        seen.setdefault(tag.lower(), None)
    if len(seen) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} distinct tags are allowed")
    return list(seen)


Tags = Annotated[list[Tag], AfterValidator(normalize_tags)]

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


_NOT_NULLABLE = ("title", "status", "priority", "tags", "project_id")


class TaskPatch(BaseModel):
    """Partial update: only the fields sent change; ``null`` clears a nullable field."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"status": "completed"}, {"assignee_id": None}]},
    )

    title: Title | None = None
    description: Description | None = None
    status: TaskStatus | None = None
    priority: Priority | None = None
    due_date: DueDate | None = None
    tags: Tags | None = None
    assignee_id: EntityId | None = None
    project_id: EntityId | None = Field(default=None, description="Moves the task")

    @field_validator(*_NOT_NULLABLE, mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Runs only for fields actually sent (defaults are not validated).
        if value is None:
            raise ValueError("may not be null")
        return value


class TaskOut(BaseModel):
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

    id: int
    project_id: int
    title: str
    description: str | None
    status: TaskStatus
    priority: int
    due_date: datetime | None
    tags: list[str]
    assignee_id: int | None
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    version: int


class TaskPage(Page[TaskOut]):
    """One page of tasks. ``next_cursor`` is null on the last page."""

    total: int = Field(description="How many tasks match the filters")
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page")


TASK_FIELDS = tuple(TaskOut.model_fields)


def task_payload(row: Any) -> dict[str, Any]:
    """A task row (anything with the task columns as attributes) as the API's JSON dict.

    Built by hand rather than through ``TaskOut``: this runs on every read, and the row is
    already typed by the database layer.
    """
    return {
        "id": row.id,
        "project_id": row.project_id,
        "title": row.title,
        "description": row.description,
        "status": row.status,
        "priority": row.priority,
        "due_date": row.due_date,
        "tags": row.tags,
        "assignee_id": row.assignee_id,
        "created_by": row.created_by,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "completed_at": row.completed_at,
        "version": row.version,
    }
