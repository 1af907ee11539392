"""The ``taskmanager`` command: serve, migrate, create-admin, openapi."""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import orjson
import typer

from taskmanager.config import Settings, SettingsError, load_settings

app = typer.Typer(
    name="taskmanager",
    help="Taskmanager: a self-hostable task-management API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        _fail(str(exc))


def _migrate(settings: Settings) -> None:
    from taskmanager import migrate

    try:
        migrate.upgrade(settings.effective_database_url)
    except Exception as exc:
        _fail(f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", 1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="HOST", help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT", help="Port to bind")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
) -> None:
    """Serve the API (SQLite databases are migrated first)."""
    import uvicorn

    settings = _settings()
    if settings.is_sqlite:
        _migrate(settings)
    if workers > 1 and settings.is_sqlite and settings.sqlite_path is None:
        _fail("an in-memory SQLite database cannot be shared by several workers")
    uvicorn.run(
        "taskmanager.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers if not reload else None,
        reload=reload,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds) or None,
    )


@app.command()
def migrate() -> None:
    """Apply all database migrations."""
    settings = _settings()
    _migrate(settings)
    typer.echo("database is up to date")


@app.command()
def openapi(
    indent: Annotated[bool, typer.Option(help="Pretty-print")] = True,
) -> None:
    """Print the OpenAPI schema as JSON."""
    from taskmanager.main import create_app

    schema = create_app(_settings()).openapi()
    option = orjson.OPT_INDENT_2 if indent else 0
    sys.stdout.write(orjson.dumps(schema, option=option | orjson.OPT_SORT_KEYS).decode() + "\n")


def main() -> None:
    app()
