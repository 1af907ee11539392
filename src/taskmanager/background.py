"""The background loops: started in ``taskmanager serve``'s lifespan and by ``taskmanager worker``.

``LOOPS`` is the list of loop factories (each ``loop(context) -> awaitable``, running until
cancelled); ``ON_SEQUENCED`` the hooks every dispatcher round runs in its numbering
transaction (``events.dispatcher.SequencedHook``). Another domain plugs in with one line in
either tuple. Every loop runs supervised: an unexpected error is logged and the loop is
restarted after a pause; it never takes the server down.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.events.dispatcher import Dispatcher, SequencedHook
from taskmanager.events.hub import Hub
from taskmanager.events.retention import prune_loop
from taskmanager.kit.config import Settings
from taskmanager.kit.db import Database
from taskmanager.models.events import Event
from taskmanager.webhooks.delivery import Deliverer
from taskmanager.webhooks.fanout import enqueue_deliveries

if TYPE_CHECKING:
    # Only the type: the client is made by ``main.redis_client`` when Redis is configured.
    from redis.asyncio import Redis

log = structlog.get_logger("taskmanager.background")

_RESTART_PAUSE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Context:
    """What a loop gets: the database, the settings and the shared Redis client (or None)."""

    database: Database
    settings: Settings
    redis: Redis | None


Loop = Callable[[Context], Awaitable[None]]


async def _webhook_fan_out(session: AsyncSession, events: Sequence[Event]) -> None:
    await enqueue_deliveries(session, events)


# Run in the transaction that numbers events, with the numbered batch (webhook fan-out).
ON_SEQUENCED: tuple[SequencedHook, ...] = (_webhook_fan_out,)


def dispatch(context: Context) -> Awaitable[None]:
    """Number committed events, run ``ON_SEQUENCED``, ring the doorbells."""
    dispatcher = Dispatcher(
        context.database, context.settings, on_sequenced=ON_SEQUENCED, redis=context.redis
    )
    return dispatcher.run()


def prune_events(context: Context) -> Awaitable[None]:
    """Delete events past ``TASKMANAGER_EVENT_RETENTION_DAYS``, hourly."""
    return prune_loop(context.database, context.settings)


def deliver_webhooks(context: Context) -> Awaitable[None]:
    """Send due webhook deliveries (leased, so any number of processes may run this)."""
    return Deliverer(context.database, context.settings).run()


LOOPS: tuple[Loop, ...] = (dispatch, prune_events, deliver_webhooks)


async def _supervised(loop: Loop, context: Context) -> None:
    name = getattr(loop, "__name__", repr(loop))
    while True:
        try:
            await loop(context)
        except Exception as exc:
            log.error("background_loop_failed", loop=name, exc_info=exc)
        await anyio.sleep(_RESTART_PAUSE_SECONDS)


@asynccontextmanager
async def running(
    database: Database,
    settings: Settings,
    *,
    redis: Redis | None = None,
    hub: Hub | None = None,
    loops: bool = True,
) -> AsyncIterator[None]:
    """Run every loop of ``LOOPS`` (unless ``loops`` is false) and the hub, when serving,
    until the block exits."""
    context = Context(database, settings, redis)
    async with anyio.create_task_group() as tasks:
        for loop in LOOPS if loops else ():
            tasks.start_soon(_supervised, loop, context)
        if hub is not None:
            tasks.start_soon(_supervised, lambda _: hub.run(), context)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()


async def work(settings: Settings, *, redis: Redis | None = None) -> None:
    """``taskmanager worker``: the loops without HTTP, until SIGTERM or SIGINT."""
    database = Database(settings)
    try:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with running(database, settings, redis=redis):
                log.info("worker_started", loops=[getattr(loop, "__name__", "?") for loop in LOOPS])
                async for received in signals:
                    log.info("worker_stopping", signal=received)
                    break
    finally:
        if redis is not None:
            await redis.aclose()
        await database.dispose()
