"""``kill -9`` of a real ``taskmanager serve`` mid-request, then a keyed retry, on both backends.

The server is told (``TASKMANAGER_FAULT_INJECTION``, which production refuses) to SIGKILL
itself at an exact point of the request — right after the transaction commits and before a
byte of the answer goes out, or just before the commit — so the crash lands where it hurts
without a race or a sleep. After a restart the retry with the same key must replay the
committed answer (never run a second time), or run exactly once if nothing was committed.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import TestDatabase
from tests.serve_support import start_server, stop_server

pytestmark = pytest.mark.slow

SECRET = "crash-test-secret-key-0123456789abcdefghijkl"


class Served:
    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, env
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        self.process, self.port = start_server(self.cwd, self.env)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.process is not None:
            stop_server(self.process)


@pytest.fixture
def served(database: TestDatabase, tmp_path: Path, app: FastAPI) -> Iterator[Served]:
    """A serve process on this backend (SQLite: a file of its own; PostgreSQL: the test db)."""
    url = database.url if database.backend == "postgres" else ""
    env = {
        "TASKMANAGER_DATA_DIR": str(tmp_path / "data"),
        "TASKMANAGER_SECRET_KEY": SECRET,
        "TASKMANAGER_RATE_LIMIT_ENABLED": "false",
        "TASKMANAGER_FAULT_INJECTION": "true",
        "TASKMANAGER_LOG_LEVEL": "WARNING",
    }
    if url:
        env["TASKMANAGER_DATABASE_URL"] = url
    server = Served(tmp_path, env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _login(server: Served) -> dict[str, str]:
    name = f"crash{uuid.uuid4().hex[:8]}"
    password = "Crash-pr00f-pass"
    created = httpx.post(
        server.url("/api/v1/users"),
        json={"email": f"{name}@example.com", "username": name, "password": password},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    token = httpx.post(
        server.url("/api/v1/auth/token"),
        data={"username": name, "password": password},
        timeout=30,
    )
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def _titled(server: Served, auth: dict[str, str], title: str) -> list[dict[str, object]]:
    listed = httpx.get(server.url("/api/v1/tasks"), params={"limit": 100}, headers=auth)
    assert listed.status_code == 200, listed.text
    return [task for task in listed.json()["items"] if task["title"] == title]


def _crash(server: Served, point: str, headers: dict[str, str], body: dict[str, str]) -> None:
    with pytest.raises(httpx.TransportError):  # the process died before answering
        httpx.post(
            server.url("/api/v1/tasks"),
            json=body,
            headers={**headers, "X-Taskmanager-Fault": point},
            timeout=30,
        )
    assert server.process is not None
    assert server.process.wait(timeout=30) == -signal.SIGKILL


def test_crash_between_commit_and_reply_then_retry_replays(served: Served) -> None:
    auth = _login(served)
    title = f"paid-{uuid.uuid4().hex[:8]}"
    keyed = {**auth, "Idempotency-Key": uuid.uuid4().hex}
    _crash(served, "kill-after-commit", keyed, {"title": title})

    served.start()  # the same database, a new process
    retry = httpx.post(
        served.url("/api/v1/tasks"), json={"title": title}, headers=keyed, timeout=30
    )
    assert retry.status_code == 201, retry.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.headers["location"] == f"/api/v1/tasks/{retry.json()['id']}"
    assert retry.headers["etag"]
    (task,) = _titled(served, auth, title)  # the committed one, and only it
    assert task["id"] == retry.json()["id"]
    other = httpx.post(
        served.url("/api/v1/tasks"), json={"title": "else"}, headers=keyed, timeout=30
    )
    assert other.status_code == 422
    assert other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_crash_before_commit_then_retry_runs_once(served: Served) -> None:
    auth = _login(served)
    title = f"unpaid-{uuid.uuid4().hex[:8]}"
    keyed = {**auth, "Idempotency-Key": uuid.uuid4().hex}
    _crash(served, "kill-before-commit", keyed, {"title": title})

    served.start()
    assert _titled(served, auth, title) == []  # nothing was committed
    retry = httpx.post(
        served.url("/api/v1/tasks"), json={"title": title}, headers=keyed, timeout=30
    )
    assert retry.status_code == 201, retry.text
    assert "idempotent-replayed" not in retry.headers
    again = httpx.post(
        served.url("/api/v1/tasks"), json={"title": title}, headers=keyed, timeout=30
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert len(_titled(served, auth, title)) == 1
