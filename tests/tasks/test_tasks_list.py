"""Task lists through HTTP: scoping, filters, sorting, offset and cursor pages, HEAD, export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import UserFactory, problem
from tests.factories import (
    API,
    TASKS,
    add_member,
    all_task_rows,
    api_create_task,
    bulk_tasks,
    create_project,
)

BASE = datetime(2026, 1, 1, tzinfo=UTC)


async def _list(
    client: httpx.AsyncClient, headers: dict[str, str], url: str = TASKS, **params: Any
) -> dict[str, Any]:
    response = await client.get(url, params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["x-total-count"] == str(body["total"])
    return body


def _ids(body: dict[str, Any]) -> list[int]:
    return [item["id"] for item in body["items"]]


# ---- scoping and filters -----------------------------------------------------------------


async def test_list_shows_only_member_projects_and_admin_sees_all(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    admin = await make_user("root", role="admin")
    shared = await create_project(app, bob, "shared")
    await add_member(app, shared, alice, "viewer")
    mine = await api_create_task(client, alice)
    in_shared = await api_create_task(client, bob, project_id=shared)
    bobs_private = await api_create_task(client, bob)

    body = await _list(client, alice.headers)
    assert set(_ids(body)) == {mine["id"], in_shared["id"]}
    assert body["total"] == 2
    assert body["skip"] == 0
    assert body["limit"] == 20
    assert body["next_cursor"] is None
    everything = await _list(client, admin.headers)
    assert set(_ids(everything)) == {mine["id"], in_shared["id"], bobs_private["id"]}
    # Filtering on a project you cannot see just finds nothing.
    assert (await _list(client, alice.headers, project_id=bob.inbox_id))["total"] == 0


async def test_filters(app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    project = await create_project(app, alice, "work")
    await add_member(app, project, bob, "editor")
    a = await api_create_task(
        client,
        alice,
        title="Pay 100% of the bill",
        status="completed",
        priority=5,
        tags=["Home", "money"],
        due_date="2026-03-01T00:00:00Z",
    )
    b = await api_create_task(
        client,
        alice,
        title="plain_name",
        description="Contains UPPER and lower",
        status="in_progress",
        priority=2,
        tags=["work"],
        due_date="2026-05-01T00:00:00Z",
        project_id=project,
        assignee_id=bob.id,
    )
    c = await api_create_task(client, alice, title="plainXname", assignee_id=alice.id)
    d = await api_create_task(client, bob, title="back\\slash /and/ slash", project_id=project)

    async def ids(**params: Any) -> set[int]:
        return set(_ids(await _list(client, alice.headers, **params)))

    assert await ids(status="completed") == {a["id"]}
    assert await ids(status=["completed", "in_progress"]) == {a["id"], b["id"]}
    assert await ids(priority=2) == {b["id"]}
    assert await ids(project_id=project) == {b["id"], d["id"]}
    assert await ids(assignee_id=bob.id) == {b["id"]}
    assert await ids(assignee_id="me") == {c["id"]}
    assert set(_ids(await _list(client, bob.headers, assignee_id="me"))) == {b["id"]}
    assert await ids(tag="home") == {a["id"]}
    assert await ids(tag="HOME") == {a["id"]}
    assert await ids(tag="hom") == set()
    assert await ids(due_before="2026-04-01T00:00:00Z") == {a["id"]}
    assert await ids(due_after="2026-04-01T00:00:00+02:00") == {b["id"]}
    assert await ids(due_after="2026-01-01T00:00:00Z", due_before="2026-12-01T00:00:00Z") == {
        a["id"],
        b["id"],
    }
    # q: case-insensitive, title or description, and % _ / \ are literal characters.
    assert await ids(q="PAY") == {a["id"]}
    assert await ids(q="upper AND") == {b["id"]}
    assert await ids(q="100%") == {a["id"]}
    assert await ids(q="%") == {a["id"]}
    assert await ids(q="plain_") == {b["id"]}
    assert await ids(q="_") == {b["id"]}
    assert await ids(q="/and/") == {d["id"]}
    assert await ids(q="\\") == {d["id"]}
    assert await ids(q="nothing like this") == set()
    assert await ids(status="completed", priority=1) == set()


@pytest.mark.parametrize(
    "params",
    [
        {"sort_by": "bogus"},
        {"order": "sideways"},
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"skip": -1},
        {"status": "done"},
        {"priority": 0},
        {"priority": 6},
        {"assignee_id": "you"},
        {"assignee_id": 0},
        {"project_id": "x"},
        {"project_id": 2**63},
        {"due_before": "2026-01-01T00:00:00"},
        {"due_after": "yesterday"},
        {"q": ""},
        {"q": "x" * 201},
        {"q": "a\x00b"},
        {"tag": ""},
        {"tag": "x" * 51},
        {"cursor": "not-a-cursor"},
        {"cursor": ""},
    ],
)
async def test_invalid_list_parameters_are_422(
    client: httpx.AsyncClient, make_user: UserFactory, params: dict[str, Any]
) -> None:
    alice = await make_user("alice")
    body = problem(
        await client.get(TASKS, params=params, headers=alice.headers), 422, "VALIDATION_ERROR"
    )
    assert body["errors"]


async def test_offset_pages(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    await bulk_tasks(
        app,
        [
            {"project_id": alice.inbox_id, "title": f"t{i}", "created_at": BASE + timedelta(i)}
            for i in range(25)
        ],
    )
    first = await _list(client, alice.headers, limit=10)
    assert first["total"] == 25
    assert [item["title"] for item in first["items"]] == [f"t{i}" for i in range(24, 14, -1)]
    assert first["next_cursor"] is not None
    last = await _list(client, alice.headers, skip=20, limit=10)
    assert [item["title"] for item in last["items"]] == [f"t{i}" for i in range(4, -1, -1)]
    assert last["skip"] == 20
    assert last["next_cursor"] is None
    beyond = await _list(client, alice.headers, skip=100)
    assert beyond["items"] == []
    assert beyond["total"] == 25
    # An offset page's cursor continues where it ended.
    follow = await _list(client, alice.headers, limit=10, cursor=first["next_cursor"])
    assert [item["title"] for item in follow["items"]] == [f"t{i}" for i in range(14, 4, -1)]


# ---- cursor pages ------------------------------------------------------------------------


def _expected_order(rows: list[Any], sort_by: str, order: str) -> list[int]:
    reverse = order == "desc"
    if sort_by == "due_date":
        dated = sorted(
            (r for r in rows if r.due_date is not None),
            key=lambda r: (r.due_date, r.id),
            reverse=reverse,
        )
        undated = sorted(
            (r for r in rows if r.due_date is None), key=lambda r: r.id, reverse=reverse
        )
        return [r.id for r in dated + undated]
    return [r.id for r in sorted(rows, key=lambda r: (getattr(r, sort_by), r.id), reverse=reverse)]


async def test_cursor_walk_visits_every_row_once_in_order_for_every_sort(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    second = await create_project(app, alice, "second")
    rows = [
        {
            "project_id": alice.inbox_id if i % 3 else second,
            # Few distinct values per sort key, so the id tie-break decides a lot.
            "title": f"t{i % 40:03d}",
            "priority": i % 5 + 1,
            "created_at": BASE + timedelta(minutes=i % 50),
            "updated_at": BASE + timedelta(seconds=i % 17),
            "due_date": None if i % 7 == 0 else BASE + timedelta(days=i % 30),
        }
        for i in range(1000)
    ]
    # Someone else's tasks must never show up.
    rows += [{"project_id": bob.inbox_id, "title": "t001"} for _ in range(30)]
    await bulk_tasks(app, rows)
    visible = [r for r in await all_task_rows(app) if r.project_id in (alice.inbox_id, second)]
    assert len(visible) == 1000

    for sort_by in ("created_at", "updated_at", "priority", "title", "due_date"):
        for order in ("desc", "asc"):
            seen: list[int] = []
            params: dict[str, Any] = {"sort_by": sort_by, "order": order, "limit": 97}
            pages = 0
            while True:
                body = await _list(client, alice.headers, **params)
                assert body["total"] == 1000
                seen.extend(_ids(body))
                pages += 1
                if body["next_cursor"] is None:
                    break
                params["cursor"] = body["next_cursor"]
            assert pages == 11, (sort_by, order)
            assert len(seen) == len(set(seen)) == 1000, (sort_by, order)
            assert seen == _expected_order(visible, sort_by, order), (sort_by, order)


async def test_bad_cursors_are_422(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    alice = await make_user("alice")
    for i in range(3):
        await api_create_task(client, alice, title=f"t{i}", priority=i + 1)
    first = await _list(client, alice.headers, limit=1, sort_by="priority", order="asc")
    cursor = first["next_cursor"]
    assert cursor

    def expect_422(response: httpx.Response) -> None:
        body = problem(response, 422, "VALIDATION_ERROR")
        assert body["errors"][0]["loc"][0] == "query"

    body_part, _, sig = cursor.partition(".")
    tampered = body_part[:-2] + ("A" if body_part[-2] != "A" else "B") + body_part[-1] + "." + sig
    for bad in (tampered, cursor + "x", body_part, "a.b", "ey.." + sig):
        expect_422(
            await client.get(
                TASKS,
                params={"limit": 1, "sort_by": "priority", "order": "asc", "cursor": bad},
                headers=alice.headers,
            )
        )
    # A cursor is only good for the sort and filters it came from.
    others: tuple[dict[str, str | int], ...] = (
        {"sort_by": "priority", "order": "desc"},
        {"sort_by": "title", "order": "asc"},
        {"sort_by": "priority", "order": "asc", "status": "pending"},
        {"sort_by": "priority", "order": "asc", "skip": 1},
    )
    for params in others:
        expect_422(
            await client.get(
                TASKS, params={"limit": 1, "cursor": cursor, **params}, headers=alice.headers
            )
        )
    # The genuine one works, and a different limit is fine.
    ok = await _list(client, alice.headers, limit=5, sort_by="priority", order="asc", cursor=cursor)
    assert [item["priority"] for item in ok["items"]] == [2, 3]


# ---- project tasks, HEAD -----------------------------------------------------------------


async def test_project_tasks(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, bob, eve = await make_user("alice"), await make_user("bob"), await make_user("eve")
    project = await create_project(app, alice)
    await add_member(app, project, bob, "viewer")
    inside = await api_create_task(client, alice, project_id=project, priority=3)
    await api_create_task(client, alice, project_id=project, priority=1)
    await api_create_task(client, alice)
    url = f"{API}/projects/{project}/tasks"

    body = await _list(client, bob.headers, url)
    assert body["total"] == 2
    assert {item["project_id"] for item in body["items"]} == {project}
    filtered = await _list(client, bob.headers, url, priority=3)
    assert _ids(filtered) == [inside["id"]]
    problem(await client.get(url, headers=eve.headers), 404, "RESOURCE_NOT_FOUND")
    problem(
        await client.get(f"{API}/projects/987654/tasks", headers=alice.headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
    problem(
        await client.get(url, params={"limit": 0}, headers=alice.headers), 422, "VALIDATION_ERROR"
    )


async def test_head_sends_the_get_headers_without_a_body(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    for i in range(3):
        await api_create_task(client, alice, title=f"t{i}", priority=1 + i % 2)
    response = await client.head(TASKS, headers=alice.headers)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["x-total-count"] == "3"
    get = await client.get(TASKS, headers=alice.headers)
    assert response.headers["content-type"] == get.headers["content-type"]
    filtered = await client.head(TASKS, params={"priority": 2}, headers=alice.headers)
    assert filtered.headers["x-total-count"] == "1"
    invalid = await client.head(TASKS, params={"limit": 0}, headers=alice.headers)
    assert invalid.status_code == 422
    assert (await client.head(TASKS)).status_code == 401


# ---- export ------------------------------------------------------------------------------


def _csv(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="tasks.csv"'
    return list(csv.DictReader(io.StringIO(response.text)))


async def test_export_csv_neutralises_formulas_and_applies_filters(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, bob = await make_user("alice"), await make_user("bob")
    dangerous = ["=1+1", "+SUM(A1)", "-2", "@cmd", "\tTab", "\rReturn"]
    for i, text in enumerate(dangerous):
        # Titles are trimmed, so tab and CR can only lead a description.
        await api_create_task(
            client, alice, title=text if text.strip() == text else f"d{i}", description=text
        )
    await api_create_task(
        client,
        alice,
        title="Plain, with comma",
        description='He said "hi"\nthen left',
        tags=["=evil", "ok"],
        priority=5,
        due_date="2026-12-01T17:00:00Z",
    )
    await api_create_task(client, bob, title="not yours")

    rows = _csv(
        await client.get(f"{TASKS}/export", params={"format": "csv"}, headers=alice.headers)
    )
    assert len(rows) == len(dangerous) + 1
    assert list(rows[0]) == [
        "id",
        "project_id",
        "title",
        "description",
        "status",
        "priority",
        "due_date",
        "tags",
        "assignee_id",
        "created_by",
        "created_at",
        "updated_at",
        "completed_at",
        "version",
    ]
    titles = {row["title"] for row in rows}
    descriptions = {row["description"] for row in rows}
    for text in dangerous:
        assert f"'{text}" in descriptions, text
        if text.strip() == text:
            assert f"'{text}" in titles, text
    plain = next(row for row in rows if row["title"] == "Plain, with comma")
    assert plain["description"] == 'He said "hi"\nthen left'
    assert plain["tags"] == "'=evil,ok"
    assert plain["priority"] == "5"
    assert plain["due_date"] == "2026-12-01T17:00:00Z"
    assert plain["assignee_id"] == ""
    assert plain["created_by"] == str(alice.id)
    assert "not yours" not in titles

    only = _csv(await client.get(f"{TASKS}/export", params={"priority": 5}, headers=alice.headers))
    assert [row["title"] for row in only] == ["Plain, with comma"]
    empty = await client.get(f"{TASKS}/export", params={"q": "zzz"}, headers=alice.headers)
    assert _csv(empty) == []
    assert empty.text.startswith("id,project_id,")


async def test_export_streams_every_row_across_batches(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    await bulk_tasks(
        app,
        [
            {
                "project_id": alice.inbox_id,
                "title": f"t{i}",
                "created_at": BASE + timedelta(seconds=i % 100),
            }
            for i in range(1234)
        ],
    )
    rows = _csv(await client.get(f"{TASKS}/export", headers=alice.headers))
    assert len(rows) == 1234
    assert len({row["id"] for row in rows}) == 1234
    by_title = _csv(
        await client.get(
            f"{TASKS}/export", params={"sort_by": "title", "order": "asc"}, headers=alice.headers
        )
    )
    assert [row["title"] for row in by_title] == sorted(f"t{i}" for i in range(1234))


@pytest.mark.parametrize("params", [{"format": "xml"}, {"format": ""}, {"sort_by": "bogus"}])
async def test_export_rejects_bad_parameters(
    client: httpx.AsyncClient, make_user: UserFactory, params: dict[str, str]
) -> None:
    alice = await make_user("alice")
    problem(
        await client.get(f"{TASKS}/export", params=params, headers=alice.headers),
        422,
        "VALIDATION_ERROR",
    )
    problem(await client.get(f"{TASKS}/export"), 401, "NOT_AUTHENTICATED")
