"""The route table (tests/route_table.py) is the app's routes, no more and no less.

The walk expands the app's routes the way FastAPI serves them (included routers, HEAD
beside GET, OPTIONS routes, mounts, WebSocket routes) and compares them with the table's
rows, both ways; every row's operation id is the one the OpenAPI document gives; and every
row's valid request, sent by its caller on a seeded world, gets the row's success status.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from starlette.routing import WebSocketRoute

from taskmanager.main import create_app
from tests.conftest import TestDatabase, make_settings
from tests.route_table import (
    API,
    HTTP_ROUTES,
    MOUNT,
    ROUTES,
    WEBSOCKET,
    Row,
    Rule,
    differences,
    operation_ids,
    route_names,
    seed_world,
    walk,
)


@pytest.fixture
def bare_app(tmp_path: Path) -> FastAPI:
    """The app as built for serving (its routes only; no lifespan, no database needed)."""
    database = TestDatabase("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'walk.db'}")
    return create_app(make_settings(database, tmp_path / "data"))


def test_every_route_has_a_row_and_every_row_a_route(bare_app: FastAPI) -> None:
    problems = differences(walk(bare_app.routes), ROUTES)
    assert problems == [], "tests/route_table.py and the app disagree:\n" + "\n".join(problems)


def test_row_operation_ids_are_the_documents(bare_app: FastAPI) -> None:
    documented = operation_ids(bare_app)
    names = route_names(bare_app)
    wrong = []
    for row in ROUTES:
        if row.key in documented:
            expected = documented[row.key]
        else:  # not in the document: the route's name (its HEAD row adds "_head")
            name = names.get(row.key, "?")
            expected = f"{name}_head" if row.method == "HEAD" else name
        if row.operation_id != expected:
            wrong.append(f"{row.method} {row.path}: row says {row.operation_id}, app {expected}")
    assert wrong == []


async def _websocket_endpoint(websocket: WebSocket) -> None:
    await websocket.close()


def test_the_walk_fails_for_a_route_without_a_row(bare_app: FastAPI) -> None:
    """Routes added the ways FastAPI and Starlette allow are each reported until they get a row."""
    # A plain APIRouter declares no HEAD beside GET (the app's domain_router does).
    router = APIRouter(prefix=f"{API}/attachments")

    @router.get("/{attachment_id}")
    async def get_attachment(attachment_id: int) -> dict[str, int]:
        return {"id": attachment_id}

    router.add_api_websocket_route("/live", _websocket_endpoint)
    bare_app.include_router(router)
    bare_app.add_api_route(f"{API}/extra", get_attachment, methods=["POST"])
    bare_app.router.routes.append(WebSocketRoute(f"{API}/raw-socket", _websocket_endpoint))

    assert differences(walk(bare_app.routes), ROUTES) == [
        f"no row for GET {API}/attachments/{{attachment_id}}",
        f"no row for POST {API}/extra",
        f"no row for WEBSOCKET {API}/attachments/live",
        f"no row for WEBSOCKET {API}/raw-socket",
    ]


def test_the_walk_fails_for_a_row_without_a_route_or_twice(bare_app: FastAPI) -> None:
    ghost = Row("GET", f"{API}/ghosts", "ghosts_list", Rule.CALLER, None, 200)
    rows = [r for r in ROUTES if r.operation_id != "tasks_delete"] + [ghost, ROUTES[0]]
    assert differences(walk(bare_app.routes), rows) == [
        f"no row for DELETE {API}/tasks/{{task_id}}",
        f"row for a route the app lacks: GET {API}/ghosts",
        "two rows for GET /health",
        "operation id operations_health on two rows",
    ]


def test_the_walk_refuses_a_route_kind_it_does_not_know(bare_app: FastAPI) -> None:
    from starlette.routing import BaseRoute

    class Odd(BaseRoute):
        pass

    bare_app.router.routes.append(Odd())
    with pytest.raises(TypeError, match="unknown kind Odd"):
        walk(bare_app.routes)


@pytest.mark.parametrize(
    "row", HTTP_ROUTES, ids=[f"{r.method} {r.operation_id}" for r in HTTP_ROUTES]
)
async def test_every_rows_request_succeeds_for_its_caller(
    client: httpx.AsyncClient, app: FastAPI, row: Row
) -> None:
    assert row.method != WEBSOCKET, "send a WebSocket row's valid connection here"
    world = await seed_world(app)
    call = row.call(world)
    headers = world.headers(row.sent_by) if row.sent_by else {}
    method = "GET" if row.method == MOUNT else row.method
    response = await client.request(
        method, row.url(call), headers=headers, **row.request_kwargs(call)
    )
    assert response.status_code == row.success, (row.operation_id, response.text)
