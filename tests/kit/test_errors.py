"""Every error the framework itself produces is problem+json with the request id."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Path
from pydantic import BaseModel, ConfigDict

from taskmanager.kit.logging import log_formatter
from taskmanager.kit.routing import CheckedRoute
from tests.conftest import AppFactory, problem


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    priority: int = 1


def _add_routes(app: FastAPI) -> None:
    # Built like the domain routers (same route class), so the 415 check applies.
    router = APIRouter(route_class=CheckedRoute)

    @router.post("/api/v1/_test/items", status_code=201)
    async def create_item(payload: Payload) -> Payload:
        return payload

    @router.get("/api/v1/_test/items/{item_id}")
    async def get_item(item_id: Annotated[int, Path(ge=1)]) -> dict[str, int]:
        return {"id": item_id}

    @router.delete("/api/v1/_test/items/{item_id}", status_code=204)
    async def delete_item(item_id: int) -> None:
        return None

    @router.get("/api/v1/_test/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: SELECT password_hash FROM users")

    app.include_router(router)


@pytest.fixture
async def test_client(make_app: AppFactory) -> httpx.AsyncClient:
    app, client = await make_app()
    _add_routes(app)
    return client


async def test_unknown_route_is_404_problem(test_client: httpx.AsyncClient) -> None:
    body = problem(await test_client.get("/api/v1/no/such/thing"), 404, "RESOURCE_NOT_FOUND")
    assert body["request_id"]


async def test_wrong_method_is_405_with_every_allowed_method(
    test_client: httpx.AsyncClient,
) -> None:
    response = await test_client.put("/api/v1/_test/items/3", json={})
    problem(response, 405, "METHOD_NOT_ALLOWED")
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    # Two separate routes share the path; Allow names both, not just the first.
    assert {"GET", "DELETE"} <= allowed


async def test_validation_error_is_422_with_errors(test_client: httpx.AsyncClient) -> None:
    response = await test_client.post("/api/v1/_test/items", json={"priority": "high"})
    body = problem(response, 422, "VALIDATION_ERROR")
    locs = {tuple(err["loc"]) for err in body["errors"]}
    assert ("body", "title") in locs
    assert ("body", "priority") in locs
    assert all({"loc", "msg", "type"} <= err.keys() for err in body["errors"])


async def test_path_validation_error_is_422(test_client: httpx.AsyncClient) -> None:
    body = problem(await test_client.get("/api/v1/_test/items/0"), 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["path", "item_id"]


async def test_malformed_json_is_400(test_client: httpx.AsyncClient) -> None:
    response = await test_client.post(
        "/api/v1/_test/items",
        content=b'{"title": "unterminated',
        headers={"Content-Type": "application/json"},
    )
    problem(response, 400, "MALFORMED_REQUEST")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
async def test_wrong_content_type_is_415(
    test_client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await test_client.post(
        "/api/v1/_test/items", content=b'{"title": "x"}', headers=headers
    )
    problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_json_with_charset_and_vendor_suffix_accepted(
    test_client: httpx.AsyncClient,
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await test_client.post(
            "/api/v1/_test/items", content=b'{"title": "x"}', headers={"Content-Type": content_type}
        )
        assert response.status_code == 201, response.text


async def test_oauth2_login_form_is_not_415(test_client: httpx.AsyncClient) -> None:
    # The login route takes a form; the content-type check must let it through.
    response = await test_client.post(
        "/api/v1/auth/token", data={"username": "nobody", "password": "Wrong-passw0rd"}
    )
    assert response.status_code == 401, response.text
    json_login = await test_client.post(
        "/api/v1/auth/token", json={"username": "nobody", "password": "Wrong-passw0rd"}
    )
    problem(json_login, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_unhandled_exception_is_500_without_internals(
    test_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    response = await test_client.get("/api/v1/_test/boom", headers={"X-Request-ID": "boom-123"})
    body = problem(response, 500, "INTERNAL_ERROR")
    assert body["request_id"] == "boom-123"
    assert response.headers["x-request-id"] == "boom-123"
    assert "secret internals" not in response.text
    assert "RuntimeError" not in response.text
    assert "Traceback" not in response.text
    # The operator finds the full traceback in the log under the same request id.
    formatter = log_formatter()
    assert formatter is not None
    rendered = [formatter.format(record) for record in caplog.records]
    matching = [line for line in rendered if "boom-123" in line and "Traceback" in line]
    assert matching, rendered
    assert "RuntimeError: secret internals" in matching[0]


def test_every_route_with_a_body_checks_its_content_type(base_app: FastAPI) -> None:
    """A router that forgets route_class=CheckedRoute would 422 instead of 415."""
    from fastapi.routing import APIRoute

    def routes(container: Any) -> list[APIRoute]:
        found: list[APIRoute] = []
        for route in getattr(container, "routes", []):
            if isinstance(route, APIRoute):
                found.append(route)
            found.extend(routes(getattr(route, "original_router", None)))
        return found

    with_body = [route for route in routes(base_app.router) if route.body_field is not None]
    assert with_body, "expected routes with request bodies"
    unchecked = [route.path for route in with_body if not isinstance(route, CheckedRoute)]
    assert unchecked == []
