"""Task counts per project and status, and per project and tag, kept by triggers.

``task_counts`` holds, per (project, status, shard), how many tasks there are, and
``task_tag_counts`` per (project, tag, shard) how many carry the tag; a list whose only
filters are project and status, or project and one tag, sums these rows instead of counting
its tasks (issue 13: an unfiltered first page at 1 M rows read all of them). Triggers on ``tasks`` keep it in
the writing transaction — every insert, delete, and update that changes a task's project or
status — so no writer (driver, ORM, bulk change, cascade from a deleted project, a restore)
can leave it wrong. Each (project, status) is spread over 8 shards by ``id % 8``
(``models.tasks.COUNT_SHARDS``): on PostgreSQL a counter row is locked by the write until it
commits, and one row per project would queue every concurrent create in that project
behind the one before it.

A change of status or project moves a task from one counter row to another, a change of
tags or project between several. PostgreSQL locks the rows in key order (the lower key
first), so two opposite changes in one project cannot deadlock on them.

The triggers are created before the existing tasks are counted, in the same transaction:
on PostgreSQL, ``CREATE TRIGGER`` locks ``tasks`` against writes until the migration commits,
so no write falls between the count and the first triggered change.

Revision ID: 0010_task_counts
Revises: 0009_versions
Create Date: 2026-12-07 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_task_counts"
down_revision: str | None = "0009_versions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Adds one task to the counter row of (project, status, shard) of ``row`` (NEW or OLD).
_ADD = (
    "INSERT INTO task_counts (project_id, status, shard, tasks)"
    " VALUES ({row}.project_id, {row}.status, {row}.id % 8, 1)"
    " ON CONFLICT (project_id, status, shard) DO UPDATE SET tasks = task_counts.tasks + 1"
)
# Takes one away (the row exists: the task was counted when it was inserted, or backfilled).
_REMOVE = (
    "UPDATE task_counts SET tasks = tasks - 1"
    " WHERE project_id = {row}.project_id AND status = {row}.status AND shard = {row}.id % 8"
)
_MOVED = "OLD.project_id IS DISTINCT FROM NEW.project_id OR OLD.status IS DISTINCT FROM NEW.status"

_POSTGRES_FUNCTION = f"""
CREATE FUNCTION task_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_ADD.format(row="NEW")};
    ELSIF TG_OP = 'DELETE' THEN
        {_REMOVE.format(row="OLD")};
    ELSIF (OLD.project_id, OLD.status) < (NEW.project_id, NEW.status) THEN
        -- Lower key first, so two opposite moves cannot deadlock.
        {_REMOVE.format(row="OLD")};
        {_ADD.format(row="NEW")};
    ELSE
        {_ADD.format(row="NEW")};
        {_REMOVE.format(row="OLD")};
    END IF;
    RETURN NULL;
END
$$
"""

_POSTGRES_TRIGGERS = (
    "CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks"
    " FOR EACH ROW EXECUTE FUNCTION task_counts_apply()",
    "CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks"
    " FOR EACH ROW EXECUTE FUNCTION task_counts_apply()",
    "CREATE TRIGGER tasks_count_update AFTER UPDATE OF project_id, status ON tasks"
    f" FOR EACH ROW WHEN ({_MOVED}) EXECUTE FUNCTION task_counts_apply()",
)

_SQLITE_TRIGGERS = (
    f"CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN {_ADD.format(row='NEW')}; END",
    "CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks"
    f" BEGIN {_REMOVE.format(row='OLD')}; END",
    # SQLite has one writer at a time: the order of the two rows does not matter.
    f"CREATE TRIGGER tasks_count_update AFTER UPDATE OF project_id, status ON tasks"
    f" WHEN {_MOVED.replace('IS DISTINCT FROM', 'IS NOT')}"
    f" BEGIN {_REMOVE.format(row='OLD')}; {_ADD.format(row='NEW')}; END",
)


# Tags: one statement for every kind of change — the old row's distinct tags leave (-1), the
# new row's arrive (+1), summed per key so a tag kept is no change, applied in key order. A
# decrement applies only to a row that is there: when a project is deleted, the database may
# delete its counter rows (their cascade) before its tasks (theirs), and a -1 inserted then
# would name a project that is going.
_TAG_CHANGES = """
INSERT INTO task_tag_counts (project_id, tag, shard, tasks)
SELECT project_id, tag, shard, SUM(change) FROM (
    SELECT DISTINCT OLD.project_id AS project_id, {old_tag} AS tag, OLD.id % 8 AS shard,
           -1 AS change
      FROM {old_tags}
    UNION ALL
    SELECT DISTINCT NEW.project_id, {new_tag}, NEW.id % 8, 1 FROM {new_tags}
) AS changes
WHERE true
GROUP BY project_id, tag, shard
HAVING SUM(change) > 0 OR (SUM(change) < 0 AND EXISTS (
    SELECT 1 FROM task_tag_counts AS counted WHERE counted.project_id = changes.project_id
       AND counted.tag = changes.tag AND counted.shard = changes.shard))
ORDER BY project_id, tag, shard
ON CONFLICT (project_id, tag, shard) DO UPDATE SET tasks = task_tag_counts.tasks + excluded.tasks
"""
_TAGS_MOVED = "OLD.project_id IS DISTINCT FROM NEW.project_id OR OLD.tags IS DISTINCT FROM NEW.tags"

_POSTGRES_TAG_FUNCTION = f"""
CREATE FUNCTION task_tag_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- OLD is NULL in an INSERT trigger and NEW in a DELETE one: no tags from that side.
    {
    _TAG_CHANGES.format(
        old_tag="old_tag",
        old_tags="jsonb_array_elements_text(OLD.tags) AS old_tag",
        new_tag="new_tag",
        new_tags="jsonb_array_elements_text(NEW.tags) AS new_tag",
    )
};
    RETURN NULL;
END
$$
"""

_POSTGRES_TAG_TRIGGERS = (
    "CREATE TRIGGER tasks_tag_count_insert AFTER INSERT ON tasks"
    " FOR EACH ROW EXECUTE FUNCTION task_tag_counts_apply()",
    "CREATE TRIGGER tasks_tag_count_delete AFTER DELETE ON tasks"
    " FOR EACH ROW EXECUTE FUNCTION task_tag_counts_apply()",
    "CREATE TRIGGER tasks_tag_count_update AFTER UPDATE OF project_id, tags ON tasks"
    f" FOR EACH ROW WHEN ({_TAGS_MOVED}) EXECUTE FUNCTION task_tag_counts_apply()",
)


def _sqlite_tag_trigger(name: str, event: str, old: bool, new: bool, when: str = "") -> str:
    # SQLite has no OLD in an INSERT trigger (nor NEW in a DELETE one): that side reads an
    # empty set. ``WHERE true`` keeps the parser from reading ON CONFLICT as a join's ON.
    body = _TAG_CHANGES.format(
        old_tag="old_tag.value",
        old_tags="json_each(OLD.tags) AS old_tag" if old else "json_each('[]') AS old_tag",
        new_tag="new_tag.value",
        new_tags="json_each(NEW.tags) AS new_tag" if new else "json_each('[]') AS new_tag",
    )
    if not old:
        body = body.replace("OLD.", "NEW.")
    if not new:
        body = body.replace("NEW.", "OLD.")
    return f"CREATE TRIGGER {name} AFTER {event} ON tasks {when} BEGIN {body}; END"


_SQLITE_TAG_TRIGGERS = (
    _sqlite_tag_trigger("tasks_tag_count_insert", "INSERT", old=False, new=True),
    _sqlite_tag_trigger("tasks_tag_count_delete", "DELETE", old=True, new=False),
    _sqlite_tag_trigger(
        "tasks_tag_count_update",
        "UPDATE OF project_id, tags",
        old=True,
        new=True,
        when=f"WHEN {_TAGS_MOVED.replace('IS DISTINCT FROM', 'IS NOT')}",
    ),
)


# A task counts once per distinct tag (rows written outside the API may repeat one).
_POSTGRES_TAG_BACKFILL = """
INSERT INTO task_tag_counts (project_id, tag, shard, tasks)
SELECT tasks.project_id, tag, tasks.id % 8, count(DISTINCT tasks.id)
  FROM tasks, jsonb_array_elements_text(tasks.tags) AS tag
 GROUP BY 1, 2, 3
"""
_SQLITE_TAG_BACKFILL = """
INSERT INTO task_tag_counts (project_id, tag, shard, tasks)
SELECT tasks.project_id, tag.value, tasks.id % 8, count(DISTINCT tasks.id)
  FROM tasks, json_each(tasks.tags) AS tag
 GROUP BY 1, 2, 3
"""


def _create_counters(table: str, key: sa.Column[object]) -> None:
    """A counter table: (project, ``key``, shard) → tasks, gone with its project."""
    op.create_table(
        table,
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        key,
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("tasks", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f(f"fk_{table}_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", key.name, "shard", name=op.f(f"pk_{table}")),
    )


def upgrade() -> None:
    _create_counters("task_counts", sa.Column("status", sa.String(length=16), nullable=False))
    _create_counters("task_tag_counts", sa.Column("tag", sa.Text(), nullable=False))
    if _sqlite():
        for statement in (*_SQLITE_TRIGGERS, *_SQLITE_TAG_TRIGGERS):
            op.execute(statement)
    else:
        op.execute(_POSTGRES_FUNCTION)
        op.execute(_POSTGRES_TAG_FUNCTION)
        for statement in (*_POSTGRES_TRIGGERS, *_POSTGRES_TAG_TRIGGERS):
            op.execute(statement)
    op.execute(
        "INSERT INTO task_counts (project_id, status, shard, tasks)"
        " SELECT project_id, status, id % 8, count(*) FROM tasks GROUP BY 1, 2, 3"
    )
    op.execute(_SQLITE_TAG_BACKFILL if _sqlite() else _POSTGRES_TAG_BACKFILL)


def downgrade() -> None:
    for kind in ("count", "tag_count"):
        for event in ("insert", "delete", "update"):
            on = "" if _sqlite() else " ON tasks"
            op.execute(f"DROP TRIGGER tasks_{kind}_{event}{on}")
    if not _sqlite():
        op.execute("DROP FUNCTION task_counts_apply()")
        op.execute("DROP FUNCTION task_tag_counts_apply()")
    op.drop_table("task_tag_counts")
    op.drop_table("task_counts")


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"
