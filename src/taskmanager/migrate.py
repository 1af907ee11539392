"""Run and check Alembic migrations from code (the CLI, ``serve`` on SQLite, the tests)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from taskmanager.models import Base
from taskmanager.models.base import schema_filter

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


@dataclass(frozen=True, slots=True)
class Applied:
    """One migration that ``upgrade`` applied."""

    revision: str
    summary: str  # the first line of its docstring


def upgrade(database_url: str, revision: str = "head") -> list[Applied]:
    """Bring the database to ``revision`` (blocking; call from sync code or a thread).

    Returns the migrations applied, oldest first: empty when it was already current.
    """
    config = alembic_config(database_url)
    applied: list[Applied] = []

    def record(*, step: Any, **_: Any) -> None:
        if step.is_upgrade:
            script = step.up_revision
            doc = (getattr(script, "doc", "") or "").strip().splitlines()
            applied.append(Applied(str(step.up_revision_id), doc[0] if doc else ""))

    config.attributes["on_version_apply"] = record
    command.upgrade(config, revision)
    return applied


def head_revision() -> str:
    """The newest migration this code ships."""
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    return str(head)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> list[Applied]:
    # env.py runs its own event loop, so keep it off ours.
    return await asyncio.to_thread(upgrade, database_url, revision)


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "include_object": schema_filter(connection.dialect.name)},
    )
    return list(compare_metadata(context, Base.metadata))


async def schema_drift(database_url: str) -> list[object]:
    """What the models have that the migrated database lacks (empty when in step)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_diff)
    finally:
        await engine.dispose()
