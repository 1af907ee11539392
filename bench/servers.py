"""Start and stop the two servers under test: ``taskmanager serve`` and the bare baseline.

Both are one uvicorn process pinned to the server core, started from a scratch directory
(so no ``.env`` of the developer's leaks in) with only the ``TASKMANAGER_*`` settings the
bench chooses. Memory is read from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import http.client
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_PREFIX = "TASKMANAGER_"
APP = "taskmanager"
BASELINE = "baseline"
SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789"  # a throwaway signing key
UNLIMITED = "100000000/minute"


class ServerError(RuntimeError):
    """A server did not start or answer; the message carries the end of its stderr."""


def raise_open_files_limit(wanted: int = 65536) -> int:
    """Lift the soft open-files limit (inherited by servers and wrk); return the new one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return int(soft)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environment() -> dict[str, str]:
    """The harness's environment without any ``TASKMANAGER_*`` setting of the caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIX)}


def app_environment(
    database_url: str, workdir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Settings of the app under test: defaults, except what the bench needs to run at all.

    Rate limiting stays on (its middleware is part of the cost) with limits no run reaches;
    tokens live a day so one login serves the whole run. ``extra`` (``--app-env``) wins.
    """
    return {
        **clean_environment(),
        "TASKMANAGER_DATABASE_URL": database_url,
        "TASKMANAGER_SECRET_KEY": SECRET_KEY,
        "TASKMANAGER_DATA_DIR": str(workdir / "data"),
        "TASKMANAGER_RATE_LIMIT_ENABLED": "true",
        "TASKMANAGER_RATE_LIMIT_DEFAULT": UNLIMITED,
        "TASKMANAGER_RATE_LIMIT_AUTH": UNLIMITED,
        "TASKMANAGER_ACCESS_TOKEN_EXPIRE_MINUTES": "1440",
        **(extra or {}),
    }


def baseline_environment(
    dsn: str,
    password_hash: str,
    *,
    echo_request_id: bool = False,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Settings of bench/baseline.py (see its docstring)."""
    return {
        **clean_environment(),
        "BENCH_DSN": dsn,
        "BENCH_PASSWORD_HASH": password_hash,
        "BENCH_ECHO_REQUEST_ID": "1" if echo_request_id else "0",
        **(extra or {}),
    }


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """How to start one server; ``argv`` gets ``--port`` appended."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    workdir: Path
    cpus: tuple[int, ...] = ()


def app_spec(env: Mapping[str, str], workdir: Path, cpus: Sequence[int]) -> ServerSpec:
    argv = (str(Path(sys.executable).with_name("taskmanager")), "serve", "--host", "127.0.0.1")
    return ServerSpec(APP, argv, env, workdir, tuple(cpus))


def baseline_spec(env: Mapping[str, str], workdir: Path, cpus: Sequence[int]) -> ServerSpec:
    argv = (
        sys.executable,
        "-m",
        "uvicorn",
        "bench.baseline:app",
        "--app-dir",
        str(ROOT),
        "--host",
        "127.0.0.1",
        "--log-level",
        "warning",
        "--no-access-log",
    )
    return ServerSpec(BASELINE, argv, env, workdir, tuple(cpus))


def _get_health(port: int, timeout: float) -> int | None:
    """Status of ``GET /health``, or None while nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def read_memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB: resident now and its peak so far."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024  # kB
    return values["VmRSS"], values["VmHWM"]


class Server:
    """A running server process; ``url`` is its root."""

    def __init__(self, spec: ServerSpec, port: int, proc: subprocess.Popen[bytes], log: Path):
        self.spec = spec
        self.port = port
        self.proc = proc
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    @property
    def name(self) -> str:
        return self.spec.name

    def memory(self) -> tuple[float, float]:
        return read_memory(self.proc.pid)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime

    def wait_healthy(self, timeout: float = 60, poll: float = 0.005) -> None:
        """Block until ``/health`` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if _get_health(self.port, timeout=2) == 200:
                return
            time.sleep(poll)
        raise ServerError(
            f"{self.name} did not answer /health in {timeout:.0f} s:\n{self.log_tail()}"
        )

    def wait_idle(self, timeout: float = 20, interval: float = 0.2) -> None:
        """Wait until the server stops burning CPU on work a finished wrk left in flight.

        A client that goes away does not cancel what the server already accepted: after a
        login storm that is seconds of Argon2, which would land in the next measurement.
        """
        deadline = time.monotonic() + timeout
        quiet = 0
        last = self.cpu_seconds()
        while time.monotonic() < deadline and quiet < 2:
            time.sleep(interval)
            now = self.cpu_seconds()
            quiet = quiet + 1 if now - last < interval * 0.05 else 0
            last = now

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def launch(spec: ServerSpec) -> tuple[Server, float]:
    """Exec the server; return it and the monotonic time of the exec (for cold starts)."""
    port = free_port()
    spec.workdir.mkdir(parents=True, exist_ok=True)
    log = spec.workdir / f"{spec.name}-{port}.log"
    cpus = spec.cpus

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, set(cpus))

    with log.open("wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(
            [*spec.argv, "--port", str(port)],
            env=dict(spec.env),
            cwd=spec.workdir,
            stdout=subprocess.DEVNULL,  # the access log: a pipe nobody reads would block it
            stderr=stderr,
            preexec_fn=pin,
        )
    return Server(spec, port, proc, log), started


@contextmanager
def running(spec: ServerSpec) -> Iterator[Server]:
    """A healthy server for the duration of the block, stopped afterwards."""
    server, _ = launch(spec)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def compile_bytecode() -> None:
    """Byte-compile the environment and the app once, as the image does
    (``UV_COMPILE_BYTECODE=1`` in the Dockerfile).

    A development environment made by ``uv sync`` has no ``.pyc`` files, and with
    ``PYTHONDONTWRITEBYTECODE`` set none are ever written: every start would compile each
    module from source again (over a second on the bench machine), which no deployment pays.
    Already compiled files are skipped, so this is quick after the first run.
    """
    import sysconfig

    targets = {sysconfig.get_paths()["purelib"], str(ROOT / "src")}
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *sorted(targets)],
        stdout=subprocess.DEVNULL,
        check=False,  # a file that does not compile (a test fixture) must not stop the bench
    )


def cold_start(spec: ServerSpec) -> float:
    """Seconds from exec to the first 200 from ``/health``."""
    server, started = launch(spec)
    try:
        server.wait_healthy(poll=0.005)
        return time.monotonic() - started
    finally:
        server.stop()
