"""Case-folded copies of task titles and descriptions, for Unicode-wide search.

Adds ``tasks.title_folded`` and ``tasks.description_folded`` (``models.tasks.search_fold``
of the two columns) and fills them for existing rows in batches, computed in Python so both
backends hold exactly the same text.

Revision ID: 0004_inputs
Revises: 0003_idempotency_in_tx
Create Date: 2026-11-30 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from taskmanager.models.tasks import search_fold

revision: str = "0004_inputs"
down_revision: str | None = "0003_idempotency_in_tx"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild on SQLite); the server default only lets NOT NULL
    # be declared up front, the backfill below writes the real values.
    op.add_column("tasks", sa.Column("title_folded", sa.Text(), nullable=False, server_default=""))
    op.add_column("tasks", sa.Column("description_folded", sa.Text(), nullable=True))
    tasks = sa.table(
        "tasks",
        sa.column("id", sa.BigInteger()),
        sa.column("title", sa.Text()),
        sa.column("description", sa.Text()),
        sa.column("title_folded", sa.Text()),
        sa.column("description_folded", sa.Text()),
    )
    connection = op.get_bind()
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(tasks.c.id, tasks.c.title, tasks.c.description)
            .where(tasks.c.id > last_id)
            .order_by(tasks.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        connection.execute(
            tasks.update().where(tasks.c.id == sa.bindparam("row_id")),
            [
                {
                    "row_id": row.id,
                    "title_folded": search_fold(row.title),
                    "description_folded": (
                        None if row.description is None else search_fold(row.description)
                    ),
                }
                for row in rows
            ],
        )
        last_id = rows[-1].id


def downgrade() -> None:
    op.drop_column("tasks", "description_folded")
    op.drop_column("tasks", "title_folded")
