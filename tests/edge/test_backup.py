"""``taskmanager backup``: a consistent copy taken while a real server keeps writing.

The copy is then served by a fresh ``taskmanager serve``, which must answer every task the
copy holds exactly as the original server acknowledged it. Error cases leave nothing
behind: neither the target nor a partial file beside it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from taskmanager.backup import PARTIAL_SUFFIX, _libpq_environment
from taskmanager.cli import app as cli
from tests.conftest import PG_HOST, PG_PORT, PG_USER, require_service
from tests.serve_support import TASKMANAGER, die_with_parent, start_server, stop_server

SECRET = "backup-test-secret-key-0123456789abcdef"
PASSWORD = "Backup-pass1"
# Enough tasks before the backup that the copy spans many pages, not one.
TASKS_BEFORE_BACKUP = 60
TASKS_AFTER_BACKUP = 20
WRITER_MAX_TASKS = 3000
WRITER_MAX_SECONDS = 120


# --- helpers -------------------------------------------------------------------------


def _env(settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMANAGER_")}
    env.update(settings)
    return env


def _settings(data_dir: Path, database_url: str | None = None) -> dict[str, str]:
    settings = {
        "TASKMANAGER_DATA_DIR": str(data_dir),
        "TASKMANAGER_SECRET_KEY": SECRET,
        "TASKMANAGER_RATE_LIMIT_ENABLED": "false",
        "TASKMANAGER_LOG_LEVEL": "WARNING",
    }
    if database_url:
        settings["TASKMANAGER_DATABASE_URL"] = database_url
    return settings


def run_cli(args: list[str], settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command in its own process, as an operator runs it beside a live server."""
    return subprocess.run(
        [TASKMANAGER, *args],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def invoke(args: list[str], settings: dict[str, str], *, path: str | None = None) -> Result:
    """The command in this process (main thread: it installs a SIGTERM handler)."""
    env = dict(settings)
    if path is not None:
        env["PATH"] = path
    return CliRunner().invoke(cli, args, env=env)


def _sign_up(base_url: str) -> dict[str, str]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        user = {"email": "keeper@example.com", "username": "keeper", "password": PASSWORD}
        assert client.post("/api/v1/users", json=user).status_code == 201
        token = client.post(
            "/api/v1/auth/token", data={"username": "keeper", "password": PASSWORD}
        ).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


class TaskWriter(threading.Thread):
    """Creates tasks one after another over HTTP and keeps every acknowledged body.

    Bounded in count and time; a failed request is kept and re-raised by ``stop``.
    """

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.base_url, self.headers = base_url, headers
        self.acknowledged: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self._stop_requested = threading.Event()
        self._progress = threading.Condition()

    def run(self) -> None:
        deadline = time.monotonic() + WRITER_MAX_SECONDS
        try:
            with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=30) as c:
                for number in range(WRITER_MAX_TASKS):
                    if self._stop_requested.is_set() or time.monotonic() > deadline:
                        break
                    body = {
                        "title": f"task {number}",
                        "description": f"written while backing up, number {number} " * 20,
                        "tags": [f"batch{number % 7}"],
                    }
                    response = c.post("/api/v1/tasks", json=body)
                    assert response.status_code == 201, response.text
                    with self._progress:
                        self.acknowledged.append(response.json())
                        self._progress.notify_all()
        except BaseException as exc:
            self.error = exc
        finally:
            with self._progress:
                self._progress.notify_all()

    def count(self) -> int:
        with self._progress:
            return len(self.acknowledged)

    def wait_for(self, count: int) -> None:
        with self._progress:
            while len(self.acknowledged) < count:
                assert self.error is None, self.error
                assert self.is_alive(), f"writer stopped after {len(self.acknowledged)} tasks"
                self._progress.wait(timeout=1)

    def stop(self) -> list[dict[str, Any]]:
        self._stop_requested.set()
        self.join(timeout=60)
        if self.error is not None:
            raise self.error
        return list(self.acknowledged)


def _backup_while_writing(
    cwd: Path, live: dict[str, str], target: Path
) -> tuple[list[dict[str, Any]], int, dict[str, str]]:
    """Serve ``live``, and run ``taskmanager backup`` while tasks keep being created.

    Returns every acknowledged task, how many were acknowledged before the backup
    started, and the headers of the user who wrote them.
    """
    target.parent.mkdir()
    server, port = start_server(cwd, live)
    base_url = f"http://127.0.0.1:{port}"
    try:
        headers = _sign_up(base_url)
        writer = TaskWriter(base_url, headers)
        writer.start()
        try:
            writer.wait_for(TASKS_BEFORE_BACKUP)
            before = writer.count()
            result = run_cli(["backup", str(target)], live)
            assert result.returncode == 0, result.stderr
            assert str(target) in result.stdout
            # The server kept taking writes after the backup, on the live database.
            writer.wait_for(writer.count() + TASKS_AFTER_BACKUP)
        finally:
            acknowledged = writer.stop()
    finally:
        stop_server(server)
    return acknowledged, before, headers


def _assert_consistent_copy(
    copied_ids: list[int], acknowledged: list[dict[str, Any]], before: int
) -> None:
    acknowledged_ids = [task["id"] for task in acknowledged]
    # Everything acknowledged before the backup began is in it ...
    assert set(acknowledged_ids[:before]) <= set(copied_ids)
    # ... and, with one writer committing in order, a snapshot is a prefix: no gaps.
    # (The last copied task may be committed but not yet acknowledged when the writer
    # stopped, hence the comparison against the acknowledged ids it has.)
    assert copied_ids == acknowledged_ids[: len(copied_ids)]
    assert len(copied_ids) < len(acknowledged_ids), "writes after the backup are not in it"


def _assert_served_by_fresh_instance(
    cwd: Path, restored: dict[str, str], headers: dict[str, str], copied: list[dict[str, Any]]
) -> None:
    """A fresh ``taskmanager serve`` on the restored copy answers every copied task as the
    original acknowledged it, and keeps writing after it (ids continue past the copy's)."""
    fresh, port = start_server(cwd, restored)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as c:
            listing = c.get("/api/v1/tasks", params={"limit": 1})
            assert listing.status_code == 200, listing.text
            assert listing.json()["total"] == len(copied)
            for task in copied:
                response = c.get(f"/api/v1/tasks/{task['id']}")
                assert response.status_code == 200, response.text
                assert response.json() == task
            created = c.post("/api/v1/tasks", json={"title": "after the restore"})
            assert created.status_code == 201, created.text
            assert created.json()["id"] > max(task["id"] for task in copied)
    finally:
        stop_server(fresh)


def _no_files_left(directory: Path, expected: set[str]) -> None:
    names = {p.name for p in directory.iterdir()}
    assert names == expected, names
    assert not [n for n in names if n.endswith(PARTIAL_SUFFIX)]


# --- SQLite ----------------------------------------------------------------------------


def test_sqlite_backup_while_serving_is_served_by_a_fresh_instance(tmp_path: Path) -> None:
    target = tmp_path / "backups" / "taskmanager.db"
    acknowledged, before, headers = _backup_while_writing(
        tmp_path, _settings(tmp_path / "live"), target
    )

    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # it holds password hashes
    _no_files_left(target.parent, {"taskmanager.db"})  # no -wal, -journal or partial file
    with sqlite3.connect(f"{target.as_uri()}?mode=ro", uri=True) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        copied_ids = [row[0] for row in copy.execute("SELECT id FROM tasks ORDER BY id")]
    _assert_consistent_copy(copied_ids, acknowledged, before)

    # A fresh instance, with a data dir of its own, serves the copy as it is.
    restored = _settings(tmp_path / "restored", f"sqlite+aiosqlite:///{target}")
    _assert_served_by_fresh_instance(tmp_path, restored, headers, acknowledged[: len(copied_ids)])


def test_sqlite_force_replaces_an_existing_backup(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data")
    assert invoke(["migrate"], settings).exit_code == 0
    target = tmp_path / "out" / "copy.db"
    target.parent.mkdir()
    target.write_bytes(b"an older backup")

    result = invoke(["backup", "--force", str(target)], settings)

    assert result.exit_code == 0, result.output
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert copy.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
    _no_files_left(target.parent, {"copy.db"})


# --- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture
def pg_databases() -> Iterator[list[str]]:
    """Names handed out by ``new_pg_database``; each is dropped after the test."""
    names: list[str] = []
    yield names
    for name in names:
        _psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_PG_ARGS = ("psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER)


def _psql(database: str, sql: str) -> str:
    result = subprocess.run(
        [*_PG_ARGS, "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def new_pg_database(names: list[str]) -> tuple[str, str]:
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    name = f"taskmanager_backup_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    _psql("postgres", f'CREATE DATABASE "{name}"')
    names.append(name)
    return name, f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def test_postgres_backup_while_serving_restores_into_a_fresh_instance(
    tmp_path: Path, pg_databases: list[str]
) -> None:
    _, live_url = new_pg_database(pg_databases)
    live = _settings(tmp_path / "live", live_url)
    assert run_cli(["migrate"], live).returncode == 0
    target = tmp_path / "backups" / "taskmanager.dump"
    acknowledged, before, headers = _backup_while_writing(tmp_path, live, target)

    _no_files_left(target.parent, {"taskmanager.dump"})
    assert target.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    restored_name, restored_url = new_pg_database(pg_databases)
    restore_args = ["--no-owner", "--exit-on-error", "-d", restored_name, str(target)]
    restore = subprocess.run(
        ["pg_restore", *_PG_ARGS[1:], *restore_args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert restore.returncode == 0, restore.stderr
    copied_ids = [
        int(line) for line in _psql(restored_name, "SELECT id FROM tasks ORDER BY id").split()
    ]
    _assert_consistent_copy(copied_ids, acknowledged, before)

    # The restored database is at the head revision: migrate has nothing to do.
    restored = _settings(tmp_path / "restored", restored_url)
    migrated = run_cli(["migrate"], restored)
    assert migrated.returncode == 0, migrated.stderr
    _assert_served_by_fresh_instance(tmp_path, restored, headers, acknowledged[: len(copied_ids)])


def test_postgres_backup_without_pg_dump_names_the_tool(
    tmp_path: Path, pg_databases: list[str]
) -> None:
    _, url = new_pg_database(pg_databases)
    target = tmp_path / "out" / "db.dump"
    target.parent.mkdir()

    result = invoke(["backup", str(target)], _settings(tmp_path / "data", url), path="/nonexistent")

    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "pg_dump is not on PATH" in result.stderr
    assert "--format=custom --no-owner" in result.stderr
    _no_files_left(target.parent, set())


def test_postgres_pg_dump_failure_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    missing = f"taskmanager_missing_{uuid.uuid4().hex[:8]}"
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{missing}"
    target = tmp_path / "out" / "db.dump"
    target.parent.mkdir()

    result = invoke(["backup", str(target)], _settings(tmp_path / "data", url))

    assert result.exit_code == 1
    assert result.stderr.startswith("error: pg_dump failed: ")
    assert f'"{missing}" does not exist' in result.stderr
    assert result.stderr.strip().count("\n") == 0
    _no_files_left(target.parent, set())


def test_sigterm_during_pg_dump_removes_the_partial_file(tmp_path: Path) -> None:
    """A stand-in pg_dump that writes half an archive and hangs, so SIGTERM lands mid-copy.

    The stand-in replaces only the external tool (which cannot be paused on cue); what is
    tested is the command's own cleanup.
    """
    tools = tmp_path / "bin"
    tools.mkdir()
    fake = tools / "pg_dump"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, time\n"
        "path = next(a.split('=', 1)[1] for a in sys.argv if a.startswith('--file='))\n"
        "with open(path, 'wb') as f:\n"
        "    f.write(b'PGDMP half an archive')\n"
        "time.sleep(120)\n"
    )
    fake.chmod(0o755)
    target = tmp_path / "out" / "db.dump"
    target.parent.mkdir()
    env = _env(_settings(tmp_path / "data", "postgresql+asyncpg://u@127.0.0.1:5432/db"))
    env["PATH"] = str(tools)
    process = subprocess.Popen(
        [TASKMANAGER, "backup", str(target)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in target.parent.iterdir()):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the stand-in pg_dump never wrote"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert "backup interrupted" in stderr
    _no_files_left(target.parent, set())


def test_libpq_environment_carries_the_url_without_the_command_line() -> None:
    env = _libpq_environment(
        "postgresql+asyncpg://app:p%40ss%2Fword@db.internal:6543/tasks"
        "?ssl=require&prepared_statement_cache_size=0&sslrootcert=/etc/ca.pem"
    )
    assert env["PGHOST"] == "db.internal"
    assert env["PGPORT"] == "6543"
    assert env["PGUSER"] == "app"
    assert env["PGPASSWORD"] == "p@ss/word"
    assert env["PGDATABASE"] == "tasks"
    assert env["PGSSLMODE"] == "require"
    assert env["PGSSLROOTCERT"] == "/etc/ca.pem"
    assert not any("prepared_statement" in key.lower() for key in env)


# --- refusals, on both backends ---------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def backup_settings(
    request: pytest.FixtureRequest, tmp_path: Path, pg_databases: list[str]
) -> dict[str, str]:
    """Settings for a migrated database on each backend."""
    if request.param == "sqlite":
        settings = _settings(tmp_path / "data")
    else:
        _, url = new_pg_database(pg_databases)
        settings = _settings(tmp_path / "data", url)
    assert invoke(["migrate"], settings).exit_code == 0
    return settings


def test_existing_target_is_kept_without_force(
    tmp_path: Path, backup_settings: dict[str, str]
) -> None:
    target = tmp_path / "out" / "backup"
    target.parent.mkdir()
    target.write_bytes(b"last night's backup")

    result = invoke(["backup", str(target)], backup_settings)

    assert result.exit_code == 1
    assert result.stderr == f"error: {target} already exists; pass --force to overwrite it\n"
    assert target.read_bytes() == b"last night's backup"
    _no_files_left(target.parent, {"backup"})


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory this process cannot create files in, even as root."""
    directory = tmp_path / "locked"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    # Root ignores permission bits; the immutable attribute binds root too.
    locked = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    if locked.returncode != 0:
        pytest.skip(f"cannot make a directory unwritable for root: {locked.stderr!r}")
    try:
        yield directory
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_unwritable_directory_is_refused(
    unwritable_dir: Path, backup_settings: dict[str, str]
) -> None:
    target = unwritable_dir / "backup"

    result = invoke(["backup", str(target)], backup_settings)

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot write to {unwritable_dir}: ")
    assert result.stderr.strip().count("\n") == 0
    _no_files_left(unwritable_dir, set())


def test_missing_directory_and_directory_target_are_refused(
    tmp_path: Path, backup_settings: dict[str, str]
) -> None:
    missing = invoke(["backup", str(tmp_path / "nowhere" / "backup")], backup_settings)
    assert missing.exit_code == 1
    assert missing.stderr == f"error: directory {tmp_path / 'nowhere'} does not exist\n"
    assert not (tmp_path / "nowhere").exists()

    folder = tmp_path / "folder"
    folder.mkdir()
    into_dir = invoke(["backup", str(folder)], backup_settings)
    assert into_dir.exit_code == 1
    assert into_dir.stderr == f"error: {folder} is a directory; give the backup file's name\n"
    _no_files_left(folder, set())


def test_sqlite_refuses_the_live_file_a_missing_database_and_memory(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data")
    assert invoke(["migrate"], settings).exit_code == 0
    live = tmp_path / "data" / "taskmanager.db"
    before = live.read_bytes()

    itself = invoke(["backup", "--force", str(live)], settings)
    assert itself.exit_code == 1
    assert "is the live database itself" in itself.stderr
    assert live.read_bytes() == before

    missing_db = tmp_path / "never-created.db"
    out = tmp_path / "out.db"
    missing = invoke(
        ["backup", str(out)],
        _settings(tmp_path / "data", f"sqlite+aiosqlite:///{missing_db}"),
    )
    assert missing.exit_code == 1
    assert missing.stderr == f"error: no SQLite database at {missing_db}\n"
    assert not missing_db.exists(), "the backup created an empty database"
    assert not out.exists()

    memory = invoke(
        ["backup", str(out)], _settings(tmp_path / "data", "sqlite+aiosqlite:///:memory:")
    )
    assert memory.exit_code == 1
    assert memory.stderr == "error: an in-memory SQLite database cannot be backed up\n"
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(PARTIAL_SUFFIX)]
