"""The dispatcher: numbers committed events (``kit.outbox.sequence``) and rings the bells.

One round: in one side transaction, ``sequence()`` numbers up to a batch of committed,
unnumbered events and every ``on_sequenced`` hook runs with them (the webhook fan-out: it
commits with the numbering, so each event fans out exactly once whichever process numbered
it); the transaction commits; then the doorbells ring (this process's hubs, and every
process's through Redis when configured). It runs in every ``serve`` process and in
``taskmanager worker``; several at once are safe (``sequence`` serialises them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.events.doorbell import CHANNEL, database_key, on_commit, ring_local
from taskmanager.kit.availability import Backoff
from taskmanager.kit.config import Settings
from taskmanager.kit.db import Database
from taskmanager.kit.outbox import sequence
from taskmanager.models.events import Event

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger("taskmanager.events")

SequencedHook = Callable[[AsyncSession, Sequence[Event]], Awaitable[None]]
"""``hook(session, events)``: runs in the numbering transaction, ``events`` in ``seq`` order.
Raising rolls the round back (the events stay unnumbered and are retried next round)."""

BATCH = 500


class Dispatcher:
    """``Dispatcher(database, settings, on_sequenced=(hook, ...), redis=None)``; ``await run()``.

    ``redis``: the client to publish on (``CHANNEL``); None publishes in-process only.
    """

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        on_sequenced: Sequence[SequencedHook] = (),
        redis: Redis | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.hooks = tuple(on_sequenced)
        self.redis = redis
        self.key = database_key(database.write_engine.sync_engine)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for events now (a session that recorded some committed)."""
        self._wake.set()

    async def _pending(self) -> bool:
        # A read first: an idle poll must not take SQLite's one writer.
        async with self.database.snapshot() as session:
            found = await session.scalar(select(Event.id).where(Event.seq.is_(None)).limit(1))
        return found is not None

    async def step(self) -> list[Event]:
        """One round: number a batch, run the hooks, commit, ring. Returns the batch."""
        if not await self._pending():
            return []
        async with self.database.side_transaction() as session:
            events = await sequence(session, batch=BATCH)
            if events:
                for hook in self.hooks:
                    await hook(session, events)
        if events:
            ring_local(self.key)
            await self._publish(events[-1].seq)
        return events

    async def _publish(self, seq: int | None) -> None:
        if self.redis is None:
            return
        try:
            with anyio.fail_after(max(1.0, self.settings.redis_timeout_seconds * 4)):
                await self.redis.publish(CHANNEL, str(seq))
        except Exception as exc:
            # Other processes find the events on their next poll.
            log.warning("event_publish_failed", error=f"{type(exc).__name__}: {exc}"[:200])

    async def run(self) -> None:
        """Run rounds until cancelled: at once when woken, else every poll interval.

        A failing round (database down) is logged and retried with a doubling back-off; it
        never ends the loop.
        """
        undo = on_commit(self.key, self.wake)
        backoff = Backoff(self.settings.outage_backoff_seconds)
        try:
            while True:
                self._wake.clear()  # a ring during the round below makes the wait return
                try:
                    events = await self.step()
                except Exception as exc:
                    await backoff.failed("dispatch_failed", exc)
                    continue
                backoff.succeeded()
                if len(events) == BATCH:
                    continue  # more may be waiting
                with anyio.move_on_after(self.settings.event_poll_seconds):
                    await self._wake.wait()
        finally:
            undo()
