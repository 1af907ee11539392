"""The ``taskmanager`` command: serve, worker, migrate, create-admin, set-role, openapi, backup."""

from __future__ import annotations

import ast
import atexit
import math
import os
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import orjson
import typer

from taskmanager.kit.config import Environment, Settings, SettingsError, load_settings
from taskmanager.models.users import UserRole

if TYPE_CHECKING:
    from taskmanager.users.schemas import UserCreate

app = typer.Typer(
    name="taskmanager",
    help="Taskmanager: a self-hostable task-management API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# How long a --workers child may take to start (or to answer a ping) before it is replaced.
WORKER_HEALTHCHECK_SECONDS = 60


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        _fail(str(exc))


def _migrate(settings: Settings) -> list[str]:
    """Apply the migrations; return one line per migration applied."""
    from taskmanager import migrate

    try:
        applied = migrate.upgrade(settings.effective_database_url)
    except Exception as exc:
        _fail(f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", 1)
    return [f"applied {step.revision}: {step.summary}" for step in applied]


VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"
_REVISION_LINE = re.compile(r"^(revision|down_revision)\b[^=\n]*=\s*(.+?)\s*$", re.MULTILINE)


def shipped_head() -> str | None:
    """The newest migration this code ships, read from the scripts' ``revision`` and
    ``down_revision`` lines without loading Alembic (~0.2 s of start-up); None unless the
    history is one line with one head (then ``serve`` lets Alembic decide)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in VERSIONS_DIR.glob("*.py"):
        found = dict(_REVISION_LINE.findall(script.read_text(encoding="utf-8")))
        try:
            revision = ast.literal_eval(found["revision"])
            parent = ast.literal_eval(found.get("down_revision", "None"))
        except (KeyError, ValueError, SyntaxError):
            return None
        if not isinstance(revision, str) or not (parent is None or isinstance(parent, str)):
            return None  # a merge or a branch: not a straight line
        revisions.add(revision)
        if parent is not None:
            parents.add(parent)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _sqlite_is_current(settings: Settings) -> bool:
    """Whether the SQLite file is already at ``shipped_head()`` (read-only, no Alembic).

    Any doubt (no file, no version table, an unreadable file) answers False, and the
    migrations run as before.
    """
    path = settings.sqlite_path
    head = shipped_head()
    if path is None or head is None or not path.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False
    return rows == [(head,)]


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="HOST", help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT", help="Port to bind")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
) -> None:
    """Serve the API (SQLite databases are migrated first)."""
    _limit_malloc_arenas()
    import uvicorn

    from taskmanager import serving

    settings = _settings()
    if settings.env is Environment.PRODUCTION:
        _refuse_unsafe_serving(settings, workers=workers, reload=reload)
    if settings.is_sqlite and not _sqlite_is_current(settings):
        _migrate(settings)
    if workers > 1 and settings.is_sqlite and settings.sqlite_path is None:
        _fail("an in-memory SQLite database cannot be shared by several workers")
    if workers > 1 and not reload:
        _prepare_multiprocess_metrics()
    # uvicorn re-raises SIGTERM/SIGINT once its graceful shutdown is done, which would end the
    # process "killed by signal"; the shutdown was clean, so let that re-raise end in exit 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    config = uvicorn.Config(
        "taskmanager.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers if not reload else None,
        reload=reload,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        # The app applies the same rule itself (middleware/__init__.py); both must agree.
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_seconds),
        # uvicorn's process manager pings each --workers child and kills one that does not
        # answer in time as hung. A child answers only once it has imported the app, which
        # on a CPU-starved host (a throttled container, a busy VM) takes longer than the
        # default 5 s: every worker was then killed mid-start, forever, and nothing served.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        # WebSocket keep-alive (RFC 6455 ping/pong): a client that does not answer a ping
        # within the interval is closed.
        ws_ping_interval=settings.ws_ping_seconds,
        ws_ping_timeout=settings.ws_ping_seconds,
    )
    serving.configure(
        config, max_header_bytes=settings.max_header_bytes, drain_seconds=settings.drain_seconds
    )
    if reload:
        # Development: uvicorn's reloader restarts the server; drain does not apply.
        uvicorn.run(
            config.app,
            factory=True,
            host=host,
            port=port,
            reload=True,
            log_config=None,
            access_log=False,
            http=serving.HeaderLimitedProtocol,
        )
        return
    serving.serve(config)


# Held open for the life of a production ``serve`` on SQLite (see _refuse_unsafe_serving).
_sqlite_serve_lock: int | None = None


def _refuse_unsafe_serving(settings: Settings, *, workers: int, reload: bool) -> None:
    """The production profile's checks that need the command line (the rest are settings).

    One ``error:`` line naming the option or variable and the fix, exit status 2:

    * ``--reload`` watches the source tree and restarts on change: development only.
    * SQLite with ``--workers`` > 1, or a second ``serve`` on the same SQLite file: every
      process would queue on SQLite's single write lock, so writes stop scaling and wait
      up to ``TASKMANAGER_SQLITE_BUSY_TIMEOUT_MS`` each; several processes need PostgreSQL.
      The second ``serve`` is found by an exclusive ``flock`` on ``<database>.serve-lock``,
      held until the process exits (a crash releases it).
    * ``--workers`` > 1 without ``TASKMANAGER_REDIS_URL``: rate limits would be counted per
      process (each allowing the full rate) and events would not reach the other processes.
    """
    global _sqlite_serve_lock
    if reload:
        _fail("--reload is for development; production refuses it (TASKMANAGER_ENV=production)")
    if settings.is_sqlite and workers > 1:
        _fail(
            f"--workers {workers} with SQLite (TASKMANAGER_DATABASE_URL) is refused in "
            "production: use --workers 1, or PostgreSQL for several processes"
        )
    if workers > 1 and not settings.redis_url:
        _fail(
            f"TASKMANAGER_REDIS_URL must be set for --workers {workers} in production: without "
            "it rate limits and events are per process"
        )
    path = settings.sqlite_path
    if path is None or _sqlite_serve_lock is not None:
        return
    import fcntl

    lock_path = path.with_name(path.name + ".serve-lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        _fail(f"TASKMANAGER_DATABASE_URL: cannot create {lock_path}: {exc.strerror}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        _fail(
            f"another taskmanager serve already uses the SQLite database {path} "
            "(TASKMANAGER_DATABASE_URL); production runs one process on SQLite: stop it, "
            "or use PostgreSQL for several"
        )
    _sqlite_serve_lock = fd  # inherited by nothing: os.open descriptors are not inheritable


@app.command()
def worker() -> None:
    """Run event dispatch and the other background loops without serving HTTP.

    Runs until SIGTERM or SIGINT, then exits 0. Any number may run beside the servers.
    """
    _limit_malloc_arenas()
    import asyncio

    from taskmanager import background
    from taskmanager.kit.logging import configure_logging
    from taskmanager.main import redis_client

    settings = _settings()
    if settings.is_sqlite:
        _migrate(settings)
    configure_logging(settings)
    redis = redis_client(settings) if settings.redis_url else None
    asyncio.run(background.work(settings, redis=redis))


# glibc's M_ARENA_MAX (malloc.h): the most malloc arenas a process may create.
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def _limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at ``MALLOC_ARENAS`` for this process and those it starts.

    glibc gives threads that allocate at once arenas of their own, up to eight per core, and
    an arena keeps the memory it once held. A server's threads (one per SQLite connection,
    the thread pool) grew its RSS by ~8 MiB over 100 k requests that way (issue 13's RSS
    bar, measured with ``make bench``); two arenas are the usual setting for Python
    services. ``mallopt`` sets it for this process, whose threads start later; the variable
    reaches the ``--workers`` children, which glibc configures as they start. An operator's
    own ``MALLOC_ARENA_MAX`` is left as it is. Elsewhere than glibc (musl, macOS) nothing
    is changed.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return  # the operator's choice, already read by glibc at this process's start
    os.environ["MALLOC_ARENA_MAX"] = str(MALLOC_ARENAS)
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return  # no mallopt (macOS), or no C library by that name (Windows: TypeError)
    mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


def _prepare_multiprocess_metrics() -> None:
    """Point every worker at one fresh directory so /metrics sums all of them."""
    from taskmanager.ops.metrics import MULTIPROC_ENV

    if os.environ.get(MULTIPROC_ENV):
        return  # the operator chose one (and owns its cleanup)
    directory = tempfile.mkdtemp(prefix="taskmanager-metrics-")
    os.environ[MULTIPROC_ENV] = directory  # inherited by the spawned workers
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


@app.command()
def migrate() -> None:
    """Apply all database migrations."""
    from taskmanager.migrate import head_revision

    settings = _settings()
    applied = _migrate(settings)
    for line in applied:
        typer.echo(line)
    if applied:
        typer.echo(f"database is now at revision {head_revision()}")
    else:
        typer.echo(f"database was already current ({head_revision()}); nothing to apply")


def _read_password() -> str:
    """The password from a hidden prompt (asked twice) on a terminal, else stdin's first line.

    Not as an argument: command lines are visible to other users (``ps``) and kept in shell
    history.
    """
    if sys.stdin.isatty():
        value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return value
    line = sys.stdin.readline()
    if not line:
        _fail("no password: give --password, type it at the prompt or pipe it on stdin", 1)
    return line.rstrip("\r\n")


@app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Option(help="3-50 letters, digits or underscores")],
    email: Annotated[str, typer.Option(help="Email address")],
    password: Annotated[
        str | None,
        typer.Option(
            help=(
                "8-128 characters with upper- and lower-case letters and a digit, not easy to "
                "guess. Left out: asked at a hidden prompt, or read from stdin's first line"
            )
        ),
    ] = None,
) -> None:
    """Create an administrator account (SQLite databases are migrated first)."""
    import asyncio

    from pydantic import ValidationError

    from taskmanager.kit.errors import DomainError
    from taskmanager.users.schemas import UserCreate

    settings = _settings()
    if password is None:
        password = _read_password()
    try:
        data = UserCreate(username=username, email=email, password=password)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "input"
        _fail(f"{field}: {first['msg'].removeprefix('Value error, ')}", 1)
    if settings.is_sqlite:
        _migrate(settings)
    try:
        user_id = asyncio.run(_create_admin(settings, data))
    except DomainError as exc:
        _fail(exc.detail, 1)
    except Exception as exc:
        _fail(f"cannot create the administrator: {type(exc).__name__}: {_first_line(exc)}", 1)
    typer.echo(f"created administrator {data.username!r} (id {user_id})")


def _first_line(exc: Exception) -> str:
    lines = str(exc).splitlines()
    return lines[0][:300] if lines else ""


async def _create_admin(settings: Settings, data: UserCreate) -> int:
    from taskmanager.kit.db import Database
    from taskmanager.models.users import UserRole
    from taskmanager.users import service

    database = Database(settings)
    try:
        async with database.side_transaction() as session:
            user = await service.create_user(session, data, role=UserRole.ADMIN)
        return user.id
    finally:
        await database.dispose()


@app.command("set-role")
def set_role(
    user: Annotated[str, typer.Argument(help="Username or email of the account")],
    role: Annotated[UserRole, typer.Argument(help="admin or user")],
) -> None:
    """Promote an account to administrator, or demote one to user.

    The last active administrator cannot be demoted. The change applies to the account's
    next request.
    """
    import asyncio

    from taskmanager.kit.errors import DomainError

    settings = _settings()
    if settings.is_sqlite:
        _migrate(settings)
    try:
        user_id = asyncio.run(_set_role(settings, user, role))
    except DomainError as exc:
        _fail(exc.detail, 1)
    except Exception as exc:
        _fail(f"cannot change the role: {type(exc).__name__}: {_first_line(exc)}", 1)
    typer.echo(f"{user.lower()!r} (id {user_id}) is now {role.value}")


async def _set_role(settings: Settings, login: str, role: UserRole) -> int:
    from taskmanager.kit.db import Database
    from taskmanager.kit.errors import NotFound
    from taskmanager.users import service
    from taskmanager.users.schemas import UserAdminUpdate

    database = Database(settings)
    try:
        async with database.side_transaction() as session:
            user_id = await service.find_id(session, login)
            if user_id is None:
                raise NotFound(f"no account has the username or email {login!r}")
            await service.admin_update(session, user_id, UserAdminUpdate(role=role))
        return user_id
    finally:
        await database.dispose()


@app.command()
def openapi(
    indent: Annotated[bool, typer.Option(help="Pretty-print")] = True,
) -> None:
    """Print the OpenAPI schema as JSON."""
    from taskmanager.main import create_app

    schema = create_app(_settings()).openapi()
    option = orjson.OPT_INDENT_2 if indent else 0
    sys.stdout.write(orjson.dumps(schema, option=option | orjson.OPT_SORT_KEYS).decode() + "\n")


@app.command()
def backup(
    path: Annotated[
        Path, typer.Argument(help="File to write: an SQLite copy or a pg_dump custom archive")
    ],
    force: Annotated[bool, typer.Option(help="Overwrite PATH if it exists")] = False,
) -> None:
    """Write a consistent copy of the database to PATH; safe while the server is serving."""
    from taskmanager.backup import BackupError, backup_database

    settings = _settings()

    def _interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signum)

    # SIGTERM unwinds like Ctrl-C, so the partial file is removed before the exit.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = backup_database(settings, path, force=force)
    except BackupError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail(f"backup interrupted; {path} was not written", 130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo(
        f"backed up the {result.label} database to {result.path} ({result.size_bytes} bytes)"
    )


def main() -> None:
    app()
