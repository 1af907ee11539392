"""At-least-once across crashes (issue 11): 1,000 changes while the delivering process is
killed with SIGKILL and restarted at random moments; the receiver gets every event, and
every signature verifies with the ``standardwebhooks`` library.

The delivering process is ``tests/webhooks/deliverer_process.py`` (the dispatcher round and
the ``Deliverer`` loop, as ``taskmanager worker`` runs them), a real process on the test's
database; the receiver is a real HTTP server on loopback.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import standardwebhooks
from fastapi import FastAPI

from taskmanager.kit.outbox import EventType, record
from tests.conftest import TestDatabase, UserFactory
from tests.factories import create_project
from tests.webhooks.support import Receiver, create_webhook

EVENTS = 1000
PER_TRANSACTION = 10
LEASE_SECONDS = 2.0
ROOT = Path(__file__).resolve().parents[2]


def _start(app: FastAPI, database: TestDatabase, data_dir: Path) -> subprocess.Popen[bytes]:
    settings = app.state.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMANAGER_")}
    env.update(
        {
            "TASKMANAGER_ENV": "test",
            "TASKMANAGER_DATABASE_URL": database.url,
            "TASKMANAGER_SECRET_KEY": settings.secret_key,
            "TASKMANAGER_DATA_DIR": str(data_dir),
            "TASKMANAGER_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
            "TASKMANAGER_LOG_LEVEL": "ERROR",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "tests.webhooks.deliverer_process", str(LEASE_SECONDS)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


async def _ready(process: subprocess.Popen[bytes]) -> None:
    """Wait for the process's "ready" line (its imports done, its loops starting)."""
    assert process.stdout is not None
    line = await asyncio.to_thread(process.stdout.readline)
    assert line.strip() == b"ready", line


@pytest.mark.slow
async def test_every_event_arrives_at_least_once_across_kill_9(
    client: httpx.AsyncClient,
    app: FastAPI,
    database: TestDatabase,
    make_user: UserFactory,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    owner = await make_user()
    project = await create_project(app, owner)
    hook = await create_webhook(client, owner, receiver.url(), events=["task.updated"])
    rng = random.Random(11)
    process = _start(app, database, tmp_path)
    kills = 0
    produced = asyncio.Event()

    async def produce() -> None:
        began = time.monotonic()
        for first in range(0, EVENTS, PER_TRANSACTION):
            async with app.state.database.side_transaction() as session:
                for n in range(first, first + PER_TRANSACTION):
                    await record(
                        session,
                        type=EventType.TASK_UPDATED,
                        project_id=project,
                        actor_id=owner.id,
                        data={"id": n},
                        changed=["title"],
                    )
            await asyncio.sleep(rng.uniform(0, 0.02))
        print(f"produced in {time.monotonic() - began:.1f}s")
        produced.set()

    async def kill_and_restart() -> None:
        nonlocal process, kills
        while not produced.is_set() or kills < 5:
            await _ready(process)
            await asyncio.sleep(rng.uniform(0.05, 1.0))
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait)
            kills += 1
            process = _start(app, database, tmp_path)

    try:
        await asyncio.gather(produce(), kill_and_restart())
        started = time.monotonic()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            ids = {r.headers["webhook-id"] for r in receiver.at("/hook")}
            if len(ids) >= EVENTS:
                break
            await asyncio.sleep(0.25)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    print(f"kills={kills} drained in {time.monotonic() - started:.1f}s")
    received = receiver.at("/hook")
    verifier = standardwebhooks.Webhook(hook["secret"])
    seen: dict[str, int] = {}
    for one in received:
        payload = verifier.verify(one.body, one.headers)
        assert payload["id"] == one.headers["webhook-id"]
        seen[payload["id"]] = payload["data"]["id"]
    assert kills >= 5
    assert sorted(seen.values()) == list(range(EVENTS))  # every change, none missing
