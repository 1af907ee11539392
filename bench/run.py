"""Throughput of an authenticated ``GET /api/v1/tasks/{id}`` against a bare-FastAPI baseline.

Both servers run one uvicorn worker against the same PostgreSQL database, one after the
other, in alternating rounds, loaded by ``wrk`` on loopback; the report is the median of
per-round ratios, because this machine is noisy and only ratios measured in the same run
mean anything. Usage: ``make bench`` (``BENCH_ARGS="--rounds 5 --seconds 10"``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG", "postgres@127.0.0.1:5432")
TARGET_RATIO = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not come up")


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str]) -> float:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} error responses during the run:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    return float(match.group(1))


async def prepare_database(name: str) -> tuple[str, int, str]:
    """Create and migrate the bench database; seed a user with one task. Return URL, id, token."""
    user, host = PG.split("@")
    admin = await asyncpg.connect(f"postgresql://{user}@{host}/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = f"postgresql+asyncpg://{user}@{host}/{name}"
    from taskmanager import migrate
    from taskmanager.kit.config import load_settings
    from taskmanager.kit.db import Database
    from taskmanager.kit.security import create_access_token, hash_password
    from taskmanager.models.tasks import Task
    from taskmanager.models.users import User
    from taskmanager.projects.inbox import create_inbox

    await migrate.upgrade_async(url)
    settings = load_settings(database_url=url, secret_key=BENCH_SECRET)
    database = Database(settings)
    async with database.session(write=True) as session:
        owner = User(
            email="bench@example.com",
            username="bench",
            password_hash=await hash_password("Bench-pass-1"),
        )
        session.add(owner)
        await session.flush()
        inbox = await create_inbox(session, owner.id)
        # Some bulk so the query has an index to use, not a one-row table to scan.
        session.add_all(
            Task(project_id=inbox.id, title=f"task {i}", created_by=owner.id, tags=["bench"])
            for i in range(2000)
        )
        await session.flush()
        task_id = (
            await session.execute(
                Task.__table__.select().with_only_columns(Task.id).order_by(Task.id).limit(1)
            )
        ).scalar_one()
        await session.commit()
        owner_id = owner.id
    await database.dispose()
    token = create_access_token(owner_id, BENCH_SECRET, timedelta(hours=2))
    return url, task_id, token


BENCH_SECRET = "bench-secret-key-0123456789abcdef0123456789"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2

    db_name = f"taskmanager_bench_{os.getpid()}"
    url, task_id, token = asyncio.run(prepare_database(db_name))
    user, host = PG.split("@")
    data_dir = Path(tempfile.mkdtemp(prefix="tm-bench-"))
    env = {
        **os.environ,
        "BENCH_PG_DSN": f"postgresql://{user}@{host}/{db_name}",
        "TASKMANAGER_DATABASE_URL": url,
        "TASKMANAGER_SECRET_KEY": BENCH_SECRET,
        "TASKMANAGER_DATA_DIR": str(data_dir),
        # Every middleware stays on; the limit is just set high enough not to trip.
        "TASKMANAGER_RATE_LIMIT_ENABLED": "true",
        "TASKMANAGER_RATE_LIMIT_DEFAULT": "100000000/minute",
        "TASKMANAGER_LOG_LEVEL": "INFO",
    }
    python = sys.executable
    base_port, app_port = free_port(), free_port()
    servers = {
        "baseline": (
            [
                python,
                "-m",
                "uvicorn",
                "bench.baseline:app",
                "--port",
                str(base_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            f"http://127.0.0.1:{base_port}/tasks/{task_id}",
            {},
        ),
        "taskmanager": (
            [str(Path(python).parent / "taskmanager"), "serve", "--port", str(app_port)],
            f"http://127.0.0.1:{app_port}/api/v1/tasks/{task_id}",
            {"Authorization": f"Bearer {token}"},
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for round_no in range(1, args.rounds + 1):
            for name, (cmd, target, headers) in servers.items():
                proc = start(cmd, env)
                try:
                    wait_ready(
                        target.rsplit("/", 1)[0]
                        if name == "baseline"
                        else f"http://127.0.0.1:{app_port}/health"
                    )
                    check = httpx.get(target, headers=headers, timeout=5)
                    check.raise_for_status()
                    wrk(target, 2, args.connections, headers)  # warm-up
                    rps = wrk(target, args.seconds, args.connections, headers)
                finally:
                    stop(proc)
                results[name].append(rps)
                print(f"round {round_no} {name:12s} {rps:10.1f} req/s", flush=True)
    finally:

        async def drop() -> None:
            conn = await asyncpg.connect(f"postgresql://{user}@{host}/postgres")
            await conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            await conn.close()

        asyncio.run(drop())
        shutil.rmtree(data_dir, ignore_errors=True)

    ratios = [a / b for a, b in zip(results["taskmanager"], results["baseline"], strict=True)]
    ratio = statistics.median(ratios)
    summary = {
        "baseline_rps": results["baseline"],
        "taskmanager_rps": results["taskmanager"],
        "ratios": ratios,
        "median_ratio": ratio,
        "target_ratio": TARGET_RATIO,
    }
    print(json.dumps(summary, indent=2))
    verdict = "meets" if ratio >= TARGET_RATIO else "BELOW"
    print(
        f"GET /api/v1/tasks/{{id}}: {ratio:.2f}x the baseline ({verdict} the {TARGET_RATIO}x bar)"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
