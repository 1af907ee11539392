"""Webhooks and their delivery log (API.md §7).

A ``webhooks`` row is one subscription of one user. Its signing secret is stored encrypted
(``webhooks.crypto``), never in plain text. ``webhook_deliveries`` is the delivery log and
the work queue at once: every attempt is a row; a ``pending`` row is due at
``next_attempt_at`` and is claimed by a deliverer with a lease (``lease_expires_at``,
``lease_token``), so a killed deliverer's claim runs out and the attempt is made again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text, true
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


class DeliveryStatus:
    """The states of one attempt (API.md §7)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Webhook(Base):
    __tablename__ = "webhooks"
    __mapper_args__ = EAGER_DEFAULTS
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # No foreign key: a project-bound webhook outlives its project, so it can still receive
    # that project's ``project.deleted`` event (fanned out after the delete committed);
    # afterwards it simply matches nothing.
    project_id: Mapped[int | None] = mapped_column(BigIntId, default=None)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSONList, default=list)
    description: Mapped[str | None] = mapped_column(String(500), default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    disabled_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    # The signing secret (``whsec_...``), encrypted (``webhooks.crypto``).
    secret_encrypted: Mapped[str] = mapped_column(Text)
    # After a rotation, the previous secret keeps signing (beside the new one) until this time.
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # When the current run of failed attempts began (None after any success): the webhook is
    # disabled once every attempt has failed for 3 days.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    version: Mapped[int] = version_column("webhooks")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The deliverers' work queue: pending attempts by due time.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # The delivery log of one webhook, newest first.
        Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    # The public event id (``evt_...``; ``ping_...`` for a ping): the ``webhook-id`` header,
    # the same on every attempt at one event.
    event_id: Mapped[str] = mapped_column(String(40))
    event_type: Mapped[str] = mapped_column(String(32))
    # The exact body sent (the event JSON), kept so every attempt sends the same bytes even
    # after the event has been pruned from the outbox.
    payload: Mapped[str] = mapped_column(Text)
    # 1 for the first attempt at an event (or a manual redelivery), then 2, 3, ...
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    duration_ms: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Pending: when it is due. Failed: when the retry (the next row) is due; None if none.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    attempted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # A deliverer's claim: nobody else sends this attempt before the lease runs out, and only
    # the holder of the token may record its outcome.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    lease_token: Mapped[str | None] = mapped_column(String(32), default=None)
