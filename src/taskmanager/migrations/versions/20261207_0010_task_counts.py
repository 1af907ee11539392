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

Every trigger applies its changes as one ``INSERT ... SELECT ... ORDER BY ... ON CONFLICT DO
UPDATE`` per table, summed per key and in key order, so PostgreSQL locks counter rows in
one order everywhere (first ``task_counts``, then ``task_tag_counts``, each by key) and two
opposite changes in one project cannot deadlock on them. On PostgreSQL, inserts and deletes
are counted once per statement, from its transition table: a row-level trigger updated the
same counter row once per task, and in one transaction each update of a row walks the
versions the earlier ones left (MVCC), so a bulk insert or a deleted project's cascade
took time in the square of its tasks (40,000 tasks: 9 s). A change of status, tags or
project is counted per row (its ``WHEN`` skips every other update at no cost); the API
changes one task per statement. SQLite updates rows in place: its triggers are per row.

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


def _apply(table: str, key: str, changes: str) -> str:
    """Add each ``change`` of ``changes`` (rows of project_id, ``key``, shard, change) to
    ``table``, summed per key — a task that keeps its key is no change — and in key order.

    A decrement applies only to a counter row that is there: when a project is deleted, the
    database may delete its counter rows (their cascade) before its tasks (theirs), and a -1
    inserted then would name a project that is going. ``WHERE true`` keeps SQLite's parser
    from reading ``ON CONFLICT`` as a join's ``ON``.
    """
    return f"""
INSERT INTO {table} (project_id, {key}, shard, tasks)
SELECT project_id, {key}, shard, SUM(change) FROM ({changes}) AS changes
WHERE true
GROUP BY project_id, {key}, shard
HAVING SUM(change) > 0 OR (SUM(change) < 0 AND EXISTS (
    SELECT 1 FROM {table} AS counted WHERE counted.project_id = changes.project_id
       AND counted.{key} = changes.{key} AND counted.shard = changes.shard))
ORDER BY project_id, {key}, shard
ON CONFLICT (project_id, {key}, shard) DO UPDATE SET tasks = {table}.tasks + excluded.tasks"""


def _row_status(row: str, change: int) -> str:
    return f"SELECT {row}.project_id AS project_id, {row}.status AS status, {row}.id % 8 AS shard, {change} AS change"


def _tags_of(row: str, sqlite: bool) -> tuple[str, str]:
    """The FROM item of a row's tags (column ``value``) and the condition on it: the string
    elements of its ``tags`` array — the elements the ``tag`` filter can match (``tags @>
    '["x"]'`` on PostgreSQL, ``json_each`` on SQLite); anything else a row written outside the
    API may hold (a number, a scalar, invalid JSON) is no tag, and no reason to refuse a write.
    """
    tags = f"{row}.tags"
    if sqlite:
        valid = f"CASE WHEN json_valid({tags}) THEN {tags} ELSE '[]' END"
        return f"json_each({valid})", "tag.type = 'text'"
    array = f"CASE jsonb_typeof({tags}) WHEN 'array' THEN {tags} ELSE '[]'::jsonb END"
    elements = (
        f"(SELECT element #>> '{{}}' AS value FROM jsonb_array_elements({array}) AS element"
        " WHERE jsonb_typeof(element) = 'string')"
    )
    return elements, "true"


def _row_tags(row: str, change: int, sqlite: bool) -> str:
    # DISTINCT: a task counts once per tag (rows written outside the API may repeat one).
    elements, condition = _tags_of(row, sqlite)
    return (
        f"SELECT DISTINCT {row}.project_id AS project_id, tag.value AS tag,"
        f" {row}.id % 8 AS shard, {change} AS change FROM {elements} AS tag WHERE {condition}"
    )


def _both(first: str, second: str) -> str:
    return f"{first} UNION ALL {second}"


_CHANGED = (
    "OLD.project_id IS DISTINCT FROM NEW.project_id OR OLD.status IS DISTINCT FROM NEW.status"
    " OR OLD.tags IS DISTINCT FROM NEW.tags"
)

# PostgreSQL: inserts and deletes per statement (``changed_rows`` is the transition table:
# NEW TABLE of an insert, OLD TABLE of a delete), changes per row.
_POSTGRES_FUNCTIONS: tuple[str, ...] = (
    f"""
CREATE FUNCTION task_counts_apply_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    step integer := CASE TG_OP WHEN 'INSERT' THEN 1 ELSE -1 END;
BEGIN
    {
        _apply(
            "task_counts",
            "status",
            "SELECT project_id, status, id % 8 AS shard, step AS change FROM changed_rows",
        )
    };
    {
        _apply(
            "task_tag_counts",
            "tag",
            "SELECT DISTINCT task.id, task.project_id, tag.value AS tag, task.id % 8 AS shard,"
            " step AS change"
            f" FROM changed_rows AS task, LATERAL {_tags_of('task', sqlite=False)[0]} AS tag",
        )
    };
    RETURN NULL;
END
$$""",
    f"""
CREATE FUNCTION task_counts_apply_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.project_id IS DISTINCT FROM NEW.project_id OR OLD.status IS DISTINCT FROM NEW.status
    THEN
        {_apply("task_counts", "status", _both(_row_status("OLD", -1), _row_status("NEW", 1)))};
    END IF;
    IF OLD.project_id IS DISTINCT FROM NEW.project_id OR OLD.tags IS DISTINCT FROM NEW.tags THEN
        {
        _apply(
            "task_tag_counts",
            "tag",
            _both(
                _row_tags("OLD", -1, sqlite=False),
                _row_tags("NEW", 1, sqlite=False),
            ),
        )
    };
    END IF;
    RETURN NULL;
END
$$""",
)

# A deleted project's counter rows go with it. Not a foreign key: its check would lock the
# project row (FOR KEY SHARE) whenever a task's change inserts a counter row, and a task
# write holding its task row while a project deletion holding the project row waits for that
# task (its cascade) would deadlock — a change of status or tags never touched the project.
_FORGET_PROJECT = (
    "DELETE FROM task_counts WHERE project_id = OLD.id;"
    " DELETE FROM task_tag_counts WHERE project_id = OLD.id"
)
_POSTGRES_FUNCTIONS += (
    f"""
CREATE FUNCTION task_counts_forget_project() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_FORGET_PROJECT};
    RETURN NULL;
END
$$""",
    """
CREATE FUNCTION task_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_counts;
    DELETE FROM task_tag_counts;
    RETURN NULL;
END
$$""",
)

_POSTGRES_TRIGGERS = (
    "CREATE TRIGGER projects_counts_delete AFTER DELETE ON projects"
    " FOR EACH ROW EXECUTE FUNCTION task_counts_forget_project()",
    # TRUNCATE fires no DELETE trigger.
    "CREATE TRIGGER tasks_counts_truncate AFTER TRUNCATE ON tasks"
    " FOR EACH STATEMENT EXECUTE FUNCTION task_counts_truncated()",
    "CREATE TRIGGER tasks_counts_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS"
    " changed_rows FOR EACH STATEMENT EXECUTE FUNCTION task_counts_apply_rows()",
    "CREATE TRIGGER tasks_counts_delete AFTER DELETE ON tasks REFERENCING OLD TABLE AS"
    " changed_rows FOR EACH STATEMENT EXECUTE FUNCTION task_counts_apply_rows()",
    "CREATE TRIGGER tasks_counts_update AFTER UPDATE OF project_id, status, tags ON tasks"
    f" FOR EACH ROW WHEN ({_CHANGED}) EXECUTE FUNCTION task_counts_apply_change()",
)


def _sqlite_trigger(event: str, changes: tuple[str, str], when: str = "") -> str:
    status, tags = changes
    name = event.split()[0].lower()
    return (
        f"CREATE TRIGGER tasks_counts_{name} AFTER {event} ON tasks {when} BEGIN"
        f" {_apply('task_counts', 'status', status)};"
        f" {_apply('task_tag_counts', 'tag', tags)}; END"
    )


_SQLITE_TRIGGERS = (
    f"CREATE TRIGGER projects_counts_delete AFTER DELETE ON projects BEGIN {_FORGET_PROJECT}; END",
    _sqlite_trigger("INSERT", (_row_status("NEW", 1), _row_tags("NEW", 1, sqlite=True))),
    _sqlite_trigger("DELETE", (_row_status("OLD", -1), _row_tags("OLD", -1, sqlite=True))),
    _sqlite_trigger(
        "UPDATE OF project_id, status, tags",
        (
            _both(_row_status("OLD", -1), _row_status("NEW", 1)),
            _both(_row_tags("OLD", -1, sqlite=True), _row_tags("NEW", 1, sqlite=True)),
        ),
        when=f"WHEN {_CHANGED.replace('IS DISTINCT FROM', 'IS NOT')}",
    ),
)


# A task counts once per distinct tag (rows written outside the API may repeat one).
_POSTGRES_TAG_BACKFILL = f"""
INSERT INTO task_tag_counts (project_id, tag, shard, tasks)
SELECT tasks.project_id, tag.value, tasks.id % 8, count(DISTINCT tasks.id)
  FROM tasks, LATERAL {_tags_of("tasks", sqlite=False)[0]} AS tag
 GROUP BY 1, 2, 3
"""
_SQLITE_TAG_BACKFILL = f"""
INSERT INTO task_tag_counts (project_id, tag, shard, tasks)
SELECT tasks.project_id, tag.value, tasks.id % 8, count(DISTINCT tasks.id)
  FROM tasks, {_tags_of("tasks", sqlite=True)[0]} AS tag
 WHERE {_tags_of("tasks", sqlite=True)[1]}
 GROUP BY 1, 2, 3
"""


def _create_counters(table: str, key: sa.Column[object]) -> None:
    """A counter table: (project, ``key``, shard) → tasks (no foreign key: ``_FORGET_PROJECT``)."""
    op.create_table(
        table,
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        key,
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("tasks", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", key.name, "shard", name=op.f(f"pk_{table}")),
    )


def upgrade() -> None:
    _create_counters("task_counts", sa.Column("status", sa.String(length=16), nullable=False))
    _create_counters("task_tag_counts", sa.Column("tag", sa.Text(), nullable=False))
    for statement in _SQLITE_TRIGGERS if _sqlite() else _POSTGRES_FUNCTIONS + _POSTGRES_TRIGGERS:
        op.execute(statement)
    op.execute(
        "INSERT INTO task_counts (project_id, status, shard, tasks)"
        " SELECT project_id, status, id % 8, count(*) FROM tasks GROUP BY 1, 2, 3"
    )
    op.execute(_SQLITE_TAG_BACKFILL if _sqlite() else _POSTGRES_TAG_BACKFILL)


def downgrade() -> None:
    on = "" if _sqlite() else " ON tasks"
    for event in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER tasks_counts_{event}{on}")
    op.execute("DROP TRIGGER projects_counts_delete" + ("" if _sqlite() else " ON projects"))
    if not _sqlite():
        op.execute("DROP TRIGGER tasks_counts_truncate ON tasks")
        for function in (
            "task_counts_apply_rows",
            "task_counts_apply_change",
            "task_counts_forget_project",
            "task_counts_truncated",
        ):
            op.execute(f"DROP FUNCTION {function}()")
    op.drop_table("task_tag_counts")
    op.drop_table("task_counts")


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"
