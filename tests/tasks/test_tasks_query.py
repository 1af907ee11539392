"""The task list's query: Unicode-wide case-insensitive search (the same on both backends),
repeatable filters, and cursors that carry their query (``?cursor=`` alone continues)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import TEST_PASSWORD, UserFactory, problem
from tests.factories import API, TASKS, api_create_task, bulk_tasks

SISYPHUS = "\u03c3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2"  # with a final sigma

# (stored title, searches that must find it, searches that must not)
SEARCH_TABLE: list[tuple[str, list[str], list[str]]] = [
    ("\u00c9cole primaire", ["\u00e9cole", "\u00c9COLE", "e\u0301cole", "PRIMAIRE"], ["ecole"]),
    ("Stra\u00dfe sperren", ["strasse", "STRASSE", "stra\u00dfe", "STRA\u1e9eE"], ["strase"]),
    (
        "\u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3",
        [
            "\u03c3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2",
            "\u03c3\u03af\u03c3\u03c5\u03c6\u03bf\u03c3",
        ],
        [],
    ),
    ("\u0130stanbul trip", ["istanbul", "\u0130STANBUL", "i\u0307stanbul"], ["\u0131stanbul"]),
    ("\ufb01nal report", ["final", "FINAL", "\ufb01nal"], []),
    ("100% done_ok", ["100%", "done_ok"], ["100x", "donexok"]),
]


@pytest.mark.parametrize(("title", "finds", "misses"), SEARCH_TABLE, ids=lambda v: repr(v)[:20])
async def test_search_is_case_insensitive_for_all_of_unicode(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    title: str,
    finds: list[str],
    misses: list[str],
) -> None:
    alice = await make_user("alice")
    await api_create_task(client, alice, title=title)
    await api_create_task(client, alice, title="unrelated", description=title.upper())
    await api_create_task(client, alice, title="noise")
    for term in finds:
        found = await client.get(TASKS, params={"q": term}, headers=alice.headers)
        assert found.status_code == 200, found.text
        titles = sorted(t["title"] for t in found.json()["items"])
        assert titles == sorted([title, "unrelated"]), (term, titles)
    for term in misses:
        missed = await client.get(TASKS, params={"q": term}, headers=alice.headers)
        assert missed.json()["total"] == 0, (term, missed.json())


async def test_search_follows_edits(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    alice = await make_user("alice")
    task = await api_create_task(client, alice, title="Old title")
    url = f"{TASKS}/{task['id']}"
    patched = await client.patch(url, json={"title": "\u00c9t\u00e9"}, headers=alice.headers)
    assert patched.status_code == 200
    assert (await client.get(TASKS, params={"q": "old"}, headers=alice.headers)).json()[
        "total"
    ] == 0
    assert (await client.get(TASKS, params={"q": "\u00c9T\u00c9"}, headers=alice.headers)).json()[
        "total"
    ] == 1
    await client.patch(url, json={"description": "Gr\u00fc\u00dfe"}, headers=alice.headers)
    assert await _total(client, alice.headers, "GR\u00dcSSE") == 1
    await client.patch(url, json={"description": None}, headers=alice.headers)
    assert await _total(client, alice.headers, "gr\u00fc") == 0


async def _total(client: httpx.AsyncClient, headers: dict[str, str], q: str) -> int:
    response = await client.get(TASKS, params={"q": q}, headers=headers)
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


async def test_repeatable_filters(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    alice = await make_user("alice")
    for title, status, priority, tags in (
        ("a", "pending", 1, ["home", "urgent"]),
        ("b", "completed", 2, ["home"]),
        ("c", "in_progress", 3, ["work", "urgent"]),
        ("d", "cancelled", 1, ["Home", "Work", "Urgent"]),
    ):
        await api_create_task(
            client, alice, title=title, status=status, priority=priority, tags=tags
        )

    async def titles(params: list[tuple[str, str]]) -> list[str]:
        response = await client.get(TASKS, params=tuple(params), headers=alice.headers)
        assert response.status_code == 200, response.text
        return sorted(t["title"] for t in response.json()["items"])

    assert await titles([("status", "pending"), ("status", "completed")]) == ["a", "b"]
    assert await titles([("priority", "1"), ("priority", "3")]) == ["a", "c", "d"]
    # Tags: all of them, compared lower-case.
    assert await titles([("tag", "home"), ("tag", "URGENT")]) == ["a", "d"]
    assert await titles([("tag", "home"), ("tag", "urgent"), ("tag", "work")]) == ["d"]
    assert await titles([("tag", "urgent"), ("status", "pending"), ("status", "in_progress")]) == [
        "a",
        "c",
    ]


async def _pages(
    client: httpx.AsyncClient, headers: dict[str, str], first: str
) -> tuple[list[Any], list[httpx.Response]]:
    responses = [await client.get(first, headers=headers)]
    assert responses[0].status_code == 200, responses[0].text
    items = _items(responses[0])
    while (link := responses[-1].headers.get("link")) is not None:
        assert link.endswith('>; rel="next"')
        target = link[1 : link.index(">")]
        responses.append(await client.get(target, headers=headers))
        assert responses[-1].status_code == 200, responses[-1].text
        items.extend(_items(responses[-1]))
    return items, responses


def _items(response: httpx.Response) -> list[Any]:
    body = response.json()
    # Page objects, or (members, API keys) arrays paged by headers alone.
    return list(body if isinstance(body, list) else body["items"])


async def test_cursor_alone_continues_with_its_filters_sort_and_size(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    alice = await make_user("alice")
    await bulk_tasks(
        app,
        [
            {
                "project_id": alice.inbox_id,
                "title": f"t{i:02d}",
                "priority": 1 + i % 5,
                "tags": ["even"] if i % 2 == 0 else ["odd"],
                "title_folded": f"t{i:02d}",
            }
            for i in range(30)
        ],
    )
    first = f"{TASKS}?tag=even&sort_by=title&order=asc&limit=4&priority=1&priority=3&priority=5"
    items, responses = await _pages(client, alice.headers, first)
    expected = sorted(f"t{i:02d}" for i in range(30) if i % 2 == 0 and (1 + i % 5) in (1, 3, 5))
    assert [t["title"] for t in items] == expected
    assert all(r.headers["x-total-count"] == str(len(expected)) for r in responses)
    assert all(len(r.json()["items"]) <= 4 for r in responses)
    assert responses[-1].json()["next_cursor"] is None
    # The body's next_cursor, alone, is the same continuation as the Link.
    cursor = responses[0].json()["next_cursor"]
    alone = await client.get(TASKS, params={"cursor": cursor}, headers=alice.headers)
    assert alone.json()["items"] == responses[1].json()["items"]
    # Parameters sent with a cursor must match it; a different page size is allowed.
    same = await client.get(
        TASKS, params={"cursor": cursor, "tag": "EVEN", "sort_by": "title"}, headers=alice.headers
    )
    assert same.json()["items"] == responses[1].json()["items"]
    resized = await client.get(TASKS, params={"cursor": cursor, "limit": 2}, headers=alice.headers)
    assert resized.json()["items"] == responses[1].json()["items"][:2]
    for name, value in (("tag", "odd"), ("sort_by", "priority"), ("order", "desc")):
        response = await client.get(
            TASKS, params={"cursor": cursor, name: value}, headers=alice.headers
        )
        body = problem(response, 422, "VALIDATION_ERROR")
        assert body["errors"][0]["loc"] == ["query", name]


async def test_every_list_pages_with_total_link_and_cursor(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    admin = await make_user("admin", role="admin")
    others = [await make_user(f"member{i}") for i in range(4)]
    project = (
        await client.post(f"{API}/projects", json={"name": "p"}, headers=admin.headers)
    ).json()
    for other in others:
        added = await client.post(
            f"{API}/projects/{project['id']}/members",
            json={"user_id": other.id, "role": "viewer"},
            headers=admin.headers,
        )
        assert added.status_code == 201
    task = await api_create_task(client, admin, project_id=project["id"])
    for i in range(5):
        await client.post(
            f"{TASKS}/{task['id']}/comments", json={"body": f"c{i}"}, headers=admin.headers
        )
    for i in range(5):
        await client.post(f"{API}/projects", json={"name": f"p{i}"}, headers=admin.headers)
        await client.post(
            f"{API}/api-keys",
            json={"name": f"k{i}", "scopes": ["tasks:read"], "current_password": TEST_PASSWORD},
            headers=admin.headers,
        )
    lists = {
        f"{API}/projects": 7,
        f"{API}/users": 5,
        f"{API}/projects/{project['id']}/members": 5,
        f"{TASKS}/{task['id']}/comments": 5,
        f"{API}/api-keys": 5,
        f"{API}/projects/{project['id']}/tasks": 1,
        TASKS: 1,
    }
    for url, total in lists.items():
        items, responses = await _pages(client, admin.headers, f"{url}?limit=2")
        assert len(items) == total, url
        assert len({orjson_key(item) for item in items}) == total, url  # no repeats
        assert all(r.headers["x-total-count"] == str(total) for r in responses), url
        assert len(responses) == (total + 1) // 2, url
        offset = await client.get(url, params={"skip": 2, "limit": 2}, headers=admin.headers)
        assert offset.status_code == 200
        assert _items(offset) == items[2:4], url
    # A cursor of one list is refused by another (and by the same list elsewhere).
    first = await client.get(f"{TASKS}/{task['id']}/comments?limit=2", headers=admin.headers)
    cursor = first.json()["next_cursor"]
    for url in (f"{API}/projects", f"{TASKS}/{task['id'] + 1000}/comments"):
        response = await client.get(url, params={"cursor": cursor}, headers=admin.headers)
        assert response.status_code in (404, 422), url
    body = problem(
        await client.get(f"{API}/projects", params={"cursor": cursor}, headers=admin.headers),
        422,
        "VALIDATION_ERROR",
    )
    assert body["errors"][0]["type"] == "invalid_cursor"


def orjson_key(item: dict[str, Any]) -> Any:
    return item.get("id", item.get("user_id"))


@pytest.mark.postgres_only
async def test_search_predicate_can_use_a_trigram_index(
    app: FastAPI, make_user: UserFactory
) -> None:
    """The search is a plain LIKE on the folded columns, so a pg_trgm GIN index serves it
    (the indexes themselves are the performance work's; this proves the predicate fits)."""
    from sqlalchemy import text
    from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

    from taskmanager.tasks.filters import TaskListQuery
    from taskmanager.tasks.repository import page_statement

    alice = await make_user("alice")
    await bulk_tasks(
        app,
        [
            {"project_id": alice.inbox_id, "title": f"Task {i}", "title_folded": f"task {i}"}
            for i in range(50)
        ],
    )
    statement = page_statement(
        TaskListQuery(q="\u00c9cole"),
        viewer_id=alice.id,
        is_admin=True,
        dialect="postgresql",
        seek=None,
        skip=0,
        limit=20,
    )
    # SQLAlchemy leaves its dialect constructors unannotated.
    dialect = asyncpg_dialect()  # type: ignore[no-untyped-call]
    compiled = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    sql = str(compiled)
    assert "title_folded LIKE '%école%'" in sql  # folded in Python, a bound literal pattern
    async with app.state.database.side_transaction() as session:
        await session.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        await session.execute(
            text("CREATE INDEX test_title_trgm ON tasks USING gin (title_folded gin_trgm_ops)")
        )
        await session.execute(
            text(
                "CREATE INDEX test_description_trgm ON tasks "
                "USING gin (description_folded gin_trgm_ops)"
            )
        )
    try:
        async with app.state.database.side_transaction() as session:
            await session.execute(text("ANALYZE tasks"))
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            await session.execute(text("SET LOCAL enable_indexscan = off"))  # no order scan
            plan = "\n".join(row[0] for row in await session.execute(text(f"EXPLAIN {sql}")))
        assert "test_title_trgm" in plan, plan
        assert "test_description_trgm" in plan, plan
    finally:
        async with app.state.database.side_transaction() as session:
            await session.execute(text("DROP INDEX test_title_trgm"))
            await session.execute(text("DROP INDEX test_description_trgm"))
