"""The measurement procedures: each starts its servers, drives wrk and files its results.

Every procedure works on a fresh copy of a cached dataset, measures the app and the bare
baseline in the same run, and alternates which of the two goes first from round to round so
slow drift of the machine falls on both equally.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import httpx

from bench import loads, seeding, servers, wrk
from bench.databases import Backend
from bench.loads import Credentials
from bench.report import (
    APP,
    BASELINE,
    ColdStart,
    Comparison,
    LargeList,
    LoginMemory,
    Measured,
    Memory,
    Overload,
    Report,
)
from bench.seeding import Fixture
from bench.wrk import Load, WrkResult

LONGEST_RUN_SECONDS = 1800  # the memory scenario stops after its request count, not this


class ScenarioError(RuntimeError):
    """A scenario could not be measured (the harness's fault or the app's, not a slow run)."""


@dataclass(frozen=True, slots=True)
class Options:
    rounds: int
    seconds: float
    warmup: float
    connections: int
    memory_requests: int
    login_connections: int
    login_requests: int
    login_concurrency: int
    login_seconds: float
    cold_starts: int
    large_rounds: int
    large_requests: int
    large_seconds: float
    large_connections: int
    overload_connections: tuple[int, ...]
    overload_seconds: float
    rebuild_cache: bool
    app_env: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Bench:
    """What every procedure needs: options, where to work, how to pin, where results go."""

    options: Options
    workdir: Path
    server_cpus: tuple[int, ...]
    client_cpus: tuple[int, ...]
    password_hash: str
    report: Report
    log: Callable[[str], None]
    credentials: dict[tuple[str, str], Credentials] = field(default_factory=dict)

    # ---- servers ---------------------------------------------------------------------------

    def spec(
        self, server: str, fixture: Fixture, *, echo_request_id: bool = False
    ) -> servers.ServerSpec:
        if server == APP:
            env = servers.app_environment(
                fixture.app_database_url, self.workdir, self.options.app_env
            )
            return servers.app_spec(env, self.workdir, self.server_cpus)
        env = servers.baseline_environment(
            fixture.baseline_dsn,
            self.password_hash,
            echo_request_id=echo_request_id,
        )
        return servers.baseline_spec(env, self.workdir, self.server_cpus)

    def run_wrk(
        self, server: servers.Server, load: Load, *, seconds: float, connections: int
    ) -> WrkResult:
        seconds = min(seconds, LONGEST_RUN_SECONDS)
        result = wrk.run(
            server.url, load, seconds=seconds, connections=connections, cpus=self.client_cpus
        )
        server.wait_idle()
        return result

    def measure(
        self, server: servers.Server, load: Load, *, seconds: float, connections: int
    ) -> WrkResult:
        """Check the request works, warm up, then measure."""
        probe(server, load)
        if self.options.warmup > 0:
            self.run_wrk(server, load, seconds=self.options.warmup, connections=connections)
        return self.run_wrk(server, load, seconds=seconds, connections=connections)

    # ---- datasets --------------------------------------------------------------------------

    @contextmanager
    def dataset(
        self, backend: Backend, schema: str, name: str
    ) -> Iterator[tuple[Fixture, Credentials]]:
        """A fresh copy of a dataset, and the bench accounts' credentials on it."""
        fixture = seeding.prepare(
            backend,
            seeding.DATASETS[name],
            schema,
            self.workdir,
            self.log,
            rebuild=self.options.rebuild_cache,
        )
        try:
            key = (backend.name, name)
            if key not in self.credentials:
                with servers.running(self.spec(APP, fixture)) as server:
                    self.credentials[key] = sign_in(server, fixture)
            yield fixture, self.credentials[key]
        finally:
            seeding.drop(backend, fixture)


class Pace(NamedTuple):
    seconds: float
    connections: int
    stop_after: int = 0


def throughput_settings(options: Options, scenario: str) -> Pace:
    """wrk's duration, connections and request count for a route.

    A login is ~160 ms of Argon2 on one core, a few per second: at -c50 every login would wait
    for 49 others and a short run would see none finish, so logins get fewer connections and
    run until ``login_requests`` have been answered (at most a minute).
    """
    if scenario == "login":
        connections = min(options.connections, options.login_connections)
        return Pace(60, connections, options.login_requests)
    return Pace(options.seconds, options.connections)


def order(round_no: int) -> tuple[str, str]:
    return (APP, BASELINE) if round_no % 2 else (BASELINE, APP)


def sign_in(server: servers.Server, fixture: Fixture) -> Credentials:
    """Log the bench accounts in over HTTP and fetch the cursor to the reader's page 2."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        reader = seeding.login(client, seeding.READER)
        writer = seeding.login(client, seeding.WRITER) if fixture.writer_id is not None else None
        page = client.get(f"/api/v1/tasks?limit={loads.LIST_LIMIT}", headers=loads.bearer(reader))
        if page.status_code != 200:
            raise ScenarioError(f"first list page: {page.status_code} {page.text[:300]}")
        cursor = page.json().get("next_cursor")
    return Credentials(reader=reader, writer=writer, next_cursor=cursor)


def probe(server: servers.Server, load: Load) -> None:
    """Send the load's first request once: a scenario answering 4xx/5xx is not measured."""
    request = load.requests[0]
    low = load.id_range[0]
    path = request.path.replace("{id}", str(low)).replace("{n}", "0")
    body = request.body.replace("{id}", str(low)).replace("{n}", "0")
    answer = httpx.request(
        request.method,
        server.url + path,
        content=body.encode() or None,
        headers=dict(load.headers),
        timeout=120,
    )
    if not 200 <= answer.status_code < 300:
        raise ScenarioError(
            f"{server.name}: {request.method} {path} answered {answer.status_code}: "
            f"{answer.text[:300]}"
        )


def _describe(result: WrkResult) -> str:
    errors = result.error_responses + result.socket_errors
    text = f"{result.rps:9,.1f} req/s  p50 {result.p50_ms:8.1f} ms  p99 {result.p99_ms:8.1f} ms"
    return text + (f"  ERRORS {errors}" if errors else "")


# ---- procedures ----------------------------------------------------------------------------


def throughput(bench: Bench, backend: Backend, schema: str, names: list[str]) -> None:
    """Alternating rounds; each server runs every selected route once per round."""
    options = bench.options
    comparisons = {
        name: Comparison(
            backend.name,
            name,
            loads.THROUGHPUT[name][0],
            throughput_settings(options, name).connections,
        )
        for name in names
    }
    with bench.dataset(backend, schema, "small") as (fixture, credentials):
        for round_no in range(1, options.rounds + 1):
            for server_name in order(round_no):
                with servers.running(bench.spec(server_name, fixture)) as server:
                    for name in names:
                        pair = loads.THROUGHPUT[name][1](fixture, credentials)
                        load = pair[0] if server_name == APP else pair[1]
                        pace = throughput_settings(options, name)
                        result = bench.measure(
                            server,
                            dataclasses.replace(load, stop_after=pace.stop_after),
                            seconds=pace.seconds,
                            connections=pace.connections,
                        )
                        target = (
                            comparisons[name].app
                            if server_name == APP
                            else comparisons[name].baseline
                        )
                        target.append(Measured.of(result))
                        bench.log(
                            f"[{backend.name}] round {round_no}/{options.rounds} "
                            f"{server_name:11s} {name:7s} {_describe(result)}"
                        )
    bench.report.comparisons.extend(comparisons.values())


class MemoryRun(NamedTuple):
    before_mib: float
    after_mib: float
    peak_mib: float
    result: WrkResult


def _memory_run(
    bench: Bench,
    fixture: Fixture,
    server_name: str,
    load: Load,
    *,
    seconds: float,
    connections: int,
) -> MemoryRun:
    """A fresh server's VmRSS before and after one wrk run, and its VmHWM (peak) after."""
    with servers.running(bench.spec(server_name, fixture)) as server:
        probe(server, load)
        server.wait_idle()
        before, _ = server.memory()
        result = bench.run_wrk(server, load, seconds=seconds, connections=connections)
        after, peak = server.memory()
    return MemoryRun(before, after, peak, result)


def memory(bench: Bench, backend: Backend, schema: str) -> None:
    """RSS of a fresh server after ``memory_requests`` requests of the mixed load."""
    options = bench.options
    with bench.dataset(backend, schema, "small") as (fixture, credentials):
        pair = loads.mixed(fixture, credentials)
        for server_name, load in ((APP, pair[0]), (BASELINE, pair[1])):
            run = _memory_run(
                bench,
                fixture,
                server_name,
                dataclasses.replace(load, stop_after=options.memory_requests),
                seconds=LONGEST_RUN_SECONDS,
                connections=options.connections,
            )
            result = run.result
            bench.report.memory.append(
                Memory(
                    backend=backend.name,
                    server=server_name,
                    requests=result.requests,
                    seconds=result.seconds,
                    rps=result.rps,
                    rss_start_mib=run.before_mib,
                    rss_end_mib=run.after_mib,
                    peak_mib=run.peak_mib,
                    errors=result.error_responses + result.socket_errors,
                )
            )
            bench.log(
                f"[{backend.name}] memory {server_name:11s} {result.requests:,} requests: RSS "
                f"{run.before_mib:.0f} -> {run.after_mib:.0f} MiB, peak {run.peak_mib:.0f} MiB "
                f"({_describe(result)})"
            )


def login_memory(bench: Bench, backend: Backend, schema: str) -> None:
    """Peak RSS (VmHWM) of a fresh server while ``login_concurrency`` logins run at once."""
    options = bench.options
    with bench.dataset(backend, schema, "small") as (fixture, credentials):
        pair = loads.login(fixture, credentials)
        for server_name, load in ((APP, pair[0]), (BASELINE, pair[1])):
            # run_wrk waits for the logins still in flight, so the peak includes them.
            run = _memory_run(
                bench,
                fixture,
                server_name,
                load,
                seconds=options.login_seconds,
                connections=options.login_concurrency,
            )
            bench.report.login_memory.append(
                LoginMemory(
                    backend=backend.name,
                    server=server_name,
                    concurrency=options.login_concurrency,
                    logins=run.result.requests,
                    rss_before_mib=run.before_mib,
                    peak_mib=run.peak_mib,
                    errors=run.result.error_responses + run.result.socket_errors,
                )
            )
            bench.log(
                f"[{backend.name}] logins x{options.login_concurrency} {server_name:11s} RSS "
                f"{run.before_mib:.0f} MiB, peak {run.peak_mib:.0f} MiB ({_describe(run.result)})"
            )


def cold_start(bench: Bench, backend: Backend, schema: str) -> None:
    """Exec to the first 200 from /health, ``cold_starts`` times each, alternating servers
    (byte-compiled first, as deployed: ``servers.compile_bytecode``)."""
    servers.compile_bytecode()
    with bench.dataset(backend, schema, "small") as (fixture, _):
        runs: dict[str, list[float]] = {APP: [], BASELINE: []}
        for round_no in range(1, bench.options.cold_starts + 1):
            for server_name in order(round_no):
                runs[server_name].append(servers.cold_start(bench.spec(server_name, fixture)))
        for server_name, seconds in runs.items():
            bench.report.cold_start.append(ColdStart(backend.name, server_name, seconds))
            bench.log(
                f"[{backend.name}] cold start {server_name:11s} "
                + " ".join(f"{s:.2f}" for s in seconds)
                + " s"
            )


def large(bench: Bench, backend: Backend, schema: str) -> None:
    """A list page with its total at 10 k and at 1 M rows, unfiltered and with each filter."""
    options = bench.options
    results = {
        name: LargeList(
            backend.name,
            name,
            "&".join(f"{k}={v}" for k, v in query.items()),
            options.large_connections,
        )
        for name, query in loads.LARGE_FILTERS.items()
    }
    with ExitStack() as stack:
        beds = {
            size: stack.enter_context(bench.dataset(backend, schema, size))
            for size in ("10k", "1m")
        }
        for round_no in range(1, options.large_rounds + 1):
            for size, (fixture, credentials) in beds.items():
                for server_name in order(round_no):
                    with servers.running(bench.spec(server_name, fixture)) as server:
                        for name, query in loads.LARGE_FILTERS.items():
                            pair = loads.list_page(fixture, credentials, query)
                            load = pair[0] if server_name == APP else pair[1]
                            # A count of pages, not a time: at 1 M rows a page may take 1 s.
                            result = bench.measure(
                                server,
                                dataclasses.replace(load, stop_after=options.large_requests),
                                seconds=options.large_seconds,
                                connections=options.large_connections,
                            )
                            results[name].add(server_name, size, Measured.of(result))
                            bench.log(
                                f"[{backend.name}] round {round_no}/{options.large_rounds} "
                                f"{size:3s} {server_name:11s} {name:6s} {_describe(result)}"
                            )
    bench.report.large.extend(results.values())


def overload(bench: Bench, backend: Backend, schema: str) -> None:
    """GET and POST at each connection count: goodput, 2xx latency and the shed 503s.

    Every level starts a fresh server warmed at the normal connection count, so a backlog
    left by the previous level cannot count against the next.
    """
    with bench.dataset(backend, schema, "small") as (fixture, credentials):
        for name in ("get", "create"):
            title, build = loads.THROUGHPUT[name]
            pair = build(fixture, credentials)
            for connections in bench.options.overload_connections:
                for server_name, load in ((APP, pair[0]), (BASELINE, pair[1])):
                    spec = bench.spec(server_name, fixture, echo_request_id=True)
                    result = _overload_level(bench, spec, load, connections)
                    record = _overload_record(backend.name, title, server_name, connections, result)
                    bench.report.overload.append(record)
                    bench.log(
                        f"[{backend.name}] overload {name:6s} -c{connections:<5d} "
                        f"{server_name:11s} goodput {record.goodput:8,.1f}/s  "
                        f"2xx p99 {ms_text(record.ok_p99_ms)}  503s {record.shed:,}  "
                        f"other {record.other_errors:,}  socket errors {record.socket_errors:,}"
                    )


def _overload_level(
    bench: Bench, spec: servers.ServerSpec, load: Load, connections: int
) -> WrkResult:
    with servers.running(spec) as server:
        probe(server, load)
        if bench.options.warmup > 0:
            warmup, normal = bench.options.warmup, bench.options.connections
            bench.run_wrk(server, load, seconds=warmup, connections=normal)
        return bench.run_wrk(
            server,
            dataclasses.replace(load, track_statuses=True),
            seconds=bench.options.overload_seconds,
            connections=connections,
        )


def _overload_record(
    backend: str, title: str, server: str, connections: int, result: WrkResult
) -> Overload:
    shed = result.statuses.get(503, 0)
    ok = sum(n for status, n in result.statuses.items() if 200 <= status < 300)
    return Overload(
        backend=backend,
        scenario=title,
        server=server,
        connections=connections,
        seconds=result.seconds,
        goodput=result.goodput,
        ok_p50_ms=result.ok.p50_ms if result.ok else None,
        ok_p99_ms=result.ok.p99_ms if result.ok else None,
        shed=shed,
        shed_p99_ms=result.shed.p99_ms if result.shed else None,
        other_errors=result.requests - ok - shed,
        socket_errors=result.socket_errors,
    )


def ms_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


PROCEDURES: dict[str, Callable[[Bench, Backend, str], None]] = {
    "memory": memory,
    "login-memory": login_memory,
    "cold-start": cold_start,
    "large": large,
    "overload": overload,
}
