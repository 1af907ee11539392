"""``TASKMANAGER_ENV=production`` refuses unsafe settings at start, through the real CLI.

Each refusal is one ``error:`` line naming the variable (or option) and the fix, with a
non-zero exit status and no traceback; a safe production configuration starts and serves.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import TestDatabase, redis_url_or_skip
from tests.serve_support import (
    TASKMANAGER,
    command_env,
    free_port,
    start_serve,
    start_server,
    stop_server,
    wait_until_answering,
)

SECRET = "production-profile-secret-key-0123456789abcdef"
METRICS_TOKEN = "metrics-token-0123456789abcdef0123456789"
POSTGRES_URL = "postgresql+asyncpg://app@db.invalid/app"  # never reached: refused first


def _production(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A safe production configuration, changed by ``overrides`` (variable suffix: value)."""
    settings = {
        "TASKMANAGER_ENV": "production",
        "TASKMANAGER_SECRET_KEY": SECRET,
        "TASKMANAGER_DATA_DIR": str(tmp_path / "data"),
        "TASKMANAGER_DATABASE_URL": POSTGRES_URL,
        "TASKMANAGER_ALLOWED_ORIGINS": '["https://app.example.com"]',
        "TASKMANAGER_METRICS_TOKEN": METRICS_TOKEN,
        "TASKMANAGER_LOG_LEVEL": "WARNING",
    }
    for name, value in overrides.items():
        settings[f"TASKMANAGER_{name}"] = value
    return {name: value for name, value in settings.items() if value != "<unset>"}


def _refusal(tmp_path: Path, settings: dict[str, str], *args: str) -> str:
    """Run ``taskmanager serve ARGS``; assert it refuses in one line, return that line."""
    result = subprocess.run(
        [TASKMANAGER, "serve", "--port", str(free_port()), *args],
        env=command_env(settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"SECRET_KEY": "<unset>"}, ["TASKMANAGER_SECRET_KEY", "must be set"]),
        ({"SECRET_KEY": "too-short"}, ["TASKMANAGER_SECRET_KEY", "at least 32"]),
        ({"ALLOWED_ORIGINS": '["*"]'}, ["TASKMANAGER_ALLOWED_ORIGINS", "'*'"]),
        ({"ALLOWED_ORIGINS": "<unset>"}, ["TASKMANAGER_ALLOWED_ORIGINS", "http://localhost"]),
        (
            {"ALLOWED_ORIGINS": "https://app.example.com,http://app.example.com"},
            ["TASKMANAGER_ALLOWED_ORIGINS", "not https://"],
        ),
        ({"ALLOWED_ORIGINS": '["null"]'}, ["TASKMANAGER_ALLOWED_ORIGINS", "'null'"]),
        ({"METRICS_TOKEN": "<unset>"}, ["TASKMANAGER_METRICS_TOKEN", "METRICS_PUBLIC=true"]),
        (
            {"WEBHOOK_ALLOW_PRIVATE_TARGETS": "true"},
            ["TASKMANAGER_WEBHOOK_ALLOW_PRIVATE_TARGETS", "false"],
        ),
        ({"FAULT_INJECTION": "true"}, ["TASKMANAGER_FAULT_INJECTION", "false"]),
        ({"DATABASE_URL": "<unset>"}, ["TASKMANAGER_DATABASE_URL", "temp dir"]),
        (
            {"DATABASE_URL": "sqlite+aiosqlite:///:memory:"},
            ["TASKMANAGER_DATABASE_URL", "memory"],
        ),
        (
            {
                "SMTP_URL": "smtps://mail.example.com",
                "MAIL_FROM": "noreply@example.com",
                "PASSWORD_RESET_URL": "http://app.example.com/reset?token={token}",
            },
            ["TASKMANAGER_PASSWORD_RESET_URL", "https://"],
        ),
    ],
)
def test_unsafe_settings_are_refused_in_one_line(
    tmp_path: Path, overrides: dict[str, str], names: list[str]
) -> None:
    line = _refusal(tmp_path, _production(tmp_path, **overrides))
    for name in names:
        assert name in line, line


@pytest.mark.parametrize(
    ("overrides", "args", "names"),
    [
        # SQLite (outside the temp dir, or it would be refused for that) with two workers.
        (
            {"DATABASE_URL": "sqlite+aiosqlite:////srv/taskmanager/taskmanager.db"},
            ["--workers", "2"],
            ["--workers 2", "SQLite", "PostgreSQL"],
        ),
        ({}, ["--workers", "2"], ["TASKMANAGER_REDIS_URL", "--workers 2"]),
        ({}, ["--reload"], ["--reload", "development"]),
    ],
)
def test_unsafe_serve_options_are_refused_in_one_line(
    tmp_path: Path, overrides: dict[str, str], args: list[str], names: list[str]
) -> None:
    line = _refusal(tmp_path, _production(tmp_path, **overrides), *args)
    for name in names:
        assert name in line, line


def test_the_same_settings_outside_production_start(tmp_path: Path) -> None:
    """The refusals are the production profile's: development serves with the defaults."""
    settings = {
        "TASKMANAGER_DATA_DIR": str(tmp_path / "data"),
        "TASKMANAGER_LOG_LEVEL": "WARNING",
    }
    process, port = start_server(tmp_path, settings)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
    finally:
        stop_server(process)


def test_a_second_serve_on_one_sqlite_file_is_refused_until_the_first_is_gone(
    tmp_path: Path,
) -> None:
    """One production process per SQLite file; a crash (kill -9) frees the file at once."""
    system_tmp = tmp_path / "system-tmp"  # so the data dir is not under the temp dir
    system_tmp.mkdir()
    settings = _production(tmp_path, DATABASE_URL="<unset>", METRICS_TOKEN="<unset>")
    settings.update({"TASKMANAGER_METRICS_PUBLIC": "true", "TMPDIR": str(system_tmp)})
    first, port = start_server(tmp_path, settings)
    try:
        # Open on purpose (TASKMANAGER_METRICS_PUBLIC=true), so /metrics answers anyone.
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
        line = _refusal(tmp_path, settings)
        assert "another taskmanager serve" in line
        assert "TASKMANAGER_DATABASE_URL" in line
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        second_port = free_port()
        second = start_serve(tmp_path, settings, second_port)
        try:
            wait_until_answering(second, second_port, "/ready")
        finally:
            stop_server(second)
    finally:
        stop_server(first)


@pytest.mark.postgres_only
def test_a_safe_production_configuration_serves_with_several_workers(
    tmp_path: Path, database: TestDatabase
) -> None:
    settings = _production(tmp_path, DATABASE_URL=database.url, REDIS_URL=redis_url_or_skip())
    process, port = start_server(tmp_path, settings, ["--workers", "2"])
    base = f"http://127.0.0.1:{port}"
    try:
        ready = httpx.get(f"{base}/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "healthy", "redis": "healthy"}
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 401
        guarded = httpx.get(
            f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
        )
        assert guarded.status_code == 200
        # Served under production settings: CORS answers only the configured https origin.
        preflight = httpx.options(
            f"{base}/api/v1/tasks",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "GET",
            },
            timeout=10,
        )
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    finally:
        # SIGTERM: the manager stops its workers (a SIGKILL would orphan them).
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=90) == 0
