"""Indexes for every task filter and for text search.

- ``ix_tasks_project_status`` (both backends): the ``status`` filter within the caller's
  projects, in the default order, and its count from the index alone.
- PostgreSQL only: ``ix_tasks_tags`` (GIN, ``jsonb_path_ops``) serves ``tags @> '[...]'``,
  the ``tag`` filter; ``ix_tasks_title_trgm`` and ``ix_tasks_description_trgm`` (GIN,
  ``pg_trgm``'s ``gin_trgm_ops``) serve ``q``'s ``LIKE '%term%'`` on the folded columns.
  They need the ``pg_trgm`` extension (trusted since PostgreSQL 13: the database's owner
  may create it). SQLite has no index for a JSON containment or an infix ``LIKE``; there
  those two filters read the caller's rows (README, Performance).

PostgreSQL builds them ``CONCURRENTLY`` (outside the migration's transaction), so a live
table keeps taking writes while they are built.

Revision ID: 0006_performance
Revises: 0005_realtime
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_performance"
down_revision: str | None = "0005_realtime"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POSTGRES_INDEXES = {
    "ix_tasks_tags": "USING gin (tags jsonb_path_ops)",
    "ix_tasks_title_trgm": "USING gin (title_folded gin_trgm_ops)",
    "ix_tasks_description_trgm": "USING gin (description_folded gin_trgm_ops)",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.create_index(
            "ix_tasks_project_status", "tasks", ["project_id", "status", "created_at", "id"]
        )
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_tasks_project_status"
            " ON tasks (project_id, status, created_at, id)"
        )
        for name, definition in _POSTGRES_INDEXES.items():
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON tasks {definition}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in _POSTGRES_INDEXES:
            op.drop_index(name, table_name="tasks")
    op.drop_index("ix_tasks_project_status", table_name="tasks")
