"""The task-list query: filters and sort, defined once.

``TaskFilters`` is the query-parameter model of ``GET /tasks`` (and HEAD and the CSV export,
and ``/projects/{id}/tasks``); the service and the repository take the same object, and a
cursor carries it. Values are canonical once validated (statuses, priorities and tags
sorted and unique, tags lower-case, times in UTC), so equal queries look equal.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from taskmanager.kit.fields import QueryDateTime, QueryId, Text
from taskmanager.models.tasks import TaskStatus
from taskmanager.tasks.schemas import MAX_TAGS, Tag, lower_tag


class SortBy(StrEnum):
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    PRIORITY = "priority"
    TITLE = "title"
    DUE_DATE = "due_date"


class SortOrder(StrEnum):
    DESC = "desc"
    ASC = "asc"


T = TypeVar("T", str, int)
QueryPriority = Annotated[int, Field(ge=1, le=5)]


def _canonical(values: list[T]) -> list[T]:
    """Sorted and without repeats: ``?status=a&status=b`` and ``?status=b&status=a`` agree."""
    return sorted(set(values))


def _canonical_tags(tags: list[str]) -> list[str]:
    return sorted({lower_tag(tag) for tag in tags})


class TaskFilters(BaseModel):
    """Which tasks a list shows, and in which order. Filters combine with AND."""

    model_config = ConfigDict(frozen=True)

    status: Annotated[list[TaskStatus], AfterValidator(_canonical)] = Field(
        default_factory=list, description="Repeatable: tasks in any of these statuses"
    )
    priority: Annotated[list[Annotated[int, Field(ge=1, le=5)]], AfterValidator(_canonical)] = (
        Field(default_factory=list, max_length=5, description="Repeatable: any of these priorities")
    )
    assignee_id: QueryId | Literal["me"] | None = Field(
        default=None, description="A user id, or `me`"
    )
    tag: Annotated[list[Tag], AfterValidator(_canonical_tags)] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="Repeatable: tasks carrying all of these tags (compared lower-case)",
    )
    due_before: QueryDateTime | None = Field(
        default=None, description="Due strictly before (RFC 3339 with offset)"
    )
    due_after: QueryDateTime | None = Field(
        default=None, description="Due strictly after (RFC 3339 with offset)"
    )
    q: Annotated[str, Text(200)] | None = Field(
        default=None,
        description="Text in the title or description, case-insensitive for all of Unicode",
    )
    sort_by: SortBy = SortBy.CREATED_AT
    order: SortOrder = SortOrder.DESC

    def assignee_for(self, viewer_id: int) -> int | None:
        """The assignee filter with ``me`` resolved to the caller."""
        return viewer_id if self.assignee_id == "me" else self.assignee_id

    def as_json(self) -> dict[str, Any]:
        """The query as a cursor carries it (``me`` stays ``me``)."""
        data: dict[str, Any] = self.model_dump(mode="json")
        return data


class TaskListQuery(TaskFilters):
    """``GET /tasks``: the filters, optionally narrowed to one project."""

    project_id: QueryId | None = None
