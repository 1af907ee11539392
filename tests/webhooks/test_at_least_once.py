"""At-least-once across crashes (issue 11): 1,000 changes while the real ``taskmanager worker``
is killed with SIGKILL in the middle of delivering and another is started; the receiver
gets every event, and every signature verifies with the ``standardwebhooks`` library.

The worker is the production command, configured only by its environment
(``TASKMANAGER_DATABASE_URL`` and the rest), with the production lease (``LEASE_SECONDS``):
what a killed worker had claimed is sent again by a later one once that lease runs out.
The receiver is a real HTTP server on loopback that records each request before answering
it 0.2 s later, so a kill lands while attempts are in flight: each kill is made once the
current worker holds claims, and is shown afterwards to have left claimed attempts unrecorded.
The events are written the way services write them (``kit.outbox.record``, in the test's
own transactions); the worker numbers, fans out and delivers them.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
from fastapi import FastAPI
from sqlalchemy import func, select

from taskmanager.kit.db import utcnow
from taskmanager.kit.outbox import EventType, record
from taskmanager.models.webhooks import DeliveryStatus, WebhookDelivery
from taskmanager.webhooks.delivery import LEASE_SECONDS
from tests.conftest import TestDatabase, UserFactory
from tests.factories import create_project
from tests.serve_support import TASKMANAGER, command_env, die_with_parent
from tests.webhooks.support import Answer, Receiver, create_webhook, running_receiver

EVENTS = 1000
PER_TRANSACTION = 10
KILLS = 5
# How long the receiver holds each request before answering: the window a kill lands in.
ANSWER_DELAY = 0.2
# Bounds on waits for what must happen, so a broken worker fails the test instead of hanging
# it; never a statement about speed (the last one includes the lease running out).
CLAIM_TIMEOUT = 120.0
DRAIN_TIMEOUT = LEASE_SECONDS + 240.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        r.answers["/hook"] = Answer(delay=ANSWER_DELAY)
        yield r


class Workers:
    """``taskmanager worker`` processes, one at a time, each logging to a file of its own."""

    def __init__(self, settings: dict[str, str], directory: Path) -> None:
        self.settings = settings
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = utcnow()
        self.count = 0

    def start(self) -> None:
        self.count += 1
        self.started_at = utcnow()
        log = (self.directory / f"worker-{self.count}.log").open("wb")
        self.process = subprocess.Popen(
            [TASKMANAGER, "worker"],
            env=command_env(self.settings),
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        log.close()  # the child holds its own descriptor

    def output(self) -> str:
        return (self.directory / f"worker-{self.count}.log").read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """``kill -9``: no shutdown, no recording of what is in flight."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=60) == -signal.SIGKILL

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def worker_settings(app: FastAPI, database: TestDatabase, data_dir: Path) -> dict[str, str]:
    """What an operator sets for a worker: the database, the secret (webhook secrets are
    encrypted under a key derived from it), a data dir. Not the production profile only
    because it refuses private targets, and the receiver is on loopback."""
    return {
        "TASKMANAGER_ENV": "test",
        "TASKMANAGER_DATABASE_URL": database.url,
        "TASKMANAGER_SECRET_KEY": app.state.settings.secret_key,
        "TASKMANAGER_DATA_DIR": str(data_dir),
        "TASKMANAGER_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "TASKMANAGER_LOG_LEVEL": "INFO",
    }


async def claimed_since(app: FastAPI, started_at: datetime) -> int:
    """Attempts claimed (leased) and not yet recorded by a worker started at ``started_at``
    or later: its lease runs out after ``started_at + LEASE_SECONDS``, every earlier
    worker's before."""
    threshold = started_at + timedelta(seconds=LEASE_SECONDS)
    async with app.state.database.snapshot() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.lease_expires_at > threshold,
            )
        )
    return int(count or 0)


@pytest.mark.slow
@pytest.mark.timeout(CLAIM_TIMEOUT * KILLS + DRAIN_TIMEOUT + 120)
async def test_every_event_arrives_at_least_once_across_kill_9_of_the_worker(
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
    verifier = standardwebhooks.Webhook(hook["secret"])
    rng = random.Random(11)
    workers = Workers(worker_settings(app, database, tmp_path / "data"), tmp_path)
    killed = [asyncio.Event() for _ in range(KILLS)]
    stranded: list[int] = []  # per kill: attempts the killed worker had claimed, unrecorded
    delivered: dict[str, int] = {}  # webhook-id -> the change's number
    arrivals: dict[str, int] = {}  # webhook-id -> requests received with it
    verified = 0

    def verify_new() -> None:
        # As they arrive: the signature's timestamp must be recent when verified.
        nonlocal verified
        received = receiver.at("/hook")
        for one in received[verified:]:
            payload: dict[str, Any] = verifier.verify(one.body, one.headers)
            assert payload["id"] == one.headers["webhook-id"]
            delivered[payload["id"]] = payload["data"]["id"]
            arrivals[payload["id"]] = arrivals.get(payload["id"], 0) + 1
        verified = len(received)

    async def produce() -> None:
        transactions = EVENTS // PER_TRANSACTION
        # Produce in KILLS + 1 parts, each after the previous kill, so every worker that is
        # killed has fresh work in hand.
        boundaries = [(k + 1) * transactions // (KILLS + 1) for k in range(KILLS)]
        for index in range(transactions):
            async with app.state.database.side_transaction() as session:
                for n in range(index * PER_TRANSACTION, (index + 1) * PER_TRANSACTION):
                    await record(
                        session,
                        type=EventType.TASK_UPDATED,
                        project_id=project,
                        actor_id=owner.id,
                        data={"id": n},
                        changed=["title"],
                    )
            await asyncio.sleep(rng.uniform(0, 0.02))
            if index + 1 in boundaries:
                await killed[boundaries.index(index + 1)].wait()

    async def kill_mid_delivery() -> None:
        for kill in range(KILLS):
            deadline = time.monotonic() + CLAIM_TIMEOUT
            while await claimed_since(app, workers.started_at) == 0:
                assert workers.process is not None
                assert workers.process.poll() is None, workers.output()
                assert time.monotonic() < deadline, f"no claims: {workers.output()}"
                verify_new()
                await asyncio.sleep(0.02)
            # Within the receiver's answer delay: the claimed attempts are in flight.
            await asyncio.sleep(rng.uniform(0, ANSWER_DELAY / 2))
            workers.kill()
            stranded.append(await claimed_since(app, workers.started_at))
            killed[kill].set()
            workers.start()

    workers.start()
    try:
        await asyncio.gather(produce(), kill_mid_delivery())
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while len(delivered) < EVENTS:
            assert workers.process is not None
            assert workers.process.poll() is None, workers.output()
            assert time.monotonic() < deadline, f"{len(delivered)} of {EVENTS} arrived"
            await asyncio.sleep(0.25)
            verify_new()
        assert workers.process is not None
        workers.process.send_signal(signal.SIGTERM)
        # From a thread: the event loop (and whatever the test app's tasks hold on it, such
        # as SQLite's one writer) must go on while the worker drains.
        code = await asyncio.to_thread(workers.process.wait, 60)
        assert code == 0, workers.output()
    finally:
        workers.close()

    repeated = sum(1 for n in arrivals.values() if n > 1)
    print(f"workers={workers.count} stranded per kill={stranded} repeated={repeated}")
    assert len(stranded) == KILLS
    assert all(count > 0 for count in stranded), stranded  # every kill was mid-delivery
    assert sorted(delivered.values()) == list(range(EVENTS))  # every change, none missing
