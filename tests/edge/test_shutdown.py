"""SIGTERM: stop accepting, finish what is in flight, exit 0 (a real ``taskmanager serve``)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_support import start_server, stop_server

SHUTDOWN_TIMEOUT = 15


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    process, port = start_server(
        tmp_path,
        {
            "TASKMANAGER_DATA_DIR": str(tmp_path / "data"),
            "TASKMANAGER_SECRET_KEY": "shutdown-test-secret-key-0123456789abcdef",
            "TASKMANAGER_RATE_LIMIT_ENABLED": "false",
            "TASKMANAGER_SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT),
            "TASKMANAGER_LOG_LEVEL": "WARNING",
        },
    )
    try:
        yield process, port
    finally:
        stop_server(process)


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def test_sigterm_finishes_in_flight_request_and_exits_zero(
    server: tuple[subprocess.Popen[bytes], int],
) -> None:
    process, port = server
    body = json.dumps(
        {"email": "late@example.com", "username": "late_user", "password": "Sl0w-but-sure"}
    ).encode()
    head = (
        f"POST /api/v1/users HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        # Headers and half the body: the request is in flight, waiting for the rest.
        conn.sendall(head + body[:10])
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not _refuses_connections(port):
            assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
            time.sleep(0.05)
        assert process.poll() is None, "exited before finishing the in-flight request"
        conn.sendall(body[10:])
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            response += chunk
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 201"), response
    assert b'"username":"late_user"' in response
    assert process.wait(timeout=SHUTDOWN_TIMEOUT + 5) == 0
