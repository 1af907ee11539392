"""Task request and response shapes (API.md §5)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from taskmanager.kit.fields import EntityId, UTCTimestamp, storable_text
from taskmanager.kit.pagination import CursorPage
from taskmanager.kit.patch import PatchModel
from taskmanager.models.tasks import TaskStatus

MAX_TAGS = 20
# Items a tags list may have before de-duplication. Checked before any item is validated, so
# a body of half a million tags is refused in microseconds instead of validated item by item.
MAX_TAG_ITEMS = 5 * MAX_TAGS

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
DueDate = UTCTimestamp


def normalize_tags(tags: list[str]) -> list[str]:
    """Lower-case, drop repeats (first one wins) and enforce the distinct-tag limit."""
    seen: dict[str, None] = {}
    for tag in tags:
        seen.setdefault(tag.lower(), None)
    if len(seen) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} distinct tags are allowed")
    return list(seen)


Tags = Annotated[list[Tag], Field(max_length=MAX_TAG_ITEMS), AfterValidator(normalize_tags)]

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


class TaskPage(CursorPage[TaskOut]):
    """One page of tasks. ``next_cursor`` is null on the last page."""


TASK_FIELDS = tuple(TaskOut.model_fields)
