"""Where ``Idempotency-Key`` claims and stored responses live: the database or Redis.

A claim is taken atomically before the request runs (so two concurrent first requests
cannot both run) and carries a short *lease*: if the process dies mid-request the claim
simply expires and the key becomes usable again, instead of answering 409 for a day.
Once a final answer exists, the claim becomes the stored response for ``RESPONSE_TTL``.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from taskmanager.kit.db import Database, utcnow
from taskmanager.kit.security import digest
from taskmanager.models.idempotency import IdempotencyRecord

RESPONSE_TTL = timedelta(hours=24)
REDIS_PREFIX = "taskmanager:idem:"
# Claims are re-tried this often when the row vanishes between "insert failed" and "read".
_CLAIM_ATTEMPTS = 3

log = structlog.get_logger("taskmanager.idempotency")


class StoreUnavailable(Exception):
    """The store cannot be reached; the caller decides whether to fail open."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class Claimed:
    """This request owns the key; ``token`` identifies the claim for complete/release."""

    token: str


@dataclass(frozen=True, slots=True)
class InProgress:
    """Another request with this key is still running."""


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The key was used with a different request."""


@dataclass(frozen=True, slots=True)
class Replay:
    response: StoredResponse


ClaimOutcome = Claimed | InProgress | Mismatch | Replay


@dataclass(frozen=True, slots=True)
class KeyScope:
    """Who sent the key and where: the same key means different things per caller and route."""

    caller: str
    route: str
    key: str


class IdempotencyStore(Protocol):
    async def claim(self, scope: KeyScope, request_hash: str, lease: timedelta) -> ClaimOutcome:
        """Atomically take the key, or report what already holds it."""
        ...

    async def complete(self, scope: KeyScope, token: str, response: StoredResponse) -> None:
        """Turn our claim into the stored response (no-op if the claim is no longer ours)."""
        ...

    async def release(self, scope: KeyScope, token: str) -> None:
        """Drop our claim so a retry can run (no-op if the claim is no longer ours)."""
        ...

    async def maintain(self) -> None:
        """Housekeeping after a request (e.g. purge expired rows); must be cheap when idle."""
        ...


def _outcome(stored_hash: str, request_hash: str, response: StoredResponse | None) -> ClaimOutcome:
    # A different request under the same key is the client's mistake whether or not the
    # first one has finished, so that answer comes first.
    if stored_hash != request_hash:
        return Mismatch()
    if response is None:
        return InProgress()
    return Replay(response)


class DatabaseStore:
    """Records in ``idempotency_records``; each step is its own short write transaction.

    No transaction is held while the request runs: on SQLite there is one writer
    connection, which the request itself needs.
    """

    def __init__(
        self, database: Database, *, purge_interval: timedelta, purge_batch: int = 1000
    ) -> None:
        self.database = database
        self.purge_interval = purge_interval
        self.purge_batch = purge_batch
        self._next_purge = 0.0  # monotonic seconds; the first request after start purges

    def _insert(self) -> Any:
        return pg_insert if self.database.dialect == "postgresql" else sqlite_insert

    @staticmethod
    def _same_key(scope: KeyScope) -> Any:
        return (
            (IdempotencyRecord.caller == scope.caller)
            & (IdempotencyRecord.route == scope.route)
            & (IdempotencyRecord.key == scope.key)
        )

    async def claim(self, scope: KeyScope, request_hash: str, lease: timedelta) -> ClaimOutcome:
        for _ in range(_CLAIM_ATTEMPTS):
            now = utcnow()
            async with self.database.side_transaction() as session:
                # An expired record (an answer past 24 h, or a claim abandoned past its lease
                # by a crashed process) frees the key.
                await session.execute(
                    delete(IdempotencyRecord).where(
                        self._same_key(scope), IdempotencyRecord.expires_at <= now
                    )
                )
                # ON CONFLICT DO NOTHING rather than catching IntegrityError: PostgreSQL would
                # abort the transaction, and this way the winner's row is read in the same one.
                statement = (
                    self._insert()(IdempotencyRecord)
                    .values(
                        caller=scope.caller,
                        route=scope.route,
                        key=scope.key,
                        request_hash=request_hash,
                        created_at=now,
                        expires_at=now + lease,
                    )
                    .on_conflict_do_nothing(index_elements=["caller", "route", "key"])
                    .returning(IdempotencyRecord.id)
                )
                inserted = (await session.execute(statement)).scalar_one_or_none()
                existing = None
                if inserted is None:
                    existing = (
                        await session.execute(
                            select(
                                IdempotencyRecord.request_hash,
                                IdempotencyRecord.status_code,
                                IdempotencyRecord.response_headers,
                                IdempotencyRecord.response_body,
                            ).where(self._same_key(scope))
                        )
                    ).one_or_none()
            if inserted is not None:
                # id + creation time: SQLite may reuse the id of a deleted row, not both.
                return Claimed(f"{inserted}|{now.isoformat()}")
            if existing is None:
                continue  # released or purged between our insert and our read
            stored_hash, status_code, headers, body = existing
            response = None
            if status_code is not None:
                response = StoredResponse(
                    status_code,
                    [(str(name), str(value)) for name, value in headers or []],
                    body or b"",
                )
            return _outcome(stored_hash, request_hash, response)
        return InProgress()

    @staticmethod
    def _our_claim(token: str) -> Any:
        """Still our unfinished claim (not one that expired and was taken over)."""
        record_id, _, created = token.partition("|")
        return (
            (IdempotencyRecord.id == int(record_id))
            & (IdempotencyRecord.created_at == datetime.fromisoformat(created))
            & IdempotencyRecord.status_code.is_(None)
        )

    async def complete(self, scope: KeyScope, token: str, response: StoredResponse) -> None:
        async with self.database.side_transaction() as session:
            await session.execute(
                update(IdempotencyRecord)
                .where(self._our_claim(token))
                .values(
                    status_code=response.status_code,
                    response_headers=[[name, value] for name, value in response.headers],
                    response_body=response.body,
                    expires_at=utcnow() + RESPONSE_TTL,
                )
            )

    async def release(self, scope: KeyScope, token: str) -> None:
        async with self.database.side_transaction() as session:
            await session.execute(delete(IdempotencyRecord).where(self._our_claim(token)))

    async def maintain(self) -> None:
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


# Compare-and-set on the exact claim value, so a late finisher never overwrites (or deletes)
# a claim that expired and was taken by another request.
_COMPLETE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return nil
"""
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisStore:
    """Claims with ``SET NX EX``; expiry is Redis's own TTL. Redis errors → StoreUnavailable."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    @staticmethod
    def redis_key(scope: KeyScope) -> str:
        # Hashed: the key is client input and the route may be long.
        return REDIS_PREFIX + digest(f"{scope.caller}\n{scope.route}\n{scope.key}")

    async def claim(self, scope: KeyScope, request_hash: str, lease: timedelta) -> ClaimOutcome:
        key = self.redis_key(scope)
        try:
            for _ in range(_CLAIM_ATTEMPTS):
                # The claim's exact value is its token: complete/release compare against it.
                value = orjson.dumps(
                    {"state": "pending", "hash": request_hash, "nonce": secrets.token_hex(16)}
                ).decode()
                if await self.redis.set(key, value, nx=True, ex=_seconds(lease)):
                    return Claimed(value)
                raw = await self.redis.get(key)
                if raw is None:
                    continue  # expired or released in between
                record = orjson.loads(raw)
                response = None
                if record.get("state") == "done":
                    response = StoredResponse(
                        int(record["status"]),
                        [(str(name), str(val)) for name, val in record["headers"]],
                        base64.b64decode(record["body"]),
                    )
                return _outcome(str(record.get("hash")), request_hash, response)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(str(exc)) from exc
        return InProgress()

    async def complete(self, scope: KeyScope, token: str, response: StoredResponse) -> None:
        request_hash = orjson.loads(token)["hash"]
        record = orjson.dumps(
            {
                "state": "done",
                "hash": request_hash,
                "status": response.status_code,
                "headers": response.headers,
                "body": base64.b64encode(response.body).decode(),
            }
        )
        try:
            await self.redis.eval(
                _COMPLETE_SCRIPT,
                1,
                self.redis_key(scope),
                token,
                record,
                _seconds(RESPONSE_TTL),
            )
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def release(self, scope: KeyScope, token: str) -> None:
        try:
            await self.redis.eval(_RELEASE_SCRIPT, 1, self.redis_key(scope), token)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def maintain(self) -> None:
        return None  # Redis expires keys itself


def _seconds(delta: timedelta) -> int:
    return max(1, int(delta.total_seconds()))
