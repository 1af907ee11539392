"""The transactional outbox: record an event with the change, publish it in one order later.

``record`` is called by services inside the request's transaction, right after the change it
describes: the event commits with the change or not at all (no event is lost when a process
dies, none is published for a change that rolled back). It is one ``INSERT ... SELECT``
statement, which also snapshots the project's members as the event's audience.

``sequence`` is the dispatcher's step: under one lock (a PostgreSQL advisory lock; SQLite's
single writer), it numbers the committed, unnumbered rows in order. Because each numbering
transaction starts after the previous one committed, a reader that sees ``seq = n`` also sees
every row below ``n``: reading "events after my last seq" never skips one, whichever process
numbered them. Subscribers (WebSocket replay, webhook fan-out) read by ``seq`` only.

Public event ids are ``evt_`` + the zero-padded ``seq`` (``format_event_id``), so they sort
as strings the way they were published.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, String, bindparam, func, insert, literal, select, text, union
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause, ScalarSelect

from taskmanager.kit.driver import DriverStatement, Step
from taskmanager.models.base import JSONList, UTCDateTime, utcnow
from taskmanager.models.events import Event, EventType
from taskmanager.models.projects import ProjectMember

__all__ = [
    "CREDENTIALS_KEY",
    "RECORDED_KEY",
    "EventType",
    "audience",
    "committed_on_driver",
    "credentials_changed",
    "event_insert",
    "event_step",
    "format_event_id",
    "on_driver_commit",
    "parse_event_id",
    "record",
    "sequence",
]

# Set in ``session.info`` by ``record``: the dispatcher is woken when such a session commits.
RECORDED_KEY = "taskmanager.outbox.recorded"
# Set in ``session.info`` by ``credentials_changed``: the ids of users whose credentials the
# transaction ended; live connections of theirs are checked again when it commits.
CREDENTIALS_KEY = "taskmanager.outbox.credentials"

_EVENT_ID = re.compile(r"evt_([0-9]{16})")
# pg_advisory_xact_lock key of the sequencer ("outbox" in ASCII, as a bigint).
_SEQUENCE_LOCK = 0x6F7574626F78


def format_event_id(seq: int) -> str:
    """The public id of the event numbered ``seq``: ``evt_`` + 16 digits (sorts as text)."""
    return f"evt_{seq:016d}"


def parse_event_id(value: str) -> int | None:
    """The ``seq`` of a public event id, or None if ``value`` is not one."""
    match = _EVENT_ID.fullmatch(value)
    return int(match.group(1)) if match else None


async def record(
    session: AsyncSession,
    *,
    type: EventType,
    project_id: int,
    actor_id: int | None,
    data: Mapping[str, Any],
    changed: Sequence[str] | None = None,
    also_notify: Sequence[int] = (),
    also_members_of: Sequence[int] = (),
    occurred_at: datetime | None = None,
) -> None:
    """Write one event in the caller's transaction (one statement, never commits).

    ``data`` is the resource as the API shows it (JSON-ready: ``model_dump(mode="json")``);
    ``changed`` the updated field names (``*.updated`` only). The audience is the project's
    members as this transaction sees them, plus the users in ``also_notify`` (a member
    being removed still hears of it) and the members of the projects in ``also_members_of``
    (those of the project a task moved out of), all counted in this one statement. Call
    it after the change, so a new member is in the audience of its own ``member.added``.

    An update that changed no field (a PATCH sending the current values) writes nothing:
    there is nothing to tell. An update event without ``changed`` is a programming error
    (``ValueError``): API.md §7 promises the field names on every ``*.updated``.
    """
    if type.endswith(".updated"):
        if changed is None:
            raise ValueError(f"a {type} event must name the fields that changed")
        if not changed:
            return
    dialect = session.get_bind().dialect.name
    statement = event_insert(
        dialect,
        type=literal(str(type)),
        project_id=literal(project_id, BigInteger),
        actor_id=literal(actor_id, BigInteger),
        occurred_at=literal(occurred_at or utcnow(), UTCDateTime),
        data=literal(dict(data), JSONList),
        changed=literal(list(changed) if changed is not None else None, JSONList),
        audience_of=[project_id, *also_members_of],
        also_notify=also_notify,
    )
    await session.execute(statement)
    session.info[RECORDED_KEY] = True


def event_insert(
    dialect: str,
    *,
    type: Any,
    project_id: Any,
    actor_id: Any,
    occurred_at: Any,
    data: Any,
    changed: Any,
    audience_of: Sequence[Any],
    also_notify: Sequence[int] = (),
    source: FromClause | None = None,
) -> Insert:
    """SQL: ``INSERT INTO events ... SELECT`` of one event — ``record``'s statement, and
    the event half of a statement that also makes the change (``kit.driver`` writes).

    Each value is an SQL expression (a literal, a bound parameter, or a column of
    ``source``, the change's ``RETURNING`` as a CTE); ``audience_of``: the projects whose
    members hear of it (values or columns).
    """
    values = select(
        type,
        project_id,
        actor_id,
        occurred_at,
        data,
        changed,
        audience(dialect, audience_of, also_notify),
    )
    if source is not None:
        values = values.select_from(source)
    return insert(Event).from_select(
        ["type", "project_id", "actor_id", "occurred_at", "data", "changed", "audience"],
        values,
    )


def event_step(
    *,
    type: EventType,
    project_id: int,
    actor_id: int | None,
    data: Mapping[str, Any],
    changed: Sequence[str] | None = None,
    also_members_of: int | None = None,
) -> Step | None:
    """``record`` for a write made on the driver (``kit.driver``): the same event, by one
    statement built once, as the statement and parameters for a ``kit.driver.Script`` to
    yield in its transaction; None (nothing to record) for an update that changed no field.
    ``also_members_of``: one more project whose members hear of it. The caller calls
    ``committed_on_driver`` once the transaction commits. Raises ValueError for an update
    event that does not name what changed."""
    if type.endswith(".updated"):
        if changed is None:
            raise ValueError(f"a {type} event must name the fields that changed")
        if not changed:
            return None
    params = {
        "type": str(type),
        "project_id": project_id,
        "actor_id": actor_id,
        "occurred_at": utcnow(),
        "data": data,
        "changed": None if changed is None else list(changed),
        "also_project_id": project_id if also_members_of is None else also_members_of,
    }
    return _ON_DRIVER, params


async def record_steps(session: AsyncSession, steps: Iterable[Step | None]) -> None:
    """Write the events ``event_step`` built, in the caller's transaction (never commits),
    as one statement run for all of them (``executemany``), for a change to many rows at
    once: a departing member's tasks, a deleted account's tasks and comments. One
    ``record`` per row cost a round trip each (seconds for thousands). None steps (nothing
    to record) are skipped."""
    batches: dict[DriverStatement, list[dict[str, Any]]] = {}
    for step in steps:
        if step is not None:
            statement, params = step
            batches.setdefault(statement, []).append(dict(params))
    dialect = session.get_bind().dialect.name
    # On the session's connection, as Core: given a list of parameters, Session.execute
    # would take an INSERT into a mapped table for an ORM bulk insert of objects.
    connection = await session.connection()
    for statement, rows in batches.items():
        await connection.execute(cast(Executable, statement.statement(dialect)), rows)
    if batches:
        session.info[RECORDED_KEY] = True


def audience(
    dialect: str, project_ids: Sequence[Any], also_notify: Sequence[int] = ()
) -> ScalarSelect[Any]:
    """SQL: an event's audience, a JSON list of user ids — the members of ``project_ids``
    (values, or columns of the enclosing statement) and the users in ``also_notify``."""
    # DISTINCT: a user in several of the projects is one member of the audience (a union
    # of one select removes no duplicates).
    members = (
        select(ProjectMember.user_id.label("user_id"))
        .where(ProjectMember.project_id.in_(project_ids))
        .distinct()
    )
    people = union(members, *(select(literal(user_id, BigInteger)) for user_id in also_notify))
    audience_rows = people.subquery()
    listed: ColumnElement[Any]
    if dialect == "postgresql":
        listed = func.coalesce(func.jsonb_agg(audience_rows.c.user_id), literal([], JSONB))
    else:
        listed = func.json_group_array(audience_rows.c.user_id)
    return select(listed).scalar_subquery()


def on_driver_commit(bell: Callable[[Engine], None]) -> None:
    """Call ``bell(engine)`` whenever events recorded on the driver (``kit.driver``, no
    ``Session``) commit; ``events.doorbell`` rings its commit bells from it."""
    _DRIVER_COMMIT_BELLS.append(bell)


def committed_on_driver(engine: Engine) -> None:
    """Events were recorded and committed through ``engine`` outside a ``Session``: what
    a ``Session``'s ``after_commit`` does for ``record`` (the dispatchers wake)."""
    for bell in tuple(_DRIVER_COMMIT_BELLS):
        bell(engine)


_DRIVER_COMMIT_BELLS: list[Callable[[Engine], None]] = []


def credentials_changed(session: AsyncSession, user_id: int) -> None:
    """Note that this transaction ends credentials of ``user_id`` (sessions ended, an API
    key revoked, the account deactivated or deleted).

    When it commits, every process checks that user's open WebSocket connections again at
    once (``events.doorbell``), closing those whose credential no longer works (API.md §3:
    tokens and keys stop at once); nothing happens if it rolls back.
    """
    users: set[int] = session.info.setdefault(CREDENTIALS_KEY, set())
    users.add(user_id)


async def sequence(session: AsyncSession, *, batch: int = 500) -> list[Event]:
    """Number up to ``batch`` committed, unnumbered events; return them in ``seq`` order.

    Run it in a transaction of its own (``Database.side_transaction``) and commit before
    publishing what it returns. Safe to run from several processes at once: on PostgreSQL
    an advisory lock held until commit serialises them; on SQLite the single writer does.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SEQUENCE_LOCK})
    top = (await session.scalar(select(func.max(Event.seq)))) or 0
    # One statement numbers the batch in insert order among the rows visible now
    # (UPDATE ... FROM: PostgreSQL, and SQLite since 3.33).
    await session.execute(
        text(
            "UPDATE events SET seq = numbered.n FROM ("
            " SELECT id, :top + row_number() OVER (ORDER BY id) AS n FROM events"
            " WHERE seq IS NULL ORDER BY id LIMIT :batch"
            ") AS numbered WHERE events.id = numbered.id"
        ),
        {"top": top, "batch": batch},
    )
    rows = await session.scalars(select(Event).where(Event.seq > top).order_by(Event.seq))
    return list(rows.all())


# ``event_step``'s statement (here, below the functions that build it): its audience
# is a JSON aggregate, which differs by database.
_ON_DRIVER = DriverStatement(
    lambda dialect: event_insert(
        dialect,
        type=bindparam("type", type_=String),
        project_id=bindparam("project_id", type_=BigInteger),
        actor_id=bindparam("actor_id", type_=BigInteger),
        occurred_at=bindparam("occurred_at", type_=UTCDateTime()),
        data=bindparam("data", type_=JSONList),
        changed=bindparam("changed", type_=JSONList),
        audience_of=[
            bindparam("project_id", type_=BigInteger),
            bindparam("also_project_id", type_=BigInteger),
        ],
    )
)
