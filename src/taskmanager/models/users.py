from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, Integer, String, true
from sqlalchemy.orm import Mapped, mapped_column

from taskmanager.models.base import (
    EAGER_DEFAULTS,
    Base,
    BigIntId,
    UTCDateTime,
    utcnow,
    version_column,
)


class UserRole(StrEnum):
    """An account's role: an admin may read and manage everything."""

    USER = "user"
    ADMIN = "admin"


class User(Base):
    __tablename__ = "users"
    __mapper_args__ = EAGER_DEFAULTS
    __table_args__ = (
        CheckConstraint("role IN ('user', 'admin')", name="role"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    # Both are stored lower-case, so a plain unique index is case-insensitive uniqueness.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    username: Mapped[str] = mapped_column(String(50), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user", server_default="user")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Carried by every access token (claim "gen") and compared on every authenticated
    # request: raising it ends every access token issued before (password change or reset,
    # log out everywhere, deactivation, reactivation). A counter, not a timestamp, so the
    # cut is exact whatever the clocks of the processes that issue and check tokens say.
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    version: Mapped[int] = version_column("users")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
