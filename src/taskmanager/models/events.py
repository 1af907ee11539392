"""The outbox: one row per change, written in the transaction that made the change.

A row is inserted with ``seq`` NULL (``kit.outbox.record``). A dispatcher later gives each
committed row its place in the one published order (``kit.outbox.sequence``); subscribers
and webhook deliveries read events by ``seq``, never by ``id``: ids follow insert order,
which is not commit order, so reading by id could skip a row that commits late.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from taskmanager.models.base import Base, BigIntId, JSONList, UTCDateTime, utcnow


class EventType(StrEnum):
    """Every event type the API publishes (API.md §7)."""

    TASK_CREATED = "task.created"
    TASK_UPDATED = "task.updated"
    TASK_DELETED = "task.deleted"
    COMMENT_CREATED = "comment.created"
    COMMENT_UPDATED = "comment.updated"
    COMMENT_DELETED = "comment.deleted"
    ATTACHMENT_CREATED = "attachment.created"
    ATTACHMENT_DELETED = "attachment.deleted"
    PROJECT_UPDATED = "project.updated"
    PROJECT_DELETED = "project.deleted"
    MEMBER_ADDED = "member.added"
    MEMBER_UPDATED = "member.updated"
    MEMBER_REMOVED = "member.removed"


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # The dispatcher's work queue: rows not yet sequenced, in insert order.
        Index(
            "ix_events_unsequenced",
            "id",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
        Index("ix_events_occurred_at", "occurred_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    # The published order (``kit.outbox.sequence``); the public event id is derived from it.
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True, default=None)
    type: Mapped[str] = mapped_column(String(32))
    # No foreign keys: an event outlives the project, user or row it tells about.
    project_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    actor_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The resource as the API shows it (for ``*.deleted`` at least its id).
    data: Mapped[dict[str, Any]] = mapped_column(JSONList)
    # Changed field names, on ``*.updated`` only.
    changed: Mapped[list[str] | None] = mapped_column(JSONList, default=None)
    # Ids of the users who were members of the project when the event happened (plus any
    # the writer named, e.g. the member being removed): who may see it, decided in the
    # writing transaction, as API.md §7 requires ("member ... at the time of the event").
    audience: Mapped[list[int]] = mapped_column(JSONList, default=list)
