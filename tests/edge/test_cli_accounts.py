"""``taskmanager create-admin`` without ``--password`` (prompt or stdin) and
``taskmanager set-role USER admin|user``."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import anyio
import httpx
from fastapi import FastAPI
from typer.testing import CliRunner, Result

from taskmanager.cli import app as cli
from tests.conftest import TestDatabase, UserFactory, problem
from tests.factories import api_login, bearer

SECRET = "cli-test-secret-key-that-is-long-enough-0123"
PASSWORD = "Violet-Tractor-88"


def _env(database: TestDatabase, data_dir: Path) -> dict[str, str]:
    return {
        "TASKMANAGER_DATABASE_URL": database.url,
        "TASKMANAGER_DATA_DIR": str(data_dir),
        "TASKMANAGER_SECRET_KEY": SECRET,
        "TASKMANAGER_ENV": "test",
    }


async def _invoke(args: list[str], env: dict[str, str], stdin: str | None = None) -> Result:
    def run() -> Result:
        return CliRunner().invoke(cli, args, env=env, input=stdin)

    return await anyio.to_thread.run_sync(run)


async def test_create_admin_reads_the_password_from_stdin(
    client: httpx.AsyncClient, database: TestDatabase, tmp_path: Path, app: FastAPI
) -> None:
    args = ["create-admin", "--username", "piped", "--email", "piped@example.com"]
    result = await _invoke(args, _env(database, tmp_path), stdin=PASSWORD + "\n")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert PASSWORD not in result.stdout + result.stderr
    await api_login(client, "piped", PASSWORD)


async def test_create_admin_without_any_password_fails_cleanly(
    database: TestDatabase, tmp_path: Path, app: FastAPI
) -> None:
    args = ["create-admin", "--username", "nopass", "--email", "nopass@example.com"]
    result = await _invoke(args, _env(database, tmp_path), stdin="")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no password")
    weak = await _invoke(args, _env(database, tmp_path), stdin="Password1\n")
    assert weak.exit_code == 1
    assert "too easy to guess" in weak.stderr


def _read_until(controller: int, marker: bytes) -> bytes:
    seen = b""
    deadline = time.monotonic() + 30  # a guard against a hung child, not a timing assertion
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if ready:
            try:
                chunk = os.read(controller, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _wait_for_hidden_input(controller: int) -> None:
    """Until the prompt has switched echo off: input sent earlier would be flushed by it."""
    deadline = time.monotonic() + 30
    while termios.tcgetattr(controller)[3] & termios.ECHO and time.monotonic() < deadline:
        time.sleep(0.01)


def _take_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _run_on_a_terminal(
    args: list[str], env: dict[str, str], answers: list[tuple[bytes, str]]
) -> tuple[int, str]:
    """Run the installed command with a pseudo-terminal as stdin, answering its prompts."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", "from taskmanager.cli import main; main()", *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, **env},
        # Its own session with the pseudo-terminal as controlling terminal, so the hidden
        # prompt (getpass opens /dev/tty) talks to us, not to whatever runs the tests.
        start_new_session=True,
        preexec_fn=_take_terminal,
    )
    os.close(terminal)
    output = b""
    try:
        for prompt, answer in answers:
            output += _read_until(controller, prompt)
            assert prompt in output, output
            output = output.replace(prompt, b"", 1)
            _wait_for_hidden_input(controller)
            os.write(controller, answer.encode() + b"\n")
        output += _read_until(controller, b"created administrator")
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    return process.returncode, output.decode(errors="replace")


async def test_create_admin_prompts_on_a_terminal(
    client: httpx.AsyncClient, database: TestDatabase, tmp_path: Path, app: FastAPI
) -> None:
    args = ["create-admin", "--username", "prompted", "--email", "prompted@example.com"]
    code, errors = await anyio.to_thread.run_sync(
        _run_on_a_terminal,
        args,
        _env(database, tmp_path),
        [(b"Password", PASSWORD), (b"Repeat", PASSWORD)],
    )
    assert code == 0, errors
    tokens = await api_login(client, "prompted", PASSWORD)
    me = await client.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))
    assert me.json()["role"] == "admin"


async def test_set_role_promotes_and_demotes(
    client: httpx.AsyncClient,
    database: TestDatabase,
    tmp_path: Path,
    make_user: UserFactory,
) -> None:
    await make_user("root", role="admin")
    user = await make_user("sam")
    problem(await client.get("/api/v1/users", headers=user.headers), 403, "FORBIDDEN")

    result = await _invoke(["set-role", "SAM", "admin"], _env(database, tmp_path))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "admin" in result.stdout
    assert (await client.get("/api/v1/users", headers=user.headers)).status_code == 200

    result = await _invoke(["set-role", "sam@example.com", "user"], _env(database, tmp_path))
    assert result.exit_code == 0, (result.stdout, result.stderr)
    problem(await client.get("/api/v1/users", headers=user.headers), 403, "FORBIDDEN")


async def test_set_role_refusals(
    database: TestDatabase, tmp_path: Path, make_user: UserFactory
) -> None:
    await make_user("root", role="admin")
    env = _env(database, tmp_path)
    last = await _invoke(["set-role", "root", "user"], env)
    assert last.exit_code == 1
    assert "last active administrator" in last.stderr
    unknown = await _invoke(["set-role", "ghost", "admin"], env)
    assert unknown.exit_code == 1
    assert "ghost" in unknown.stderr
    bad_role = await _invoke(["set-role", "root", "superuser"], env)
    assert bad_role.exit_code == 2
