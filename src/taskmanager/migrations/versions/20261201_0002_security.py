"""Sessions that end when they should: a per-user session generation, an absolute lifetime
for refresh-token families, and single-use password-reset tokens.

Reviewed by hand. Existing refresh-token families get an absolute end 90 days (the default
TASKMANAGER_SESSION_MAX_DAYS) after their current token was issued; existing users start at
generation 0, which is what access tokens issued before this revision are read as having.

Revision ID: 0002_security
Revises: 0001
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import taskmanager.models.base

revision: str = "0002_security"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = taskmanager.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("session_generation", sa.Integer(), server_default="0", nullable=False),
    )

    op.add_column("refresh_tokens", sa.Column("family_expires_at", _TIME, nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        # Naive UTC text "YYYY-MM-DD HH:MM:SS[.ffffff]": shift the seconds part, keep the
        # original fraction (SQLite's own %f would cut it to milliseconds).
        op.execute(
            "UPDATE refresh_tokens SET family_expires_at = "
            "strftime('%Y-%m-%d %H:%M:%S', created_at, '+90 days') || substr(created_at, 20)"
        )
    else:
        op.execute("UPDATE refresh_tokens SET family_expires_at = created_at + interval '90 days'")
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.alter_column("family_expires_at", existing_type=_TIME, nullable=False)

    op.create_table(
        "password_reset_tokens",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("used_at", _TIME, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_password_reset_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_password_reset_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_password_reset_tokens_token_hash")),
    )
    op.create_index(op.f("ix_password_reset_tokens_user_id"), "password_reset_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_password_reset_tokens_user_id"), table_name="password_reset_tokens")
    op.drop_table("password_reset_tokens")
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("family_expires_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("session_generation")
