"""``If-Match`` on every unsafe method (API.md §5, RFC 9110 §13.1.1): a PUT, PATCH or DELETE
whose ``If-Match`` names no current ETag answers 412 and changes nothing, on every route of
the route table — and with the current ETag it goes through."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import problem
from tests.factories import database_rows
from tests.route_table import HTTP_ROUTES, ROWS_BY_ID, Row, seed_world

UNSAFE = [r for r in HTTP_ROUTES if r.method in ("PUT", "PATCH", "DELETE")]


@pytest.mark.parametrize("row", UNSAFE, ids=lambda r: r.operation_id)
async def test_a_stale_if_match_changes_nothing(
    client: httpx.AsyncClient, app: FastAPI, row: Row
) -> None:
    world = await seed_world(app)
    call = row.call(world)
    headers = world.headers(str(row.sent_by)) if row.sent_by else {}
    before = await database_rows(app)
    response = await client.request(
        row.method,
        row.url(call),
        headers={**headers, "If-Match": '"not-the-current-etag"'},
        **row.request_kwargs(call),
    )
    problem(response, 412, "PRECONDITION_FAILED")
    assert await database_rows(app) == before


GETS = {r.path: r for r in HTTP_ROUTES if r.method == "GET"}
READABLE = [r for r in UNSAFE if r.path in GETS]


def test_every_unsafe_route_has_a_get_to_read_its_etag_from() -> None:
    assert [r.operation_id for r in UNSAFE if r.path not in GETS] == []


@pytest.mark.parametrize("row", READABLE, ids=lambda r: r.operation_id)
async def test_the_etag_a_get_gives_is_the_one_if_match_accepts(
    client: httpx.AsyncClient, app: FastAPI, row: Row
) -> None:
    world = await seed_world(app)
    call = row.call(world)
    headers = world.headers(str(row.sent_by)) if row.sent_by else {}
    read = await client.get(row.url(call), headers=headers)
    assert read.status_code == 200, read.text
    etag = read.headers["ETag"]
    response = await client.request(
        row.method, row.url(call), headers={**headers, "If-Match": etag}, **row.request_kwargs(call)
    )
    assert response.status_code == row.success, response.text


async def test_an_attachment_delete_accepts_its_content_etag_too(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """An attachment has one version, named by both its ETags (README, conditional requests)."""
    world = await seed_world(app)
    row = ROWS_BY_ID["attachments_delete"]
    call = row.call(world)
    headers = world.headers(str(row.sent_by))
    content = await client.get(f"{row.url(call)}/content", headers=headers)
    assert content.status_code == 200
    response = await client.delete(
        row.url(call), headers={**headers, "If-Match": content.headers["ETag"]}
    )
    assert response.status_code == 204, response.text
    gone = await client.get(row.url(call), headers=headers)
    assert gone.status_code == 404
