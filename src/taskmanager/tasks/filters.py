"""The task-list query: filters and sort, defined once.

``TaskFilters`` is the query-parameter model of ``GET /tasks`` (and HEAD and the CSV export,
and ``/projects/{id}/tasks``); the service and the repository take the same object, and a
cursor's fingerprint is computed from it. Values are canonical once validated (statuses
sorted and unique, tags lower-case, times in UTC), so equal queries look equal.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from taskmanager.kit.fields import QueryDateTime, QueryId, StorableText
from taskmanager.kit.pagination import fingerprint
from taskmanager.models.tasks import TaskStatus


class SortBy(StrEnum):
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    PRIORITY = "priority"
    TITLE = "title"
    DUE_DATE = "due_date"


class SortOrder(StrEnum):
    DESC = "desc"
    ASC = "asc"


def _canonical_statuses(statuses: list[TaskStatus]) -> list[TaskStatus]:
    return sorted(set(statuses))


def _lower(tag: str) -> str:
    return tag.lower()


class TaskFilters(BaseModel):
    """Which tasks a list shows, and in which order. Filters combine with AND."""

    model_config = ConfigDict(frozen=True)

    status: Annotated[list[TaskStatus], AfterValidator(_canonical_statuses)] = Field(
        default_factory=list, description="Repeat to match any of several"
    )
    priority: int | None = Field(default=None, ge=1, le=5)
    assignee_id: QueryId | Literal["me"] | None = Field(
        default=None, description="A user id, or `me`"
    )
    tag: Annotated[StorableText, AfterValidator(_lower)] | None = Field(
        default=None, min_length=1, max_length=50, description="Tasks carrying this tag"
    )
    due_before: QueryDateTime | None = Field(
        default=None, description="Due strictly before (RFC 3339 with offset)"
    )
    due_after: QueryDateTime | None = Field(
        default=None, description="Due strictly after (RFC 3339 with offset)"
    )
    q: StorableText | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Case-insensitive text in the title or description",
    )
    sort_by: SortBy = SortBy.CREATED_AT
    order: SortOrder = SortOrder.DESC

    def assignee_for(self, viewer_id: int) -> int | None:
        """The assignee filter with ``me`` resolved to the caller."""
        return viewer_id if self.assignee_id == "me" else self.assignee_id

    def fingerprint(self) -> str:
        """Identifies the query as sent (``me`` stays ``me``), for binding cursors to it."""
        data: dict[str, Any] = self.model_dump(mode="json")
        return fingerprint(data)


class TaskListQuery(TaskFilters):
    """``GET /tasks``: the filters, optionally narrowed to one project."""

    project_id: QueryId | None = None
