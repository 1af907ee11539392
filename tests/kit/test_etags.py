"""Conditional requests on tasks and projects: header values no column can hold never 500."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TestUser, UserFactory, problem

API = "/api/v1"
HUGE_VERSIONS = ["2147483648", "9999999999", "99999999999999999999"]
HUGE_IDS = ["9223372036854775808", "99999999999999999999999"]


async def _new(client: httpx.AsyncClient, user: TestUser, resource: str) -> tuple[str, str]:
    """Create a task or project; returns its URL and current ETag."""
    body = {"title": "Task"} if resource == "tasks" else {"name": "Project"}
    response = await client.post(f"{API}/{resource}", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    return f"{API}/{resource}/{response.json()['id']}", response.headers["etag"]


def _headers_for(entity_id: str) -> list[str]:
    tags = [f'"{entity_id}-{version}"' for version in HUGE_VERSIONS]
    tags += [f'"{huge}-1"' for huge in HUGE_IDS]
    return [*tags, ", ".join(tags)]


@pytest.mark.parametrize("resource", ["tasks", "projects"])
async def test_if_match_with_out_of_range_numbers_is_412(
    client: httpx.AsyncClient, make_user: UserFactory, resource: str
) -> None:
    alice = await make_user("alice")
    url, current = await _new(client, alice, resource)
    entity_id = url.rsplit("/", 1)[1]
    field = "title" if resource == "tasks" else "name"

    for header in _headers_for(entity_id):
        headers = {**alice.headers, "If-Match": header}
        for response in (
            await client.patch(url, json={field: "changed"}, headers=headers),
            await client.put(url, json={field: "changed"}, headers=headers),
            await client.delete(url, headers=headers),
        ):
            body = problem(response, 412, "PRECONDITION_FAILED")
            assert body["status"] == 412, header

    # Nothing changed: the entity is still there at its first version.
    response = await client.get(url, headers=alice.headers)
    assert response.status_code == 200
    assert response.headers["etag"] == current
    assert response.json()[field] != "changed"


@pytest.mark.parametrize("resource", ["tasks", "projects"])
async def test_if_none_match_with_out_of_range_numbers_is_not_304(
    client: httpx.AsyncClient, make_user: UserFactory, resource: str
) -> None:
    alice = await make_user("alice")
    url, current = await _new(client, alice, resource)
    entity_id = url.rsplit("/", 1)[1]

    for header in _headers_for(entity_id):
        response = await client.get(url, headers={**alice.headers, "If-None-Match": header})
        assert response.status_code == 200, header
        assert response.headers["etag"] == current

    # The current tag among huge ones still matches.
    mixed = f'"{entity_id}-9999999999", {current}'
    response = await client.get(url, headers={**alice.headers, "If-None-Match": mixed})
    assert response.status_code == 304


@pytest.mark.parametrize("resource", ["tasks", "projects"])
async def test_leading_zeros_are_a_different_strong_etag(
    client: httpx.AsyncClient, make_user: UserFactory, resource: str
) -> None:
    alice = await make_user("alice")
    url, current = await _new(client, alice, resource)
    entity_id = url.rsplit("/", 1)[1]
    padded = f'"{entity_id}-01"'
    assert current == f'"{entity_id}-1"'
    problem(
        await client.delete(url, headers={**alice.headers, "If-Match": padded}),
        412,
        "PRECONDITION_FAILED",
    )
    response = await client.delete(url, headers={**alice.headers, "If-Match": current})
    assert response.status_code == 204
