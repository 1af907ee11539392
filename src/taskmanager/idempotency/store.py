"""Stored answers to ``Idempotency-Key`` requests, in the ``idempotency_records`` table.

The database is the system of record: a request's answer is inserted in the request's own
transaction (``IdempotencyStore.insert``), so it commits with the change it guards or not
at all — no crash, restart or Redis outage can separate them. Answers of requests that did
not write through the request's transaction (a final 4xx such as 404; a route that uses
only side transactions) are stored afterwards in a short transaction of their own
(``record_separately``): those changed nothing the retry could duplicate.

Concurrency: on PostgreSQL the request's transaction takes a transaction-scoped advisory lock
on its key (``pg_try_advisory_xact_lock``) as it opens, so a second request with the same key,
in any process, sees that the first is still running (409); the unique index on (caller,
route, key) backs it up.
On SQLite every write transaction holds the one write lock (``BEGIN IMMEDIATE``) from its
first write, so the check made just before the commit cannot race.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.db import Database, utcnow
from taskmanager.models.idempotency import IdempotencyRecord

RESPONSE_TTL = timedelta(hours=24)

log = structlog.get_logger("taskmanager.idempotency")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class Record:
    """A stored answer and the fingerprint of the request that produced it."""

    request_hash: str
    response: StoredResponse


@dataclass(frozen=True, slots=True)
class KeyScope:
    """Who sent the key and where: the same key means different things per caller and route."""

    caller: str
    route: str
    key: str

    def lock_id(self) -> int:
        """A signed 64-bit id for PostgreSQL's advisory locks."""
        raw = hashlib.sha256(f"{self.caller}\n{self.route}\n{self.key}".encode()).digest()
        return int.from_bytes(raw[:8], "big", signed=True)


def _same_key(scope: KeyScope) -> Any:
    return (
        (IdempotencyRecord.caller == scope.caller)
        & (IdempotencyRecord.route == scope.route)
        & (IdempotencyRecord.key == scope.key)
    )


_COLUMNS = (
    IdempotencyRecord.request_hash,
    IdempotencyRecord.status_code,
    IdempotencyRecord.response_headers,
    IdempotencyRecord.response_body,
)


def _record(row: Any) -> Record | None:
    if row is None or row[1] is None:
        return None
    headers = [(str(name), str(value)) for name, value in row[2] or []]
    return Record(row[0], StoredResponse(int(row[1]), headers, row[3] or b""))


class IdempotencyStore:
    """Finds, inserts and purges records; one per application."""

    def __init__(
        self, database: Database, *, purge_interval: timedelta, purge_batch: int = 1000
    ) -> None:
        self.database = database
        self.purge_interval = purge_interval
        self.purge_batch = purge_batch
        self._next_purge = 0.0  # monotonic seconds; the first request after start purges

    def _insert(self) -> Any:
        return pg_insert if self.database.dialect == "postgresql" else sqlite_insert

    async def find(self, scope: KeyScope) -> Record | None:
        """The live record for this key, read on a snapshot (no lock, no transaction)."""
        async with self.database.snapshot() as session:
            row = (
                await session.execute(
                    select(*_COLUMNS).where(
                        _same_key(scope), IdempotencyRecord.expires_at > utcnow()
                    )
                )
            ).one_or_none()
        return _record(row)

    @property
    def locks(self) -> bool:
        """Whether keys are locked (PostgreSQL). On SQLite the write transaction already holds
        the database's one write lock, so nothing else can be running."""
        return self.database.dialect == "postgresql"

    @staticmethod
    def lock_on(connection: Connection, scope: KeyScope) -> bool:
        """Lock the key until ``connection``'s transaction ends; False if another holds it.

        A transaction-scoped advisory lock (PostgreSQL). Synchronous: it is called from the
        ORM's ``after_begin`` event, inside the statement that opened the transaction.
        """
        acquired = connection.scalar(select(func.pg_try_advisory_xact_lock(scope.lock_id())))
        return bool(acquired)

    async def find_in(self, session: AsyncSession, scope: KeyScope) -> Record | None:
        """The live record for this key inside the request's transaction (takes SQLite's lock).

        An expired record for the key is deleted here, so the key can be used afresh.
        """
        await session.execute(
            delete(IdempotencyRecord).where(
                _same_key(scope), IdempotencyRecord.expires_at <= utcnow()
            )
        )
        row = (await session.execute(select(*_COLUMNS).where(_same_key(scope)))).one_or_none()
        return _record(row)

    async def insert(
        self, session: AsyncSession, scope: KeyScope, request_hash: str, response: StoredResponse
    ) -> None:
        """Add the record to ``session``'s transaction (a unique violation if one exists)."""
        now = utcnow()
        await session.execute(
            self._insert()(IdempotencyRecord).values(**_values(scope, request_hash, response, now))
        )

    async def record_separately(
        self, scope: KeyScope, request_hash: str, response: StoredResponse
    ) -> None:
        """Store an answer in a transaction of its own; an existing record wins."""
        now = utcnow()
        async with self.database.side_transaction() as session:
            await session.execute(
                delete(IdempotencyRecord).where(
                    _same_key(scope), IdempotencyRecord.expires_at <= now
                )
            )
            await session.execute(
                self._insert()(IdempotencyRecord)
                .values(**_values(scope, request_hash, response, now))
                .on_conflict_do_nothing(index_elements=["caller", "route", "key"])
            )

    async def maintain(self) -> None:
        """Purge expired records at most once per ``purge_interval``."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + self.purge_interval.total_seconds()
        await self.purge_expired()

    async def purge_expired(self) -> int:
        """Delete one bounded batch of expired records; return how many went."""
        async with self.database.side_transaction() as session:
            expired = (
                select(IdempotencyRecord.id)
                .where(IdempotencyRecord.expires_at <= utcnow())
                .limit(self.purge_batch)
                .scalar_subquery()
            )
            result = await session.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.id.in_(expired))
            )
        removed = int(getattr(result, "rowcount", 0) or 0)
        if removed:
            log.info("idempotency_records_purged", count=removed)
        return removed


# Where an earlier version kept records in Redis (some held credentials): removed at start.
LEGACY_REDIS_PREFIX = "taskmanager:idem:"


async def purge_legacy_redis_records(redis: Any, *, batch: int = 500) -> int:
    """Delete the records an earlier version kept in Redis; return how many went."""
    removed = 0
    async for key in redis.scan_iter(match=LEGACY_REDIS_PREFIX + "*", count=batch):
        removed += int(await redis.delete(key))
    return removed


def _values(
    scope: KeyScope, request_hash: str, response: StoredResponse, now: Any
) -> dict[str, Any]:
    return {
        "caller": scope.caller,
        "route": scope.route,
        "key": scope.key,
        "request_hash": request_hash,
        "status_code": response.status_code,
        "response_headers": [[name, value] for name, value in response.headers],
        "response_body": response.body,
        "created_at": now,
        "expires_at": now + RESPONSE_TTL,
    }
