"""Doorbells: how a process learns that there is something to read in the outbox.

Nothing is carried by a ring but "look again": readers always read the database by ``seq``,
so a lost, late or repeated ring costs latency, never an event. Three bells:

- ``after_commit``: a session that recorded an event commits → the dispatchers of this
  process (for that database) wake and number it.
- ``ring_local``: a dispatcher numbered events → the hubs of this process wake and read them.
- Redis pub/sub on ``CHANNEL`` when ``TASKMANAGER_REDIS_URL`` is set → the hubs of every
  other process wake too. Without Redis (or during an outage) they find the events on their
  next poll (``TASKMANAGER_EVENT_POLL_SECONDS``).

And one for credentials: a session that ended credentials (``kit.outbox.credentials_changed``)
commits → ``on_credentials`` bells get the user ids, so this process's hubs check those
users' connections again at once, and publish the ids on ``CREDENTIALS_CHANNEL`` for every
other process's hubs. A lost ring costs time only: each connection is also checked every
``TASKMANAGER_WS_RECHECK_SECONDS``.

Bells are grouped by database URL: several apps in one process (tests) each hear the
changes of the database they serve.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from taskmanager.kit.outbox import CREDENTIALS_KEY, RECORDED_KEY, on_driver_commit

CHANNEL = "taskmanager:events"
CREDENTIALS_CHANNEL = "taskmanager:credentials"

Bell = Callable[[], None]
UsersBell = Callable[[frozenset[int]], None]

_COMMITTED: defaultdict[str, set[Bell]] = defaultdict(set)
_SEQUENCED: defaultdict[str, set[Bell]] = defaultdict(set)
_CREDENTIALS: defaultdict[str, set[UsersBell]] = defaultdict(set)


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


def on_credentials(key: str, bell: UsersBell) -> Callable[[], None]:
    """Call ``bell(user_ids)`` whenever a session that ended credentials of those users
    commits; returns an undo."""
    _CREDENTIALS[key].add(bell)
    return lambda: _CREDENTIALS[key].discard(bell)


def ring_local(key: str) -> None:
    for bell in tuple(_SEQUENCED[key]):
        bell()


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    recorded = session.info.pop(RECORDED_KEY, False)
    users: set[int] | None = session.info.pop(CREDENTIALS_KEY, None)
    bind = session.bind
    if not isinstance(bind, Engine) or not (recorded or users):
        return
    key = database_key(bind)
    if users:
        ended = frozenset(users)
        for users_bell in tuple(_CREDENTIALS[key]):
            users_bell(ended)
    if recorded:
        _ring_committed(bind)


def _ring_committed(engine: Engine) -> None:
    for bell in tuple(_COMMITTED[database_key(engine)]):
        bell()


# Events written on the driver (``kit.driver``: the fast task writes) have no Session.
on_driver_commit(_ring_committed)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(RECORDED_KEY, None)
    session.info.pop(CREDENTIALS_KEY, None)
