"""Several real ``taskmanager`` processes sharing one configuration, and a client that
acts like the load balancer in front of them.

``Cluster``: N ``taskmanager serve`` processes on free loopback ports with the same settings
(one database, one Redis, one data dir), each started, stopped, killed and restarted on its
own port, plus any other ``taskmanager`` command with the same settings (``migrate`` once,
long-running helpers such as ``taskmanager worker`` through ``start_process``).

``Balancer``: sends each request to the next backend whose ``/ready`` answers 200 (a thread
polls every backend, as a load balancer's health check does), and a request that cannot
connect or loses its connection goes to the next backend — what nginx's
``proxy_next_upstream error`` and a Kubernetes Service with readiness probes do. It retries
only on connection errors, never on an answer: every answer is returned to the caller.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.serve_support import (
    TASKMANAGER,
    command_env,
    free_port,
    output_of,
    spawn,
    start_serve,
    stop_server,
    wait_until_answering,
)

# How long a process may take to start (or to stop) on a loaded two-core machine.
START_TIMEOUT = 120
STOP_TIMEOUT = 120


class Cluster:
    """``size`` ``taskmanager serve`` processes with one set of ``TASKMANAGER_*`` settings."""

    def __init__(self, cwd: Path, settings: dict[str, str], size: int) -> None:
        self.cwd = cwd
        self.settings = settings
        self.ports = [free_port() for _ in range(size)]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * size
        self.helpers: list[subprocess.Popen[bytes]] = []

    @property
    def size(self) -> int:
        return len(self.ports)

    def url(self, index: int, path: str = "") -> str:
        """``http://127.0.0.1:<port of process index><path>``."""
        return f"http://127.0.0.1:{self.ports[index]}{path}"

    def ws_url(self, index: int, path: str) -> str:
        """The same for a WebSocket: ``ws://127.0.0.1:<port><path>``."""
        return f"ws://127.0.0.1:{self.ports[index]}{path}"

    def run(self, *args: str) -> str:
        """Run a one-shot ``taskmanager ARGS`` (e.g. ``migrate``) to completion; its output."""
        result = subprocess.run(
            [TASKMANAGER, *args],
            env=command_env(self.settings),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def start_process(self, *args: str) -> subprocess.Popen[bytes]:
        """Start a long-running ``taskmanager ARGS`` with the cluster's settings (e.g.
        ``start_process("worker")``); it is stopped with the cluster."""
        process = spawn(self.cwd, self.settings, args)
        self.helpers.append(process)
        return process

    def start(self, index: int) -> None:
        """Start process ``index`` on its port, without waiting for it."""
        current = self.processes[index]
        assert current is None or current.poll() is not None, f"process {index} is running"
        self.processes[index] = start_serve(self.cwd, self.settings, self.ports[index])

    def wait_ready(self, index: int) -> None:
        """Wait until process ``index`` answers ``/ready`` with 200."""
        process = self.processes[index]
        assert process is not None
        wait_until_answering(process, self.ports[index], "/ready", timeout=START_TIMEOUT)

    def ensure_running(self) -> None:
        """Start every process that is not running, then wait until all are ready."""
        for index, process in enumerate(self.processes):
            if process is None or process.poll() is not None:
                self.start(index)
        for index in range(self.size):
            self.wait_ready(index)

    def kill(self, index: int) -> None:
        """``kill -9`` process ``index``: no drain, no shutdown, connections reset."""
        process = self.processes[index]
        assert process is not None
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=STOP_TIMEOUT) == -signal.SIGKILL

    def terminate(self, index: int) -> int:
        """SIGTERM process ``index`` (drain, then a graceful stop); its exit status."""
        process = self.processes[index]
        assert process is not None
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=STOP_TIMEOUT)
        assert code == 0, output_of(process)
        return code

    def close(self) -> None:
        for process in [*self.processes, *self.helpers]:
            if process is not None:
                stop_server(process)


class Balancer:
    """Round-robin over the ready backends, retrying connection errors on the next one.

    ``served`` counts the answers each backend gave; ``connection_errors`` the attempts that
    failed to connect or lost their connection (each retried elsewhere).
    """

    def __init__(
        self, cluster: Cluster, headers: dict[str, str], poll_seconds: float = 0.05
    ) -> None:
        self.cluster = cluster
        self.headers = headers
        self.poll_seconds = poll_seconds
        self.ready = [False] * cluster.size
        self.served: Counter[int] = Counter()
        self.connection_errors = 0
        self._clients = [
            httpx.Client(base_url=cluster.url(i), headers=headers, timeout=60)
            for i in range(cluster.size)
        ]
        self._turn = itertools.cycle(range(cluster.size))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Balancer:
        self._check_all()
        self._poller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._poller.join()
        for client in self._clients:
            client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send to the next ready backend; on a connection error, to the one after it."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            index = self._next_ready()
            if index is None:
                assert time.monotonic() < deadline, "no backend became ready"
                time.sleep(self.poll_seconds)
                continue
            try:
                response = self._clients[index].request(method, path, **kwargs)
            except httpx.TransportError:
                with self._lock:
                    self.connection_errors += 1
                self.ready[index] = False  # until its /ready answers 200 again
                continue
            with self._lock:
                self.served[index] += 1
            return response

    def _next_ready(self) -> int | None:
        with self._lock:
            for _ in range(self.cluster.size):
                index = next(self._turn)
                if self.ready[index]:
                    return index
        return None

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self._check_all()

    def _check_all(self) -> None:
        for index in range(self.cluster.size):
            try:
                answer = httpx.get(self.cluster.url(index, "/ready"), timeout=1)
                self.ready[index] = answer.status_code == 200
            except httpx.TransportError:
                self.ready[index] = False


@contextmanager
def running(cluster: Cluster) -> Iterator[Cluster]:
    """Start every process, wait until all are ready; stop them all at the end."""
    try:
        cluster.ensure_running()
        yield cluster
    finally:
        cluster.close()


def client_address() -> str:
    """A client IP of this test's own (TEST-NET-2), sent as ``X-Forwarded-For``: the
    processes believe it from loopback, so rate-limit counters are this test's alone."""
    number = uuid.uuid4().int
    return f"198.51.{number % 250 + 1}.{(number >> 8) % 250 + 1}"


PASSWORD = "Scale-0ut-pass"


def sign_up(base_url: str, address: str) -> dict[str, str]:
    """Register a new user and log in through ``base_url``; the ``Authorization`` header
    (plus ``X-Forwarded-For: address``) for its requests."""
    name = f"scale{uuid.uuid4().hex[:10]}"
    forwarded = {"X-Forwarded-For": address}
    created = httpx.post(
        f"{base_url}/api/v1/users",
        json={"email": f"{name}@example.com", "username": name, "password": PASSWORD},
        headers=forwarded,
        timeout=60,
    )
    assert created.status_code == 201, created.text
    token = httpx.post(
        f"{base_url}/api/v1/auth/token",
        data={"username": name, "password": PASSWORD},
        headers=forwarded,
        timeout=60,
    )
    assert token.status_code == 200, token.text
    return {**forwarded, "Authorization": f"Bearer {token.json()['access_token']}"}
