"""The two database backends the bench seeds and copies: PostgreSQL and SQLite.

Plain SQL over asyncpg and sqlite3 against the schema ``taskmanager migrate`` builds; no
import from the app. Caches are template databases on PostgreSQL (copied with ``CREATE
DATABASE ... TEMPLATE``) and files on SQLite.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's DateTime text in SQLite (naive UTC)
PG_PREFIX = "tm_bench_"
TASK_COLUMNS = (
    "project_id",
    "title",
    "description",
    "status",
    "priority",
    "due_date",
    "tags",
    "assignee_id",
    "created_by",
    "created_at",
    "updated_at",
    "completed_at",
    "version",
    # What ``q`` searches: the app's search fold of title and description (bench/seeding.py
    # computes it as the app does; the app fills these columns on every write).
    "title_folded",
    "description_folded",
)


def chunks(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Backend(ABC):
    """Where databases live. A handle names one (a database name, a file path); ``url`` is
    the app's ``TASKMANAGER_DATABASE_URL`` for it, ``dsn`` the baseline's ``BENCH_DSN``."""

    name: str

    @abstractmethod
    def url(self, handle: str) -> str: ...

    @abstractmethod
    def dsn(self, handle: str) -> str: ...

    @abstractmethod
    def scratch(self, label: str) -> str:
        """A handle private to this bench process."""

    def build_handle(self, dataset: str) -> str:
        """Where a cache is built before ``promote`` makes it the cache."""
        return self.scratch(f"build_{dataset}")

    @abstractmethod
    def create_empty(self, handle: str) -> None: ...

    @abstractmethod
    def drop(self, handle: str) -> None: ...

    @abstractmethod
    def fingerprint(self, handle: str) -> str:
        """The schema as text: tables, columns, indexes, constraints, migration revision."""

    @abstractmethod
    def load_tasks(self, handle: str, rows: Iterator[tuple[Any, ...]]) -> None:
        """Bulk-insert rows given in ``TASK_COLUMNS`` order."""

    @abstractmethod
    def finish(self, handle: str) -> None:
        """Make freshly loaded data look like a database that has been running a while."""

    @abstractmethod
    def query(self, handle: str, sql: str, *args: Any) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def placeholder(self, n: int) -> str:
        """The driver's n-th (1-based) query parameter."""

    @abstractmethod
    def seek_value(self, value: Any) -> str:
        """A ``created_at`` as read from the database, as the baseline's keyset parameter."""

    @abstractmethod
    def cache_handle(self, dataset: str, key: str) -> str: ...

    @abstractmethod
    def cached(self, dataset: str) -> list[str]:
        """Cache handles of a dataset, oldest first."""

    @abstractmethod
    def promote(self, handle: str, cache: str) -> None:
        """Turn a freshly built database into the cache."""

    @abstractmethod
    def copy(self, cache: str, handle: str) -> None:
        """A private copy of a cache for one run."""


class Postgres(Backend):
    name = "postgresql"

    def __init__(self, server: str) -> None:
        self.server = server  # user@host:port

    def _run(self, database: str, work: Callable[[Any], Any]) -> Any:
        async def go() -> Any:
            conn = await asyncpg.connect(f"postgresql://{self.server}/{database}")
            try:
                return await work(conn)
            finally:
                await conn.close()

        return asyncio.run(go())

    def _admin(self, sql: str) -> None:
        self._run("postgres", lambda conn: conn.execute(sql))

    def url(self, handle: str) -> str:
        return f"postgresql+asyncpg://{self.server}/{handle}"

    def dsn(self, handle: str) -> str:
        return f"postgresql://{self.server}/{handle}"

    def version(self) -> str:
        return str(self._run("postgres", lambda conn: conn.fetchval("SHOW server_version")))

    def scratch(self, label: str) -> str:
        return f"{PG_PREFIX}{os.getpid()}_{label}"

    def prune_abandoned(self) -> None:
        """Drop run databases left by bench processes that no longer exist."""
        rows = self._run(
            "postgres",
            lambda conn: conn.fetch(
                "SELECT datname FROM pg_database WHERE datname ~ $1", f"^{PG_PREFIX}[0-9]+_"
            ),
        )
        for (name,) in rows:
            pid = int(name.removeprefix(PG_PREFIX).split("_", 1)[0])
            if not Path(f"/proc/{pid}").exists():
                self.drop(name)

    def create_empty(self, handle: str) -> None:
        self.drop(handle)
        self._admin(f'CREATE DATABASE "{handle}"')

    def fingerprint(self, handle: str) -> str:
        sql = """
            SELECT string_agg(line, E'\\n' ORDER BY line) FROM (
              SELECT format('column %s.%s %s %s %s', table_name, column_name, data_type,
                            is_nullable, column_default) AS line
                FROM information_schema.columns WHERE table_schema = 'public'
              UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
              UNION ALL SELECT format('constraint %s %s', conname, pg_get_constraintdef(oid))
                FROM pg_constraint WHERE connamespace = 'public'::regnamespace
              UNION ALL SELECT 'trigger ' || pg_get_triggerdef(oid)
                FROM pg_trigger WHERE NOT tgisinternal
              UNION ALL SELECT 'extension ' || extname FROM pg_extension
              UNION ALL SELECT 'revision ' || version_num FROM alembic_version
            ) lines
        """
        return str(self._run(handle, lambda conn: conn.fetchval(sql)))

    def load_tasks(self, handle: str, rows: Iterator[tuple[Any, ...]]) -> None:
        async def copy(conn: Any) -> None:
            for chunk in chunks(rows, 100_000):
                await conn.copy_records_to_table("tasks", records=chunk, columns=TASK_COLUMNS)

        self._run(handle, copy)

    def finish(self, handle: str) -> None:
        # Autovacuum would get there on a live server; the bench should not wait for it.
        self._run(handle, lambda conn: conn.execute("VACUUM ANALYZE"))

    def query(self, handle: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        rows = self._run(handle, lambda conn: conn.fetch(sql, *args))
        return [tuple(row) for row in rows]

    def cache_handle(self, dataset: str, key: str) -> str:
        return f"{PG_PREFIX}cache_{dataset}_{key}"

    def cached(self, dataset: str) -> list[str]:
        rows = self._run(
            "postgres",
            lambda conn: conn.fetch(
                "SELECT datname FROM pg_database WHERE datname ~ $1 ORDER BY oid",
                f"^{PG_PREFIX}cache_{dataset}_[0-9a-f]+$",
            ),
        )
        return [name for (name,) in rows]

    def promote(self, handle: str, cache: str) -> None:
        self._admin(f'ALTER DATABASE "{handle}" RENAME TO "{cache}"')

    def copy(self, cache: str, handle: str) -> None:
        self.drop(handle)
        # FILE_COPY copies the files instead of WAL-logging every block: seconds, not minutes.
        sql = f'CREATE DATABASE "{handle}" TEMPLATE "{cache}" STRATEGY FILE_COPY'
        for attempt in range(10):
            try:
                self._admin(sql)
                return
            except asyncpg.ObjectInUseError:
                # Another bench process is copying the same template right now.
                if attempt == 9:
                    raise
                time.sleep(1)

    def drop(self, handle: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{handle}" WITH (FORCE)')

    def seek_value(self, value: Any) -> str:
        assert isinstance(value, datetime)
        return value.isoformat()

    def placeholder(self, n: int) -> str:
        return f"${n}"


class Sqlite(Backend):
    name = "sqlite"

    def __init__(self, cache_dir: Path, run_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.run_dir = run_dir

    def url(self, handle: str) -> str:
        return f"sqlite+aiosqlite:///{handle}"

    def dsn(self, handle: str) -> str:
        return f"sqlite:///{handle}"

    def scratch(self, label: str) -> str:
        return str(self.run_dir / f"{label}.db")

    def build_handle(self, dataset: str) -> str:
        # Beside the cache, so promoting it is an atomic rename on one file system.
        return str(self.cache_dir / f".build-{os.getpid()}-{dataset}.db")

    def _connect(self, handle: str) -> closing[sqlite3.Connection]:
        return closing(sqlite3.connect(handle, isolation_level=None))

    def create_empty(self, handle: str) -> None:
        self.drop(handle)
        Path(handle).parent.mkdir(parents=True, exist_ok=True)  # the file is migrate's to make

    def fingerprint(self, handle: str) -> str:
        with self._connect(handle) as conn:
            schema = conn.execute(
                "SELECT type, name, sql FROM sqlite_master ORDER BY type, name"
            ).fetchall()
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        return json.dumps([schema, revision])

    def load_tasks(self, handle: str, rows: Iterator[tuple[Any, ...]]) -> None:
        sql = (
            f"INSERT INTO tasks ({', '.join(TASK_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in TASK_COLUMNS)})"
        )

        def text(row: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(
                v.astimezone(UTC).replace(tzinfo=None).strftime(SQLITE_TIME)
                if isinstance(v, datetime)
                else v
                for v in row
            )

        with self._connect(handle) as conn:
            conn.execute("PRAGMA synchronous=OFF")  # a cache being built: rebuilt if lost
            for chunk in chunks(rows, 100_000):
                conn.execute("BEGIN")
                conn.executemany(sql, (text(row) for row in chunk))
                conn.execute("COMMIT")

    def finish(self, handle: str) -> None:
        # No ANALYZE: SQLite has no autovacuum to run it, so a live database has no statistics
        # unless the app gathers them itself. Fold the WAL into the file so a copy is complete.
        with self._connect(handle) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def query(self, handle: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._connect(handle) as conn:
            return [tuple(row) for row in conn.execute(sql, args).fetchall()]

    def cache_handle(self, dataset: str, key: str) -> str:
        return str(self.cache_dir / f"{dataset}-{key}.db")

    def cached(self, dataset: str) -> list[str]:
        if not self.cache_dir.is_dir():
            return []
        files = sorted(self.cache_dir.glob(f"{dataset}-*.db"), key=lambda p: p.stat().st_mtime)
        return [str(path) for path in files]

    def promote(self, handle: str, cache: str) -> None:
        os.replace(handle, cache)
        for suffix in ("-wal", "-shm"):
            Path(handle + suffix).unlink(missing_ok=True)

    def copy(self, cache: str, handle: str) -> None:
        self.drop(handle)
        Path(handle).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cache, handle)
        os.utime(cache)  # most recently used: the last to be pruned

    def drop(self, handle: str) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(handle + suffix).unlink(missing_ok=True)

    def seek_value(self, value: Any) -> str:
        return str(value)

    def placeholder(self, n: int) -> str:
        return "?"
