from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from taskmanager.models.base import (
    EAGER_DEFAULTS,
    Base,
    BigIntId,
    JSONList,
    UTCDateTime,
    utcnow,
    version_column,
)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __mapper_args__ = EAGER_DEFAULTS
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # The first characters of the key, shown so owners can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the key: high-entropy secrets need no slow hash, and lookups stay O(1).
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONList, default=list)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    version: Mapped[int] = version_column("api_keys")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
