"""Attachments: files on tasks, their bytes in the object store under generated keys.

Revision ID: 0008_attachments
Revises: 0007_webhooks
Create Date: 2026-11-30 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from taskmanager.models.base import UTCDateTime

revision: str = "0008_attachments"
down_revision: str | None = "0007_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "attachments",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("task_id", _ID, nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("storage_key", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_attachments_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachments")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_attachments_storage_key")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_attachments_task_created", "attachments", ["task_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_attachments_task_created", table_name="attachments")
    op.drop_table("attachments")
