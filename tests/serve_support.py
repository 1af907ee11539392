"""Start real ``taskmanager`` processes for tests that need them (processes, signals, sockets)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

TASKMANAGER = str(Path(sys.executable).parent / "taskmanager")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """For ``Popen(preexec_fn=...)``: the child gets SIGKILL when the test process dies.

    A run that ends by its timeout (pytest-timeout exits the process) or is killed would
    otherwise leave the servers, workers and fake services it started running, holding the
    database, ports and CPU that the next run on the same machine needs. Linux only
    (``prctl(PR_SET_PDEATHSIG)``, kept across exec); the signal comes when the thread that
    started the child ends, so start children from the main thread (the tests' event loop
    runs there). Elsewhere nothing changes.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command_env(settings: dict[str, str]) -> dict[str, str]:
    """This environment without any ``TASKMANAGER_*`` variable, plus exactly ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMANAGER_")}
    env.update(settings)
    return env


def spawn(cwd: Path, settings: dict[str, str], args: Sequence[str]) -> subprocess.Popen[bytes]:
    """Run ``taskmanager ARGS`` with only these settings; output is captured (stdout+stderr)."""
    return subprocess.Popen(
        [TASKMANAGER, *args],
        env=command_env(settings),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )


def output_of(process: subprocess.Popen[bytes]) -> str:
    """What an exited process wrote (the tail), for assertion messages."""
    data = process.stdout.read() if process.stdout else b""
    return data.decode(errors="replace")[-4000:]


def wait_until_answering(
    process: subprocess.Popen[bytes], port: int, path: str = "/health", timeout: float = 60
) -> None:
    """Return once GET ``path`` answers 200; fail if the process exits or never answers."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"server exited early: {output_of(process)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"server did not answer 200 on {path}")
        time.sleep(0.1)


def start_serve(
    cwd: Path, settings: dict[str, str], port: int, args: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """``taskmanager serve`` on 127.0.0.1:``port`` without waiting for it."""
    return spawn(cwd, settings, ["serve", "--host", "127.0.0.1", "--port", str(port), *args])


def start_server(
    cwd: Path, settings: dict[str, str], args: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], int]:
    """Serve with only these TASKMANAGER_* settings; return once /health answers."""
    port = free_port()
    process = start_serve(cwd, settings, port, args)
    wait_until_answering(process, port)
    return process, port


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
