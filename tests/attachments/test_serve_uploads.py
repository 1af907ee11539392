"""Uploads against a real ``taskmanager serve``: the server answers 413 before the client has
sent an over-limit body, and a 50 MiB upload and download keep the server's memory flat.

Memory is read from ``/proc/<pid>/status`` (VmRSS) before and after; nothing here measures
time. SQLite (the storage path does not depend on the database).
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.services import rss_kib
from tests.serve_support import start_server, stop_server

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
PASSWORD = "Hug3-inputs"
BOUNDARY = "----taskmanager-serve-test"
_Server = tuple[subprocess.Popen[bytes], int, Path]


def _serve(tmp: Path, max_upload: int) -> _Server:
    data = tmp / "data"
    process, port = start_server(
        tmp,
        {
            "TASKMANAGER_DATA_DIR": str(data),
            "TASKMANAGER_SECRET_KEY": "attachments-serve-test-secret-0123456789abcdef",
            "TASKMANAGER_RATE_LIMIT_ENABLED": "false",
            "TASKMANAGER_LOG_LEVEL": "WARNING",
            "TASKMANAGER_MAX_UPLOAD_BYTES": str(max_upload),
        },
    )
    return process, port, data / "attachments"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    server = _serve(tmp_path_factory.mktemp("upload-limit"), 10 * MiB)
    try:
        yield server
    finally:
        stop_server(server[0])


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    server = _serve(tmp_path_factory.mktemp("upload-big"), 64 * MiB)
    try:
        yield server
    finally:
        stop_server(server[0])


def _task(port: int) -> tuple[dict[str, str], int]:
    """A registered user's bearer header and a task of theirs."""
    base = f"http://127.0.0.1:{port}/api/v1"
    name = f"up{uuid.uuid4().hex[:8]}"
    created = httpx.post(
        f"{base}/users",
        json={"email": f"{name}@example.com", "username": name, "password": PASSWORD},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    token = httpx.post(
        f"{base}/auth/token", data={"username": name, "password": PASSWORD}, timeout=30
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    task = httpx.post(f"{base}/tasks", json={"title": "files"}, headers=headers, timeout=30)
    assert task.status_code == 201, task.text
    return headers, int(task.json()["id"])


def _part_head(filename: str = "big.bin") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()


TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def _request_head(port: int, task_id: int, auth: dict[str, str], framing: str) -> bytes:
    return (
        f"POST /api/v1/tasks/{task_id}/attachments HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: {auth['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"{framing}\r\n\r\n"
    ).encode()


def _read_answer(conn: socket.socket) -> tuple[int, dict[str, object]]:
    """One HTTP answer (the server closes the connection after refusing a body)."""
    conn.settimeout(30)
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _stored(root: Path) -> list[Path]:
    return [path for path in root.glob("*/*") if path.is_file()] if root.exists() else []


def test_declared_11_mib_is_refused_before_the_body_is_sent(limited: _Server) -> None:
    _, port, root = limited
    auth, task_id = _task(port)
    body_length = len(_part_head()) + 11 * MiB + len(TAIL)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(
            _request_head(port, task_id, auth, f"Content-Length: {body_length}") + _part_head()
        )
        # Not one byte of the file is sent: the answer comes from the declared length alone.
        status, problem = _read_answer(conn)
    assert status == 413
    assert problem["code"] == "PAYLOAD_TOO_LARGE"
    assert _stored(root) == []


def test_chunked_11_mib_is_cut_at_the_limit_without_reading_the_rest(limited: _Server) -> None:
    _, port, root = limited
    auth, task_id = _task(port)
    piece = b"x" * (64 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(_request_head(port, task_id, auth, "Transfer-Encoding: chunked"))

        def chunk(data: bytes) -> bytes:
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        conn.sendall(chunk(_part_head()))
        # 10 MiB + 128 KiB of the 11 MiB file; the last ~900 KiB are never sent. A server
        # that read to the end before answering would wait here until the timeout.
        for _ in range(10 * 16 + 2):
            conn.sendall(chunk(piece))
        status, problem = _read_answer(conn)
    assert status == 413
    assert problem["code"] == "PAYLOAD_TOO_LARGE"
    # The partial object was removed, not left behind.
    assert _stored(root) == []
    assert list(root.glob("*/.*.part")) == []


def test_50_mib_upload_and_download_keep_memory_flat(roomy: _Server) -> None:
    process, port, _ = roomy
    auth, task_id = _task(port)
    base = f"http://127.0.0.1:{port}/api/v1/tasks/{task_id}/attachments"
    # Warm up: the first upload loads the code paths and the store's directories.
    warm = httpx.post(base, files={"file": ("warm.bin", b"w" * MiB)}, headers=auth, timeout=60)
    assert warm.status_code == 201, warm.text
    before = rss_kib(process.pid)

    block = bytes(range(256)) * 256  # 64 KiB, not all one byte
    blocks = 50 * 16
    expected = hashlib.sha256()
    for _ in range(blocks):
        expected.update(block)

    def body() -> Iterator[bytes]:
        yield _part_head("fifty.bin")
        for _ in range(blocks):
            yield block
        yield TAIL

    headers = {**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    created = httpx.post(base, content=body(), headers=headers, timeout=120)
    assert created.status_code == 201, created.text
    attachment = created.json()
    assert attachment["size"] == 50 * MiB
    assert attachment["sha256"] == expected.hexdigest()
    after_upload = rss_kib(process.pid)

    received = hashlib.sha256()
    size = 0
    with httpx.stream("GET", f"{base}/{attachment['id']}/content", headers=auth, timeout=120) as r:
        assert r.status_code == 200
        for data in r.iter_bytes():
            received.update(data)
            size += len(data)
    assert size == 50 * MiB
    assert received.hexdigest() == expected.hexdigest()
    after_download = rss_kib(process.pid)

    # The file was 50 MiB; the server grew by a few MiB at most.
    assert after_upload - before < 8 * 1024, (before, after_upload)
    assert after_download - before < 8 * 1024, (before, after_download)
