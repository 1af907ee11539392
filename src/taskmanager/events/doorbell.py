"""Doorbells: how a process learns that there is something to read in the outbox.

Nothing is carried by a ring but "look again": readers always read the database by ``seq``,
so a lost, late or repeated ring costs latency, never an event. Three bells:

- ``after_commit``: a session that recorded an event commits → the dispatchers of this
  process (for that database) wake and number it.
- ``ring_local``: a dispatcher numbered events → the hubs of this process wake and read them.
- Redis pub/sub on ``CHANNEL`` when ``TASKMANAGER_REDIS_URL`` is set → the hubs of every
  other process wake too. Without Redis (or during an outage) they find the events on their
  next poll (``TASKMANAGER_EVENT_POLL_SECONDS``).

Bells are grouped by database URL: several apps in one process (tests) each hear the
changes of the database they serve.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from taskmanager.kit.outbox import RECORDED_KEY

CHANNEL = "taskmanager:events"

Bell = Callable[[], None]

_COMMITTED: defaultdict[str, set[Bell]] = defaultdict(set)
_SEQUENCED: defaultdict[str, set[Bell]] = defaultdict(set)


def database_key(engine: Engine) -> str:
    """Which database an engine talks to (its URL without the password)."""
    return engine.url.render_as_string(hide_password=True)


def on_commit(key: str, bell: Bell) -> Callable[[], None]:
    """Call ``bell`` whenever a session that recorded an event commits; returns an undo."""
    _COMMITTED[key].add(bell)
    return lambda: _COMMITTED[key].discard(bell)


def on_sequenced(key: str, bell: Bell) -> Callable[[], None]:
    """Call ``bell`` whenever this process numbered events; returns an undo."""
    _SEQUENCED[key].add(bell)
    return lambda: _SEQUENCED[key].discard(bell)


def ring_local(key: str) -> None:
    for bell in tuple(_SEQUENCED[key]):
        bell()


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if not session.info.pop(RECORDED_KEY, False):
        return
    bind = session.bind
    if isinstance(bind, Engine):
        for bell in tuple(_COMMITTED[database_key(bind)]):
            bell()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(RECORDED_KEY, None)
