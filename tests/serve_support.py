"""Start a real ``taskmanager serve`` process for tests that need one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TASKMANAGER = str(Path(sys.executable).parent / "taskmanager")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(cwd: Path, settings: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Serve with only these TASKMANAGER_* settings; return once /health answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMANAGER_")}
    env.update(settings)
    process = subprocess.Popen(
        [TASKMANAGER, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else b""
            raise AssertionError(f"server exited early: {output.decode(errors='replace')}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process, port
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("server did not start")
        time.sleep(0.1)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
