"""A delivering process for the crash tests: ``python -m tests.webhooks.deliverer_process``.

It runs what ``taskmanager worker`` will run for webhooks, with settings from the
environment: a dispatcher round (``kit.outbox.sequence`` and the webhook fan-out hook in one
transaction, as the events branch's Dispatcher does) and the ``Deliverer`` loop. Argument:
the lease in seconds (short, so a test need not wait a minute after each ``kill -9``).
"""

from __future__ import annotations

import asyncio
import sys

from taskmanager.kit.config import load_settings
from taskmanager.kit.db import Database
from taskmanager.kit.outbox import sequence
from taskmanager.webhooks.delivery import Deliverer
from taskmanager.webhooks.fanout import enqueue_deliveries


async def main(lease_seconds: float) -> None:
    settings = load_settings()
    database = Database(settings)
    deliverer = Deliverer(
        database, settings, lease_seconds=lease_seconds, poll_seconds=0.05, batch=50
    )

    async def dispatch_forever() -> None:
        while True:
            try:
                async with database.side_transaction() as session:
                    events = await sequence(session)
                    queued = await enqueue_deliveries(session, events)
            except Exception as exc:  # a locked SQLite file, a restarting database
                print(f"dispatch failed: {exc}", file=sys.stderr, flush=True)
                await asyncio.sleep(0.1)
                continue
            if queued:
                deliverer.wake()
            if not events:
                await asyncio.sleep(0.05)

    print("ready", flush=True)
    await asyncio.gather(dispatch_forever(), deliverer.run())


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1])))
