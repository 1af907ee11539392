"""Drive ``wrk`` with bench/wrk.lua and read back its statistics.

wrk runs one thread pinned to the client core; requests, headers and the optional status
tracking are handed to the Lua script through the environment. Latencies come back in
microseconds and are reported in milliseconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("wrk.lua")
RESULT_PREFIX = "BENCH_RESULT "
STOPPED = "BENCH_STOPPED"


class WrkError(RuntimeError):
    """wrk could not run or its output could not be read."""


@dataclass(frozen=True, slots=True)
class Request:
    """One request shape; ``{id}`` in path or body becomes a random id from the load's range."""

    method: str
    path: str
    body: str = ""
    weight: int = 1

    def line(self) -> str:
        for part in (self.method, self.path, self.body):
            if "\t" in part or "\n" in part:
                raise ValueError(f"tab or newline in a request part: {part!r}")
        return f"{self.weight}\t{self.method}\t{self.path}\t{self.body}"


@dataclass(frozen=True, slots=True)
class Load:
    """What wrk sends: one or more weighted requests with common headers."""

    requests: tuple[Request, ...]
    headers: Mapping[str, str] = field(default_factory=dict)
    id_range: tuple[int, int] = (1, 1)
    track_statuses: bool = False
    stop_after: int = 0


@dataclass(frozen=True, slots=True)
class Percentiles:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run. ``rps`` counts every answer; ``goodput`` only 2xx (when tracked)."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    statuses: dict[int, int]
    ok: Percentiles | None
    shed: Percentiles | None

    @property
    def error_responses(self) -> int:
        """Answers with status >= 400 (wrk's count) or, when tracked, any non-2xx answer."""
        if self.statuses:
            return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)
        return self.errors["status"]

    @property
    def socket_errors(self) -> int:
        return sum(n for kind, n in self.errors.items() if kind != "status")

    @property
    def goodput(self) -> float:
        """2xx answers per second; without tracking, every answer that was not an error."""
        if self.statuses:
            ok = sum(n for status, n in self.statuses.items() if 200 <= status < 300)
        else:
            ok = self.requests - self.errors["status"]
        return ok / self.seconds if self.seconds else 0.0


def wrk_version() -> str:
    """E.g. "wrk 4.2.0 [epoll]" (the first line of ``wrk -v`` without the copyright)."""
    path = shutil.which("wrk")
    if path is None:
        return "wrk not installed"
    done = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].split(" Copyright")[0].strip() if lines else "wrk"


def _percentiles(raw: Any) -> Percentiles | None:
    if not raw:
        return None
    return Percentiles(
        count=int(raw["count"]),
        p50_ms=raw["p50"] / 1000,
        p99_ms=raw["p99"] / 1000,
        max_ms=raw["max"] / 1000,
    )


def parse(stdout: str) -> WrkResult:
    """Read the ``BENCH_RESULT`` line that bench/wrk.lua's ``done()`` prints."""
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            raw = json.loads(line.removeprefix(RESULT_PREFIX))
            break
    else:
        raise WrkError(f"no {RESULT_PREFIX.strip()} line in wrk output:\n{stdout}")
    seconds = raw["duration_us"] / 1e6
    latency = raw["latency_us"]
    return WrkResult(
        requests=int(raw["requests"]),
        seconds=seconds,
        rps=raw["requests"] / seconds if seconds else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        errors={kind: int(n) for kind, n in raw["errors"].items()},
        statuses={int(status): int(n) for status, n in raw["statuses"].items()},
        ok=_percentiles(raw["ok_us"]),
        shed=_percentiles(raw["shed_us"]),
    )


def run(
    base_url: str,
    load: Load,
    *,
    seconds: float,
    connections: int,
    timeout_seconds: float = 60,
    cpus: Sequence[int] = (),
) -> WrkResult:
    """Run wrk against ``base_url`` for ``seconds`` with ``connections`` open connections.

    ``timeout_seconds`` is long on purpose: wrk leaves answers slower than its timeout out of
    the latency statistics, which would hide exactly the overload tail we want to see.
    """
    env = {
        **os.environ,
        "BENCH_REQUESTS": "\n".join(request.line() for request in load.requests),
        "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in load.headers.items()),
        "BENCH_ID_MIN": str(load.id_range[0]),
        "BENCH_ID_MAX": str(load.id_range[1]),
        "BENCH_TRACK": "1" if load.track_statuses else "0",
        "BENCH_STOP_AFTER": str(load.stop_after),
    }
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={max(1, round(timeout_seconds))}s",
        "--latency",
        "-s",
        str(SCRIPT),
        base_url,
    ]

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, set(cpus))

    try:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=pin,
        )
    except FileNotFoundError as exc:
        raise WrkError("wrk is not installed: apt-get install -y wrk") from exc
    stderr_head = ""
    if load.stop_after:
        # wrk prints its summary only at the end, so its stdout cannot fill up meanwhile.
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(STOPPED):
                proc.send_signal(signal.SIGINT)  # wrk stops early and still reports
                break
            stderr_head += line
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}:\n{stdout}\n{stderr_head}{stderr}")
    return parse(stdout)
