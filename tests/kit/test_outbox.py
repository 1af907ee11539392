"""The outbox primitives on both backends: record's audience, sequence's one order."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import select

from taskmanager.kit.outbox import (
    EventType,
    format_event_id,
    parse_event_id,
    record,
    sequence,
)
from taskmanager.models.events import Event
from tests.factories import add_member, create_project, create_user


def test_event_ids_sort_as_text_and_parse_strictly() -> None:
    assert format_event_id(9) < format_event_id(10) < format_event_id(10**15)
    assert parse_event_id(format_event_id(42)) == 42
    for bad in ("42", "evt_42", "evt_00000000000000042", "evt_000000000000004x", ""):
        assert parse_event_id(bad) is None


async def test_record_snapshots_members_and_sequence_numbers_in_order(app: FastAPI) -> None:
    owner = await create_user(app)
    editor = await create_user(app)
    leaving = await create_user(app)
    project = await create_project(app, owner)
    await add_member(app, project, editor, "editor")
    database = app.state.database

    async with database.side_transaction() as session:
        await record(
            session,
            type=EventType.TASK_CREATED,
            project_id=project,
            actor_id=owner.id,
            data={"id": 1, "title": "x"},
        )
        await record(
            session,
            type=EventType.MEMBER_REMOVED,
            project_id=project,
            actor_id=owner.id,
            data={"user_id": leaving.id},
            also_notify=[leaving.id],
        )
        # Numbered in the recording transaction: once committed, the app's own running
        # dispatcher would number them first.
        assert await sequence(session) != []
    async with database.side_transaction() as session:
        assert await sequence(session) == []

    # An event rolled back with its transaction is never numbered, never published.
    try:
        async with database.side_transaction() as session:
            await record(
                session,
                type=EventType.TASK_DELETED,
                project_id=project,
                actor_id=owner.id,
                data={"id": 1},
            )
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    async with database.side_transaction() as session:
        assert await sequence(session) == []

    async with database.snapshot() as session:
        events = (await session.scalars(select(Event).order_by(Event.seq))).all()
    assert [e.type for e in events] == ["task.created", "member.removed"]
    assert [e.seq for e in events] == [1, 2]
    assert sorted(events[0].audience) == sorted([owner.id, editor.id])
    assert sorted(events[1].audience) == sorted([owner.id, editor.id, leaving.id])
    assert events[0].data == {"id": 1, "title": "x"}
    assert events[0].changed is None


async def test_sequence_continues_after_the_highest_number_in_batches(app: FastAPI) -> None:
    owner = await create_user(app)
    project = await create_project(app, owner)
    database = app.state.database
    async with database.side_transaction() as session:
        for n in range(5):
            await record(
                session,
                type=EventType.TASK_UPDATED,
                project_id=project,
                actor_id=None,
                data={"id": n},
                changed=["title"],
            )
        # In the recording transaction, so the app's running dispatcher cannot number them.
        first = await sequence(session, batch=3)
        second = await sequence(session, batch=3)
    assert [e.seq for e in first] == [1, 2, 3]
    assert [e.seq for e in second] == [4, 5]
    assert [e.data["id"] for e in first + second] == [0, 1, 2, 3, 4]
    assert second[0].changed == ["title"]
