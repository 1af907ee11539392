from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from taskmanager.models.base import (
    EAGER_DEFAULTS,
    Base,
    BigIntId,
    UTCDateTime,
    utcnow,
    version_column,
)


class Comment(Base):
    __tablename__ = "comments"
    __mapper_args__ = EAGER_DEFAULTS
    __table_args__ = (
        Index("ix_comments_task_created", "task_id", "created_at", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    body: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = version_column("comments")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
