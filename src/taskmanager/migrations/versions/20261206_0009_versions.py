"""Row versions for users, API keys, memberships, comments and webhooks: their ETags become
``"<id>-<version>"`` and ``If-Match`` is checked against the version in the write itself.

Existing rows start at version 1 (the server default), as new ones do.

Revision ID: 0009_versions
Revises: 0008_attachments
Create Date: 2026-12-06 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_versions"
down_revision: str | None = "0008_attachments"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))

    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))

    with op.batch_alter_table("project_members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))

    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.drop_column("version")

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("version")

    with op.batch_alter_table("project_members", schema=None) as batch_op:
        batch_op.drop_column("version")

    with op.batch_alter_table("comments", schema=None) as batch_op:
        batch_op.drop_column("version")

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("version")
