from __future__ import annotations

import httpx

from tests.conftest import TestDatabase, UserFactory, problem


async def test_unknown_route_is_problem(client: httpx.AsyncClient) -> None:
    problem(await client.get("/api/v1/nope"), 404, "RESOURCE_NOT_FOUND")


async def test_user_factory(make_user: UserFactory, database: TestDatabase) -> None:
    user = await make_user("alice")
    assert user.id > 0
    assert user.inbox_id > 0
