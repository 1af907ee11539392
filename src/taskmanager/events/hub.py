"""The per-process hub: reads newly published events once and fans them out to this
process's WebSocket subscribers.

The hub reads the outbox by ``seq`` after its cursor whenever a doorbell rings
(``events.doorbell``) and at least every ``TASKMANAGER_EVENT_POLL_SECONDS``; each event is
read once per process, rendered once, and offered to every subscriber whose filter accepts
it (``Subscriber.wants``: in the event's audience or an admin, and the project asked for).
Offering never waits: a subscriber whose bounded queue is full is marked overflowed and its
connection is closed (4408), so one slow client never slows the others.

When a transaction that ended a user's credentials commits (``doorbell.on_credentials``, in
this process or, through Redis, in another), that user's subscribers are held — nothing more
is sent to them — and checked again at once (``Subscriber.hold``); the connection closes
(4401/4403) or resumes.

Because the reader only ever moves forward by ``seq`` and ``sequence`` guarantees that a
reader seeing ``seq = n`` sees every row below ``n``, a subscriber gets every event after
it registered, once, in order — however many dispatchers numbered them or rang.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import orjson
import structlog
from sqlalchemy import func, select

from taskmanager.events.doorbell import (
    CHANNEL,
    CREDENTIALS_CHANNEL,
    database_key,
    on_credentials,
    on_sequenced,
)
from taskmanager.events.schemas import event_json
from taskmanager.kit.availability import Backoff
from taskmanager.kit.config import Settings
from taskmanager.kit.db import Database
from taskmanager.models.events import Event

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = structlog.get_logger("taskmanager.events")

READ_BATCH = 500
_DRAIN_CHECK_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class Published:
    """One event as every subscriber receives it: rendered once per process."""

    seq: int
    project_id: int | None
    audience: frozenset[int]
    text: str

    @classmethod
    def of(cls, event: Event) -> Published:
        assert event.seq is not None
        return cls(
            seq=event.seq,
            project_id=event.project_id,
            audience=frozenset(event.audience or ()),
            text=orjson.dumps(event_json(event)).decode(),
        )


class Subscriber:
    """One WebSocket connection's filter and bounded queue."""

    def __init__(
        self, *, user_id: int, is_admin: bool, project_id: int | None, queue_size: int
    ) -> None:
        self.user_id = user_id
        self.is_admin = is_admin
        self.project_id = project_id
        self.queue: asyncio.Queue[Published] = asyncio.Queue(queue_size)
        self.overflowed = asyncio.Event()
        # Set while the connection may be sent to; cleared by ``hold`` until the credential
        # has been checked again (``recheck_now`` asks the connection for that check).
        self.cleared = asyncio.Event()
        self.cleared.set()
        self.recheck_now = asyncio.Event()

    def hold(self) -> None:
        """Send nothing more until the connection's credential is checked again."""
        self.cleared.clear()
        self.recheck_now.set()

    def wants(self, item: Published) -> bool:
        """In the event's audience (a member when it happened) or an admin; the project asked."""
        if self.project_id is not None and item.project_id != self.project_id:
            return False
        return self.is_admin or self.user_id in item.audience

    def offer(self, item: Published) -> None:
        if self.overflowed.is_set() or not self.wants(item):
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed.set()


async def read_after(
    database: Database, after: int, *, project_id: int | None = None, limit: int = READ_BATCH
) -> list[Event]:
    """Up to ``limit`` published events with ``seq > after``, in ``seq`` order."""
    statement = select(Event).where(Event.seq > after)
    if project_id is not None:
        statement = statement.where(Event.project_id == project_id)
    async with database.snapshot() as session:
        rows = await session.scalars(statement.order_by(Event.seq).limit(limit))
        return list(rows.all())


async def newest_seq(database: Database) -> int:
    """The ``seq`` of the newest published event; 0 while there is none."""
    async with database.snapshot() as session:
        return int((await session.scalar(select(func.max(Event.seq)))) or 0)


class Hub:
    """This process's subscribers. ``await run()`` in the server's lifespan.

    ``draining``: tells when the server started draining; every connection is then closed
    with 1001 (going away) and new ones are refused the same way. ``redis``: the client to
    publish ended credentials on (``CREDENTIALS_CHANNEL``) for the other processes.
    """

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        draining: Callable[[], bool] = lambda: False,
        redis: Redis | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.draining = draining
        self.redis = redis
        self._ended: set[int] = set()  # user ids to publish on CREDENTIALS_CHANNEL
        self._publish = asyncio.Event()
        self.key = database_key(database.write_engine.sync_engine)
        self.subscribers: set[Subscriber] = set()
        self.connections: Counter[int] = Counter()
        self.going_away = asyncio.Event()
        self._cursor: int | None = None
        self._wake = asyncio.Event()

    # ---- connections ----------------------------------------------------------------------

    def admit(self, user_id: int) -> bool:
        """Count a new connection of ``user_id``; False over the per-user limit."""
        if self.connections[user_id] >= self.settings.ws_max_connections_per_user:
            return False
        self.connections[user_id] += 1
        return True

    def release(self, user_id: int) -> None:
        self.connections[user_id] -= 1
        if self.connections[user_id] <= 0:
            del self.connections[user_id]

    async def subscribe(self, subscriber: Subscriber) -> None:
        """From now on, every event published after this moment is offered to ``subscriber``."""
        if self._cursor is None:
            top = await newest_seq(self.database)
            if self._cursor is None:  # another subscribe may have set it meanwhile
                self._cursor = top
        self.subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers:
            # Nobody listens: the next subscriber starts from the then newest event.
            self._cursor = None

    def wake(self) -> None:
        self._wake.set()

    def recheck(self, user_ids: Iterable[int]) -> None:
        """Hold and check again every connection of these users (their credentials ended)."""
        users = frozenset(user_ids)
        for subscriber in tuple(self.subscribers):
            if subscriber.user_id in users:
                subscriber.hold()

    def _credentials_ended(self, user_ids: frozenset[int]) -> None:
        """A transaction of this process ended these users' credentials: check here at
        once, and tell the other processes."""
        self.recheck(user_ids)
        if self.redis is not None:
            self._ended |= user_ids
            self._publish.set()

    async def _publish_ended(self) -> None:
        """Publish ended credentials for the other processes. Never raises: a lost message
        costs them time only (``TASKMANAGER_WS_RECHECK_SECONDS``)."""
        assert self.redis is not None
        while True:
            await self._publish.wait()
            self._publish.clear()
            users, self._ended = self._ended, set()
            try:
                with anyio.fail_after(max(1.0, self.settings.redis_timeout_seconds * 4)):
                    await self.redis.publish(
                        CREDENTIALS_CHANNEL, ",".join(str(user) for user in sorted(users))
                    )
            except Exception as exc:
                log.warning(
                    "credentials_publish_failed", error=f"{type(exc).__name__}: {exc}"[:200]
                )

    # ---- the loop -------------------------------------------------------------------------

    async def read_new(self) -> int:
        """Read what was published since the last read and offer it; returns how many."""
        total = 0
        # Never more at once than a queue holds: a client that keeps up empties its queue
        # between reads, so only one that does not keep up can overflow.
        batch = min(READ_BATCH, self.settings.ws_queue_size)
        while self.subscribers and self._cursor is not None:
            events = await read_after(self.database, self._cursor, limit=batch)
            self._fan_out(events)
            total += len(events)
            if len(events) < batch:
                break
            await anyio.lowlevel.checkpoint()  # let the senders drain between batches
        return total

    def _fan_out(self, events: Sequence[Event]) -> None:
        for event in events:
            assert event.seq is not None
            if self._cursor is not None and event.seq <= self._cursor:
                continue  # a read that raced with the last subscriber leaving and a new one
            item = Published.of(event)
            self._cursor = item.seq
            for subscriber in tuple(self.subscribers):
                subscriber.offer(item)

    async def run(self) -> None:
        """Read on every ring and poll; listen on Redis when configured; watch for drain."""
        undo = on_sequenced(self.key, self.wake)
        undo_credentials = on_credentials(self.key, self._credentials_ended)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._watch_drain)
                if self.settings.redis_url:
                    tasks.start_soon(self._listen)
                if self.redis is not None:
                    tasks.start_soon(self._publish_ended)
                await self._read_loop()
        finally:
            undo()
            undo_credentials()
            self.going_away.set()

    async def _read_loop(self) -> None:
        backoff = Backoff(self.settings.outage_backoff_seconds)
        while True:
            self._wake.clear()
            try:
                await self.read_new()
            except Exception as exc:
                await backoff.failed("event_read_failed", exc)
                continue
            backoff.succeeded()
            with anyio.move_on_after(self.settings.event_poll_seconds):
                await self._wake.wait()

    async def _watch_drain(self) -> None:
        # Polled: the server's drain flag is a plain attribute set from a signal handler.
        while not self.draining():  # noqa: ASYNC110
            await anyio.sleep(_DRAIN_CHECK_SECONDS)
        self.going_away.set()

    async def _listen(self) -> None:
        """Wake on every event message, recheck on every credentials message (another
        process's, or this one's own again: harmless); reconnect with back-off. Never
        raises."""
        from redis.asyncio import Redis  # only with Redis configured (start-up cost)

        backoff = Backoff(self.settings.outage_backoff_seconds)
        timeout = max(1.0, self.settings.redis_timeout_seconds * 4)
        while True:
            client = Redis.from_url(
                self.settings.redis_url,
                socket_connect_timeout=timeout,
                socket_timeout=max(5.0, self.settings.event_poll_seconds * 2),
                health_check_interval=max(5, int(self.settings.event_poll_seconds)),
            )
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL, CREDENTIALS_CHANNEL)
                    backoff.succeeded()
                    # Events published while we were not subscribed: read them now.
                    self.wake()
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True,
                            timeout=self.settings.event_poll_seconds,
                        )
                        if message is None:
                            continue
                        if _text(message.get("channel")) == CREDENTIALS_CHANNEL:
                            self.recheck(_user_ids(_text(message.get("data"))))
                        else:
                            self.wake()
            except Exception as exc:
                await backoff.failed("event_listen_failed", exc)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    await client.aclose()


def _text(value: object) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _user_ids(data: str) -> list[int]:
    """``"1,2,3"`` as published by ``Hub._publish_ended``; anything else is skipped."""
    return [int(part) for part in data.split(",") if part.isascii() and part.isdigit()]
