"""The orphan sweep: remove stored objects that no attachment row references.

Objects become orphans when a process dies between writing an upload's bytes and committing
its row, when a commit fails, or when removing a deleted attachment's object failed after
its commit. Only objects older than ``grace`` are considered, so an upload still in flight
(its object written, its row not yet committed; bounded by the request time budget) is
never taken. Unfinished writes (temporary files, S3 multipart uploads) older than ``grace``
are removed too.

``sweep`` runs one pass; ``sweep_loop`` runs it forever, for the background runner.
"""

from __future__ import annotations

from datetime import timedelta

import anyio
import structlog

from taskmanager.attachments import repository
from taskmanager.kit.db import Database
from taskmanager.kit.storage import Storage
from taskmanager.models.base import utcnow

log = structlog.get_logger("taskmanager.attachments.sweep")

# Longer than any request may take (TASKMANAGER_REQUEST_TIMEOUT_SECONDS is at most an hour).
DEFAULT_GRACE = timedelta(hours=2)
DEFAULT_INTERVAL_SECONDS = 3600.0
_BATCH = 500


async def sweep(database: Database, storage: Storage, *, grace: timedelta = DEFAULT_GRACE) -> int:
    """One pass: remove unreferenced objects older than ``grace``; how many were removed.

    Keys are checked against the ``attachments`` table in batches of 500, each in a read
    snapshot. Raises StorageUnavailable if the store fails (the loop logs and retries).
    """
    cutoff = utcnow() - grace
    await storage.abort_stale(cutoff)
    removed = 0
    candidates: list[str] = []
    async for info in storage.objects():
        if info.modified_at < cutoff:
            candidates.append(info.key)
        if len(candidates) >= _BATCH:
            removed += await _remove_unreferenced(database, storage, candidates)
            candidates = []
    if candidates:
        removed += await _remove_unreferenced(database, storage, candidates)
    if removed:
        log.info("attachment_orphans_removed", count=removed)
    return removed


async def _remove_unreferenced(database: Database, storage: Storage, keys: list[str]) -> int:
    async with database.snapshot() as session:
        referenced = await repository.referenced_keys(session, keys)
    orphans = [key for key in keys if key not in referenced]
    if orphans:
        await storage.delete(orphans)
    return len(orphans)


async def sweep_loop(
    database: Database,
    storage: Storage,
    *,
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    grace: timedelta = DEFAULT_GRACE,
) -> None:
    """Sweep every ``interval_seconds`` until cancelled; a failed pass is logged, not fatal."""
    while True:
        try:
            await sweep(database, storage, grace=grace)
        except Exception as exc:
            log.warning("attachment_sweep_failed", error=f"{type(exc).__name__}: {exc}"[:200])
        await anyio.sleep(interval_seconds)
