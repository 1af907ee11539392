"""Taskmanager's benchmark suite: each route against a bare-FastAPI baseline in the same run.

Both servers are one uvicorn worker pinned to one core, loaded by ``wrk`` pinned to the
other, in alternating rounds; ratios are the median of per-round ratios, because this
machine is noisy and only ratios measured in the same run mean anything. Results go to
stdout, ``bench/results/latest.{json,md}`` and a time-stamped JSON file. A missed target is
printed as BELOW and never fails the run; the exit status is 1 only when a scenario could
not be measured at all.

Usage: ``make bench`` or ``python -m bench.run``;
``BENCH_ARGS="--scenario get,create --rounds 5 --seconds 10"`` selects; ``--full`` adds the
1 M-row lists and the overload scenario. README.md § Performance describes each scenario.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from bench import databases, loads, machine, render, seeding, servers, wrk
from bench.passwords import password_hasher
from bench.report import Report
from bench.scenarios import PROCEDURES, Bench, Options, throughput

ROUTES = list(loads.THROUGHPUT)  # get, create, update, list, cursor, login
DEFAULT = [*ROUTES, "memory", "login-memory", "cold-start"]
ALL = [*DEFAULT, "large", "overload"]  # --full
BACKENDS = ["postgresql", "sqlite"]
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "taskmanager-bench"


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in _names(text))


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith(servers.SETTINGS_PREFIX):
        raise argparse.ArgumentTypeError(f"expected TASKMANAGER_NAME=VALUE, got {text!r}")
    return name, value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--scenario", type=_names, help=f"from {','.join(ALL)}; default {','.join(DEFAULT)}")
    add("--full", action="store_true", help="every scenario: adds large and overload")
    add("--backend", type=_names, default=BACKENDS, help="postgresql,sqlite (default both)")
    add("--rounds", type=int, default=3, help="alternating rounds per route (3)")
    add("--seconds", type=float, default=3, help="measured seconds per route and round (3)")
    add("--warmup", type=float, default=1, help="unmeasured seconds before each (1)")
    add("--connections", type=int, default=50, help="wrk connections (50)")
    add("--login-connections", type=int, default=10, help="wrk connections for login (10)")
    add("--login-requests", type=int, default=30, help="logins per round, in <= 60 s (30)")
    add("--memory-requests", type=int, default=100_000, help="requests before reading RSS")
    add("--login-concurrency", type=int, default=20, help="logins at once for peak RSS (20)")
    add("--login-seconds", type=float, default=5, help="length of that login storm (5)")
    add("--cold-starts", type=int, default=5, help="cold starts per server (5)")
    add("--large-rounds", type=int, default=2, help="rounds of the 10k/1M lists (2)")
    add("--large-requests", type=int, default=20, help="pages per list and round (20)")
    add("--large-seconds", type=float, default=30, help="at most this long each (30)")
    add("--large-connections", type=int, default=1, help="1: the cost of one page alone")
    add("--overload-connections", type=_ints, default=(50, 200, 1000), help="50,200,1000")
    add("--overload-seconds", type=float, default=15, help="seconds per level (15)")
    add(
        "--pg", default=os.environ.get("BENCH_PG", "postgres@127.0.0.1:5432"), help="user@host:port"
    )
    add("--cache-dir", type=Path, default=CACHE, help=f"seeded SQLite files ({CACHE})")
    add("--rebuild-cache", action="store_true", help="seed the datasets again")
    add(
        "--app-env",
        type=_setting,
        action="append",
        default=[],
        metavar="TASKMANAGER_NAME=VALUE",
        help="a setting for the app under test (repeatable)",
    )
    add("--server-cpus", type=_ints, help="default: the last core")
    add("--client-cpus", type=_ints, help="default: the other cores")
    add("--output-dir", type=Path, default=RESULTS, help="default bench/results")
    add("--json", type=Path, help="also write the JSON results here")
    return p


def pinning(args: argparse.Namespace) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(server cores, wrk cores): the server alone on the last core when there are two+."""
    if args.server_cpus is not None or args.client_cpus is not None:
        return tuple(args.server_cpus or ()), tuple(args.client_cpus or ())
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return (), ()
    return (available[-1],), tuple(available[:-1])


def log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    selected = args.scenario or (ALL if args.full else DEFAULT)
    unknown = [n for n in selected if n not in ALL] + [b for b in args.backend if b not in BACKENDS]
    if unknown:
        print(f"unknown scenario or backend: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    open_files = servers.raise_open_files_limit()
    if "overload" in selected and open_files < max(args.overload_connections) + 100:
        log(f"the open-files limit is {open_files}: the largest overload level will hit it")
    server_cpus, client_cpus = pinning(args)
    if client_cpus:
        # The harness too (its polling, probes and seeding): the server's core stays its own.
        os.sched_setaffinity(0, set(client_cpus))
    pinned = (
        f"server on CPU {','.join(map(str, server_cpus))}, wrk on CPU "
        f"{','.join(map(str, client_cpus))}, databases unpinned"
        if server_cpus
        else "no CPU pinning"
    )
    postgres = databases.Postgres(args.pg) if "postgresql" in args.backend else None
    if postgres is not None:
        postgres.prune_abandoned()
    report = Report(
        machine=machine.describe(
            postgres.version() if postgres else None, wrk.wrk_version(), pinned
        ),
        settings={
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "scenario": selected,
            "app_env": dict(args.app_env),
        },
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        load_average={"start": list(os.getloadavg())},
    )
    options = Options(
        **{f.name: getattr(args, f.name) for f in fields(Options) if f.name != "app_env"},
        app_env=dict(args.app_env),
    )
    log(f"Machine: {machine.summary(report.machine)}")
    log(f"Scenarios: {', '.join(selected)} on {', '.join(args.backend)}")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tm-bench-"))
    bench = Bench(
        options=options,
        workdir=workdir,
        server_cpus=server_cpus,
        client_cpus=client_cpus,
        password_hash=password_hasher().hash(seeding.PASSWORD),
        report=report,
        log=log,
    )
    try:
        for name in args.backend:
            backend = postgres if name == "postgresql" and postgres else None
            run_backend(bench, backend or databases.Sqlite(args.cache_dir, workdir), selected)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report.finished = datetime.now(UTC).isoformat(timespec="seconds")
    report.load_average["end"] = list(os.getloadavg())
    print()
    print(render.text(report))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    written = render.write(report, args.output_dir, stamp, args.json)
    log(f"Written: {', '.join(str(path) for path in written)}")
    log(f"Took {(time.monotonic() - started) / 60:.1f} minutes")
    return 1 if report.problems else 0


def run_backend(bench: Bench, backend: databases.Backend, selected: list[str]) -> None:
    """Every selected scenario on one backend; a scenario that breaks is reported, not fatal."""
    try:
        schema = seeding.schema_key(backend, bench.workdir)
    except Exception as exc:
        bench.report.problems.append(f"{backend.name}: cannot build the schema: {exc}")
        log(f"[{backend.name}] cannot build the schema: {exc}")
        return
    routes = [name for name in selected if name in ROUTES]
    steps: list[tuple[str, Callable[[], None]]] = []
    if routes:
        steps.append(("routes", partial(throughput, bench, backend, schema, routes)))
    steps += [
        (name, partial(PROCEDURES[name], bench, backend, schema))
        for name in selected
        if name in PROCEDURES
    ]
    for name, step in steps:
        started = time.monotonic()
        try:
            step()
            log(f"[{backend.name}] {name} took {time.monotonic() - started:.0f} s")
        except Exception as exc:
            bench.report.problems.append(f"{backend.name} {name}: {type(exc).__name__}: {exc}")
            log(f"[{backend.name}] {name} could not be measured:\n{traceback.format_exc()}")


if __name__ == "__main__":
    sys.exit(main())
