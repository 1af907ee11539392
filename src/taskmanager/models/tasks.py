from __future__ import annotations

import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column

from taskmanager.models.base import Base, BigIntId, JSONList, UTCDateTime, only_on, utcnow


class TaskStatus(StrEnum):
    """A task's workflow state."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


def search_fold(text: str) -> str:
    """Text as the case-insensitive search compares it, computed in Python for both backends.

    NFKC case folding (Unicode §3.13 "default caseless matching" with compatibility
    normalisation): ``École`` and ``ÉCOLE``, ``Straße`` and ``STRASSE``, ``ΣΊΣΥΦΟΣ`` and
    ``σίσυφος`` fold alike. The dot that case folding leaves on ``İ`` (``i`` + U+0307) is
    dropped, so ``İstanbul`` is found by ``istanbul``. Neither database folds like this
    (SQLite's ``lower`` is ASCII-only; PostgreSQL's depends on the collation), so the folded
    text is stored (``title_folded``, ``description_folded``) and queries fold their term
    with the same function.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return folded.replace("i\u0307", "i")


def _folded_default(column: str) -> Any:
    def default(context: DefaultExecutionContext) -> str | None:
        parameters: dict[str, Any] = context.get_current_parameters()  # type: ignore[no-untyped-call]
        value = parameters.get(column)
        return None if value is None else search_fold(value)

    return default


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'in_progress', 'completed', 'cancelled')", name="status"
        ),
        CheckConstraint("priority BETWEEN 1 AND 5", name="priority"),
        # Keyset pagination: every sort order, within a project, with the id tie-break.
        Index("ix_tasks_project_created", "project_id", "created_at", "id"),
        Index("ix_tasks_project_updated", "project_id", "updated_at", "id"),
        Index("ix_tasks_project_priority", "project_id", "priority", "id"),
        Index("ix_tasks_project_title", "project_id", "title", "id"),
        Index("ix_tasks_project_due", "project_id", "due_date", "id"),
        # The status filter, in the default order, and its count from the index alone.
        Index("ix_tasks_project_status", "project_id", "status", "created_at", "id"),
        # Admins list across projects.
        Index("ix_tasks_created", "created_at", "id"),
        # PostgreSQL only (migration 0006): GIN on tags for the ``tag`` filter's ``@>``, and
        # pg_trgm trigram GIN on the folded text for ``q``'s ``LIKE '%term%'``.
        only_on(
            "postgresql",
            Index(
                "ix_tasks_tags",
                "tags",
                postgresql_using="gin",
                postgresql_ops={"tags": "jsonb_path_ops"},
            ),
        ),
        only_on(
            "postgresql",
            Index(
                "ix_tasks_title_trgm",
                "title_folded",
                postgresql_using="gin",
                postgresql_ops={"title_folded": "gin_trgm_ops"},
            ),
        ),
        only_on(
            "postgresql",
            Index(
                "ix_tasks_description_trgm",
                "description_folded",
                postgresql_using="gin",
                postgresql_ops={"description_folded": "gin_trgm_ops"},
            ),
        ),
        # Never reuse an id: a recreated row must not match a deleted one's ETag.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    priority: Mapped[int] = mapped_column(SmallInteger, default=1)
    due_date: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    tags: Mapped[list[str]] = mapped_column(JSONList, default=list)
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True, default=None
    )
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # ``search_fold`` of title and description: what ``q`` searches, the same on both
    # backends. Filled on insert by these defaults; every update that sets title or
    # description sets them too (``tasks.repository``). Unbounded: folding can lengthen text.
    title_folded: Mapped[str] = mapped_column(
        Text, default=_folded_default("title"), server_default=""
    )
    description_folded: Mapped[str | None] = mapped_column(
        Text, default=_folded_default("description")
    )


# How many counter rows each (project, status) is spread over (migration 0010's triggers use
# the same number: ``id % 8``).
COUNT_SHARDS = 8


class TaskCount(Base):
    """How many tasks a project holds in each status: what a list's ``total`` reads instead of
    counting the tasks, when the list filters by nothing but project and status.

    Kept by database triggers on ``tasks`` (migration ``0010_task_counts``), in the same
    transaction as the write, so every writer — the driver path, the ``Session`` path, a bulk
    change, a project's cascade, a restore — keeps it exact without knowing it exists. A
    trigger on ``projects`` deletes a deleted project's rows: no foreign key, whose check on
    each new counter row would deadlock a task's change with its project's deletion. Each
    (project, status) is spread over ``COUNT_SHARDS`` rows by task id (a sharded counter),
    so concurrent creates in one project do not all queue for one row's lock on PostgreSQL;
    a total is the sum of the rows. A row may hold 0 once its tasks are gone.
    """

    __tablename__ = "task_counts"

    project_id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    tasks: Mapped[int] = mapped_column(BigInteger)


class TaskTagCount(Base):
    """How many tasks of a project carry each tag: the total of a list filtered by one tag.

    Kept like ``TaskCount`` (the same migration's triggers, the same shards by task id); a
    task counts once per distinct tag it carries.
    """

    __tablename__ = "task_tag_counts"

    project_id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    tag: Mapped[str] = mapped_column(Text, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    tasks: Mapped[int] = mapped_column(BigInteger)
