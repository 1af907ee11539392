"""Consistent database backups that are safe while the server is serving.

SQLite is copied with the online backup API (``sqlite3.Connection.backup``); PostgreSQL
is dumped by ``pg_dump`` in its custom format. Either way the copy is written to a
temporary file beside the target and only then renamed into place, so PATH is either the
complete backup or untouched — never half-written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import make_url

from taskmanager.kit.config import Settings

PARTIAL_SUFFIX = ".partial"

# asyncpg URL query options that libpq (and so pg_dump) understands under another name;
# everything else in the query tunes the asyncpg driver and means nothing to pg_dump.
_LIBPQ_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "sslmode": "PGSSLMODE",
    "ssl": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "application_name": "PGAPPNAME",
}


_LIBPQ_TARGET = frozenset(
    {"PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSERVICE"}
)


class BackupError(Exception):
    """The backup could not be made; the message is one line for the operator."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    backend: Literal["sqlite", "postgresql"]
    size_bytes: int

    @property
    def label(self) -> str:
        return "SQLite" if self.backend == "sqlite" else "PostgreSQL"


def backup_database(settings: Settings, target: Path, *, force: bool = False) -> BackupResult:
    """Write a consistent copy of the configured database to ``target``.

    SQLite: a copy of the database file (self-contained, rollback-journal mode) that a
    fresh ``taskmanager serve`` can use as is. PostgreSQL: a ``pg_dump --format=custom
    --no-owner`` archive, restored with ``pg_restore``.

    Raises ``BackupError`` when ``target`` exists and ``force`` is false, when its
    directory is missing or not writable, when the source database is missing, or when
    the copy fails; nothing is left at ``target`` (or beside it) in any of these cases.
    """
    target = _check_target(target, force=force)
    if settings.is_sqlite:
        source = settings.sqlite_path
        if source is None:
            raise BackupError("an in-memory SQLite database cannot be backed up")
        if _same_file(source, target):
            raise BackupError(f"{target} is the live database itself; choose another path")
        with _partial_file(target, force=force) as partial:
            _copy_sqlite(source, partial, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
        return BackupResult(target, "sqlite", target.stat().st_size)
    with _partial_file(target, force=force) as partial:
        _pg_dump(settings.effective_database_url, partial)
    return BackupResult(target, "postgresql", target.stat().st_size)


def _check_target(target: Path, *, force: bool) -> Path:
    target = target.expanduser().absolute()
    if target.is_dir():
        raise BackupError(f"{target} is a directory; give the backup file's name")
    if target.exists() and not force:
        raise BackupError(f"{target} already exists; pass --force to overwrite it")
    if not target.parent.is_dir():
        raise BackupError(f"directory {target.parent} does not exist")
    return target


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.samefile(b))
    except OSError:
        return False


@contextlib.contextmanager
def _partial_file(target: Path, *, force: bool) -> Iterator[Path]:
    """A temporary file in ``target``'s directory, published atomically on success.

    The rename is atomic only within one file system, hence the same directory. Without
    ``force`` the file is published with link(2), which fails rather than replace a file
    that appeared while the backup ran.
    """
    try:
        fd, name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX
        )
    except OSError as exc:
        raise BackupError(f"cannot write to {target.parent}: {exc.strerror}") from None
    os.close(fd)  # mode 0600 from mkstemp: a backup holds password hashes and tokens
    partial = Path(name)
    try:
        yield partial
        _fsync(partial)
        _publish(partial, target, force=force)
        _fsync(target.parent)
    finally:
        partial.unlink(missing_ok=True)


def _publish(partial: Path, target: Path, *, force: bool) -> None:
    if force:
        os.replace(partial, target)
        return
    try:
        os.link(partial, target)
    except FileExistsError:
        raise BackupError(f"{target} already exists; pass --force to overwrite it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise BackupError(f"cannot write {target}: {exc.strerror}") from None
        # A file system without hard links: fall back to a checked rename.
        if target.exists():
            raise BackupError(f"{target} already exists; pass --force to overwrite it") from None
        os.replace(partial, target)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_sqlite(source: Path, destination: Path, *, busy_timeout_ms: int) -> None:
    """Copy ``source`` into ``destination`` with SQLite's online backup API.

    The copy is made in one ``sqlite3_backup_step`` so it is one consistent snapshot.
    Copying in several steps would not help writers here: the database runs in WAL mode,
    where the backup's read transaction never blocks a writer, and any write between two
    steps makes SQLite restart the backup from the first page
    (https://www.sqlite.org/c3ref/backup_finish.html), so under steady writes a stepped
    copy might never finish. The price of the snapshot is that checkpoints cannot pass it,
    so the WAL file grows until the copy is done.
    """
    if not source.is_file():
        raise BackupError(f"no SQLite database at {source}")
    try:
        # mode=rw: never create an empty database where the live one was expected.
        src = sqlite3.connect(f"{source.absolute().as_uri()}?mode=rw", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {source}: {exc}") from None
    try:
        src.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        dst = sqlite3.connect(destination)
        try:
            src.backup(dst, pages=-1)
            # A single file with no -wal beside it: copyable and openable read-only.
            dst.execute("PRAGMA journal_mode=DELETE")
            (check,) = dst.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise BackupError(f"the copy failed its integrity check: {check}")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup of {source} failed: {exc}") from None
    finally:
        src.close()


def _pg_dump(database_url: str, destination: Path) -> None:
    """Dump the database with ``pg_dump --format=custom --no-owner`` into ``destination``.

    pg_dump reads one repeatable-read snapshot and takes only ACCESS SHARE locks, so the
    server keeps reading and writing; only schema changes (migrations) wait for it.
    The password goes through the environment (PGPASSWORD), never the command line.
    """
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError(
            "pg_dump is not on PATH; back up PostgreSQL with "
            "pg_dump --format=custom --no-owner (see the README's Backups section)"
        )
    command = [
        pg_dump,
        "--format=custom",
        "--no-owner",
        "--no-password",
        f"--file={destination}",
    ]
    try:
        result = subprocess.run(  # noqa: S603 - fixed program, arguments are not a shell
            command,
            env=_libpq_environment(database_url),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
    except OSError as exc:
        raise BackupError(f"cannot run {pg_dump}: {exc.strerror}") from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.decode(errors="replace").splitlines()]
        reason = next((line for line in lines if line), f"exit status {result.returncode}")
        raise BackupError(f"pg_dump failed: {reason[:300]}")


def _libpq_environment(database_url: str) -> dict[str, str]:
    """libpq's environment for an asyncpg SQLAlchemy URL (PGHOST, PGUSER, PGPASSWORD...)."""
    url = make_url(database_url)
    # The configured URL names the database; stray PG* targeting variables must not
    # point pg_dump elsewhere. TLS files, PGPASSFILE and timeouts are left to libpq.
    env = {k: v for k, v in os.environ.items() if k not in _LIBPQ_TARGET}
    fields = {
        "PGHOST": url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password,
        "PGDATABASE": url.database,
    }
    env.update({name: value for name, value in fields.items() if value})
    for key, value in url.query.items():
        name = _LIBPQ_ENV.get(key)
        if name is None:
            continue
        text = value if isinstance(value, str) else value[-1]
        if key == "ssl" and text.lower() in {"true", "1"}:
            text = "require"
        env[name] = text
    return env
