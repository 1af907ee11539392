"""``taskmanager worker`` numbers events without serving HTTP and stops cleanly on SIGTERM;
uvicorn's WebSocket handshake lines never show the query's token."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from taskmanager.kit.config import load_settings
from taskmanager.kit.db import Database
from taskmanager.kit.logging import configure_logging
from taskmanager.kit.outbox import EventType, record
from taskmanager.models.events import Event
from tests.serve_support import TASKMANAGER, die_with_parent

SECRET = "events-worker-secret-key-0123456789abcdef"


async def test_the_worker_numbers_events_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMANAGER_")}
    env.update(
        TASKMANAGER_DATA_DIR=str(data_dir),
        TASKMANAGER_SECRET_KEY=SECRET,
        TASKMANAGER_LOG_LEVEL="WARNING",
        TASKMANAGER_EVENT_POLL_SECONDS="0.2",
    )
    worker = subprocess.Popen(
        [TASKMANAGER, "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    database: Database | None = None
    try:
        deadline = time.monotonic() + 60
        while not (data_dir / "taskmanager.db").exists():  # migrated by the worker
            assert worker.poll() is None, worker.stdout.read() if worker.stdout else b""
            assert time.monotonic() < deadline, "the worker did not create the database"
            await asyncio.sleep(0.1)
        settings = load_settings(data_dir=data_dir, secret_key=SECRET, env="test")
        database = Database(settings)
        seq: int | None = None
        while seq is None:
            try:
                async with database.side_transaction() as session:
                    if not (await session.scalars(select(Event.id))).first():
                        await record(
                            session,
                            type=EventType.PROJECT_DELETED,
                            project_id=1,
                            actor_id=None,
                            data={"id": 1},
                        )
                async with database.snapshot() as session:
                    seq = await session.scalar(select(Event.seq))
            except Exception:  # the worker may still be migrating
                assert time.monotonic() < deadline, "the worker did not number the event"
            await asyncio.sleep(0.1)
        assert seq == 1
        worker.send_signal(signal.SIGTERM)
        # Waited for from a thread, so this event loop goes on while the worker drains.
        assert await asyncio.to_thread(worker.wait, 60) == 0
    finally:
        if database is not None:
            await database.dispose()
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_uvicorn_websocket_lines_redact_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(load_settings(data_dir=tmp_path, env="test", log_level="INFO"))
    logging.getLogger("uvicorn.error").info(
        '%s - "WebSocket %s" [accepted]',
        "127.0.0.1:5000",
        "/api/v1/ws?token=eyJ.secret.sig&project_id=3",
    )
    line = capsys.readouterr().out
    assert "eyJ.secret.sig" not in line
    assert "/api/v1/ws?token=[REDACTED]" in line
