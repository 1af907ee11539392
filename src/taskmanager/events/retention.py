"""Retention: events older than ``TASKMANAGER_EVENT_RETENTION_DAYS`` are deleted.

They can then no longer be replayed with ``?since=``. Deleted in bounded batches, so the
pruning never holds a long lock (SQLite's one writer is shared with requests).
"""

from __future__ import annotations

from datetime import timedelta

import anyio
import anyio.lowlevel
import structlog
from sqlalchemy import delete, select

from taskmanager.kit.config import Settings
from taskmanager.kit.db import Database, utcnow
from taskmanager.models.events import Event

log = structlog.get_logger("taskmanager.events")

PRUNE_BATCH = 5000
PRUNE_EVERY_SECONDS = 3600.0


async def prune(database: Database, settings: Settings) -> int:
    """Delete the published events older than the retention period; returns how many."""
    cutoff = utcnow() - timedelta(days=settings.event_retention_days)
    total = 0
    while True:
        async with database.side_transaction() as session:
            batch = (
                select(Event.id)
                .where(Event.occurred_at < cutoff, Event.seq.is_not(None))
                .order_by(Event.id)
                .limit(PRUNE_BATCH)
            )
            result = await session.execute(
                delete(Event)
                .where(Event.id.in_(batch))
                .execution_options(synchronize_session=False)
            )
        removed = int(getattr(result, "rowcount", 0) or 0)
        total += removed
        if removed < PRUNE_BATCH:
            return total
        await anyio.lowlevel.checkpoint()


async def prune_loop(database: Database, settings: Settings) -> None:
    """Prune at start and then hourly; a failure is logged and retried next time."""
    while True:
        try:
            removed = await prune(database, settings)
        except Exception as exc:
            log.warning("event_prune_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        else:
            if removed:
                log.info("events_pruned", count=removed)
        await anyio.sleep(PRUNE_EVERY_SECONDS)
