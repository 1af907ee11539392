"""What each scenario sends: the app's request and the baseline's equivalent.

The baseline has no authentication, so the caller's user id travels in its query string;
everything else (bodies, page size, filters) is the same on both sides.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from bench.seeding import READER, SEARCH_WORD, Fixture
from bench.wrk import Load, Request

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LIST_LIMIT = 20
LARGE_FILTERS: dict[str, dict[str, str]] = {
    "none": {},
    "status": {"status": "in_progress"},
    "tag": {"tag": "urgent"},
    "q": {"q": SEARCH_WORD},
}


@dataclass(frozen=True, slots=True)
class Credentials:
    """Access tokens of the bench accounts and the cursor to page 2 of the reader's list."""

    reader: str
    writer: str | None = None
    next_cursor: str | None = None


def bearer(token: str | None) -> dict[str, str]:
    if token is None:
        raise RuntimeError("this scenario needs an account the dataset does not have")
    return {"Authorization": f"Bearer {token}"}


def _writer(fixture: Fixture) -> tuple[int, int, tuple[int, int]]:
    if fixture.writer_id is None or fixture.writer_project is None or not fixture.writer_tasks:
        raise RuntimeError("this scenario needs the writer account (the small dataset)")
    return fixture.writer_id, fixture.writer_project, fixture.writer_tasks


def _create_body(project_id: int) -> str:
    return json.dumps(
        {"project_id": project_id, "title": "bench task {n}", "priority": 2, "tags": ["bench"]}
    )


# "{n}" counts requests, so no PATCH repeats the value already stored (a no-op an app could skip).
PATCH_BODY = json.dumps({"title": "renamed {n}", "priority": 3})
LOGIN_BODY = urlencode({"username": READER.username, "password": READER.password})


def get_task(f: Fixture, c: Credentials) -> tuple[Load, Load]:
    return (
        Load((Request("GET", f"/api/v1/tasks/{f.reader_task}"),), bearer(c.reader)),
        Load((Request("GET", f"/tasks/{f.reader_task}"),)),
    )


def create_task(f: Fixture, c: Credentials) -> tuple[Load, Load]:
    user, project, _ = _writer(f)
    body = _create_body(project)
    return (
        Load((Request("POST", "/api/v1/tasks", body),), {**bearer(c.writer), **JSON}),
        Load((Request("POST", f"/tasks?user={user}", body),), JSON),
    )


def update_task(f: Fixture, c: Credentials) -> tuple[Load, Load]:
    user, _, ids = _writer(f)
    return (
        Load(
            (Request("PATCH", "/api/v1/tasks/{id}", PATCH_BODY),), {**bearer(c.writer), **JSON}, ids
        ),
        Load((Request("PATCH", f"/tasks/{{id}}?user={user}", PATCH_BODY),), JSON, ids),
    )


def list_page(
    f: Fixture, c: Credentials, filters: dict[str, str] | None = None
) -> tuple[Load, Load]:
    query = urlencode({"limit": LIST_LIMIT, **(filters or {})})
    return (
        Load((Request("GET", f"/api/v1/tasks?{query}"),), bearer(c.reader)),
        Load((Request("GET", f"/tasks?user={f.reader_id}&{query}"),)),
    )


def cursor_page(f: Fixture, c: Credentials) -> tuple[Load, Load]:
    if c.next_cursor is None:
        raise RuntimeError("the first page had no next_cursor")
    created_at, last_id = f.cursor_seek
    seek = f"after_created_at={quote(created_at, safe='')}&after_id={last_id}"
    return (
        Load(
            (Request("GET", f"/api/v1/tasks?limit={LIST_LIMIT}&cursor={quote(c.next_cursor)}"),),
            bearer(c.reader),
        ),
        Load((Request("GET", f"/tasks?user={f.reader_id}&limit={LIST_LIMIT}&{seek}"),)),
    )


def login(f: Fixture, c: Credentials) -> tuple[Load, Load]:
    return (
        Load((Request("POST", "/api/v1/auth/token", LOGIN_BODY),), FORM),
        Load((Request("POST", "/token", LOGIN_BODY),), FORM),
    )


def mixed(f: Fixture, c: Credentials) -> tuple[Load, Load]:
    """The memory scenario's traffic, as the writer: 85 % reads by id, 5 % each of list,
    create and update (reads dominate real traffic; every route family allocates)."""
    user, project, ids = _writer(f)
    body = _create_body(project)
    app = (
        Request("GET", "/api/v1/tasks/{id}", weight=85),
        Request("GET", f"/api/v1/tasks?limit={LIST_LIMIT}", weight=5),
        Request("POST", "/api/v1/tasks", body, weight=5),
        Request("PATCH", "/api/v1/tasks/{id}", PATCH_BODY, weight=5),
    )
    base = (
        Request("GET", "/tasks/{id}", weight=85),
        Request("GET", f"/tasks?user={user}&limit={LIST_LIMIT}", weight=5),
        Request("POST", f"/tasks?user={user}", body, weight=5),
        Request("PATCH", f"/tasks/{{id}}?user={user}", PATCH_BODY, weight=5),
    )
    return Load(app, {**bearer(c.writer), **JSON}, ids), Load(base, JSON, ids)


LoadPair = Callable[[Fixture, Credentials], tuple[Load, Load]]

THROUGHPUT: dict[str, tuple[str, LoadPair]] = {
    "get": ("GET /tasks/{id}", get_task),
    "create": ("POST /tasks", create_task),
    "update": ("PATCH /tasks/{id}", update_task),
    "list": ("GET /tasks?limit=20", list_page),
    "cursor": ("GET /tasks?cursor= (page 2)", cursor_page),
    "login": ("POST /auth/token", login),
}
