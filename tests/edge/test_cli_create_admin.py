"""``taskmanager create-admin``: run the command, then log in through the API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from typer.testing import CliRunner, Result

from taskmanager.cli import app as cli
from taskmanager.kit.config import load_settings
from tests.conftest import TestDatabase, UserFactory, problem
from tests.factories import STRONG_PASSWORD, api_login, bearer

SECRET = "cli-test-secret-key-that-is-long-enough-0123"


def _env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        "TASKMANAGER_DATABASE_URL": database_url,
        "TASKMANAGER_DATA_DIR": str(data_dir),
        "TASKMANAGER_SECRET_KEY": SECRET,
        "TASKMANAGER_ENV": "test",
    }


async def _invoke(args: list[str], env: dict[str, str]) -> Result:
    # In a worker thread: the command runs its own event loop with asyncio.run.
    def run() -> Result:
        return CliRunner().invoke(cli, args, env=env)

    return await anyio.to_thread.run_sync(run)


def _args(username: str, email: str, password: str = STRONG_PASSWORD) -> list[str]:
    return ["create-admin", "--username", username, "--email", email, "--password", password]


async def test_create_admin_then_log_in(
    client: httpx.AsyncClient, database: TestDatabase, tmp_path: Path, app: FastAPI
) -> None:
    result = await _invoke(_args("Root_Admin", "Root@Example.com"), _env(database.url, tmp_path))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "root_admin" in result.stdout
    tokens = await api_login(client, "root_admin", STRONG_PASSWORD)
    me = (await client.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))).json()
    assert (me["username"], me["email"], me["role"], me["is_active"]) == (
        "root_admin",
        "root@example.com",
        "admin",
        True,
    )
    listing = await client.get("/api/v1/users", headers=bearer(tokens["access_token"]))
    assert listing.status_code == 200
    projects = (await client.get("/api/v1/projects", headers=bearer(tokens["access_token"]))).json()
    assert [p["name"] for p in projects["items"]] == ["Inbox"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (_args("taken", "new@example.com"), "already exists"),
        (_args("TAKEN", "new@example.com"), "already exists"),
        (_args("newname", "taken@example.com"), "already exists"),
        (_args("ab", "new@example.com"), "username"),
        (_args("bad name", "new@example.com"), "username"),
        (_args("newname", "not-an-email"), "email"),
        (_args("newname", "new@example.com", "weakpassword"), "password"),
        (_args("newname", "new@example.com", "Sh0rt"), "password"),
    ],
)
async def test_create_admin_refusals_exit_1_with_one_line(
    client: httpx.AsyncClient,
    database: TestDatabase,
    tmp_path: Path,
    make_user: UserFactory,
    args: list[str],
    message: str,
) -> None:
    await make_user("taken")
    result = await _invoke(args, _env(database.url, tmp_path))
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    problem(
        await client.post("/api/v1/auth/token", data={"username": "newname", "password": "x"}),
        401,
        "INVALID_CREDENTIALS",
    )


async def test_create_admin_with_bad_settings_exits_2(tmp_path: Path) -> None:
    env = _env("mysql://nope", tmp_path)
    result = await _invoke(_args("root", "root@example.com"), env)
    assert result.exit_code == 2
    assert "TASKMANAGER_DATABASE_URL" in result.stderr


async def test_create_admin_migrates_a_fresh_sqlite_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    env = _env(url, tmp_path / "data")
    result = await _invoke(_args("first_admin", "first@example.com"), env)
    assert result.exit_code == 0, (result.stdout, result.stderr)

    from taskmanager.main import create_app

    settings = load_settings(
        database_url=url,
        data_dir=tmp_path / "data",
        secret_key=SECRET,
        env="test",
        rate_limit_enabled=False,
        log_level="WARNING",
    )
    fresh = create_app(settings)
    async with LifespanManager(fresh):
        transport = httpx.ASGITransport(app=fresh)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            tokens = await api_login(c, "first@example.com", STRONG_PASSWORD)
            me = await c.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))
            assert me.json()["role"] == "admin"


def test_create_admin_help_as_installed() -> None:
    env = {**os.environ, "TASKMANAGER_DATA_DIR": "/nonexistent-is-fine-for-help"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from taskmanager.cli import main; main()",
            "create-admin",
            "--help",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--username", "--email", "--password"):
        assert option in result.stdout
