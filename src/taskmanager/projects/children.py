"""A task's children (its comments, its attachments): the one rule for reading them.

Any member of the task's project may read them (``access.task_access`` with VIEW); one
that is not on the task named in the path is not found; a page is oldest first, by
``(created_at, id)``, and the task is part of the cursor's query, so a cursor of another
task's list does not continue this one (``kit.pagination``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.errors import NotFound
from taskmanager.kit.identity import Principal
from taskmanager.kit.pagination import KeysetList, ListPage, PageRequest, Window
from taskmanager.projects.access import task_access
from taskmanager.projects.policy import Permission


class Child(Protocol):
    """A row that belongs to a task: its id and when it was made."""

    @property
    def id(self) -> int: ...

    @property
    def created_at(self) -> datetime: ...


ChildT = TypeVar("ChildT", bound=Child)


@dataclass(frozen=True, slots=True)
class TaskChildren(Generic[ChildT]):
    """One kind of a task's children: its noun (``"Comment"``, for errors), the name its
    cursors are signed for, and its two queries: a window of the task's children
    (``(session, task_id, window) -> (rows, total)``) and one of them
    (``(session, task_id, child_id) -> row | None``)."""

    noun: str
    context: bytes
    fetch: Callable[[AsyncSession, int, Window], Awaitable[tuple[Sequence[ChildT], int]]]
    find: Callable[[AsyncSession, int, int], Awaitable[ChildT | None]]

    async def one(self, session: AsyncSession, task_id: int, child_id: int) -> ChildT:
        """The task's child ``child_id``, access already checked; NotFound if the task has
        no such child."""
        child = await self.find(session, task_id, child_id)
        if child is None:
            raise NotFound(f"{self.noun} {child_id} not found on task {task_id}")
        return child

    async def get(
        self, session: AsyncSession, principal: Principal, task_id: int, child_id: int
    ) -> ChildT:
        """The task's child ``child_id``, for any member. Raises NotFound."""
        await task_access(session, principal, task_id, Permission.VIEW)
        return await self.one(session, task_id, child_id)

    async def page(
        self,
        session: AsyncSession,
        principal: Principal,
        task_id: int,
        page: PageRequest,
        *,
        key: str,
    ) -> ListPage[ChildT]:
        """A page of the task's children, oldest first. Raises NotFound (no such task, or
        not a member), ValidationFailed (a bad cursor)."""
        await task_access(session, principal, task_id, Permission.VIEW)
        rows: KeysetList[ChildT] = KeysetList(
            self.context, row_id=lambda row: row.id, sorted_by=lambda row: row.created_at
        )
        return await rows.page(
            page,
            lambda window: self.fetch(session, task_id, window),
            key=key,
            scope={"task_id": task_id},
        )
