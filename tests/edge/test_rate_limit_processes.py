"""Rate limits shared by two real server processes through Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import redis

from tests.conftest import redis_url_or_skip
from tests.serve_support import start_server, stop_server


def test_two_server_processes_share_one_limit(tmp_path: Path) -> None:
    redis_url = redis_url_or_skip()
    settings = {
        "TASKMANAGER_DATA_DIR": str(tmp_path / "data"),
        "TASKMANAGER_SECRET_KEY": "process-limit-secret-key-0123456789abcdef",
        "TASKMANAGER_REDIS_URL": redis_url,
        "TASKMANAGER_RATE_LIMIT_DEFAULT": "3/minute",
        "TASKMANAGER_LOG_LEVEL": "WARNING",
    }
    first, first_port = start_server(tmp_path, settings)
    # Started after the first has migrated the shared SQLite file.
    second, second_port = start_server(tmp_path, settings)
    # A client address of our own (uvicorn trusts X-Forwarded-For from loopback), so no
    # other test's counter for 127.0.0.1 can interfere.
    client_ip = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    headers = {"X-Forwarded-For": client_ip}
    try:
        statuses, remaining = [], []
        for port in (first_port, second_port, first_port, second_port):
            response = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/tasks", headers=headers, timeout=10
            )
            statuses.append(response.status_code)
            remaining.append(response.headers.get("ratelimit-remaining"))
        # Anonymous, so 401 — but each request counts against the one shared window.
        assert statuses == [401, 401, 401, 429], statuses
        assert remaining == ["2", "1", "0", "0"]
        assert int(response.headers["retry-after"]) >= 1
    finally:
        stop_server(first)
        stop_server(second)
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"*{client_ip}*"):
            client.delete(key)
        client.close()
