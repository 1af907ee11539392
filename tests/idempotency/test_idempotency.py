"""Idempotency-Key on POST (SQLite and PostgreSQL): replays, scoping, credentials, expiry.

The behaviour is exercised through test-only routes added to a fresh app: one creates a
real row (a project) so "created nothing twice" is counted in the database, and can be held
open on an event so two first requests overlap deterministically. Crashes between commit
and reply, and Redis outages, are in tests/faults/.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update

from taskmanager.idempotency.middleware import KeyedRequest, get_store
from taskmanager.idempotency.openapi import document_idempotency_key
from taskmanager.idempotency.store import IdempotencyStore
from taskmanager.kit import transaction
from taskmanager.kit.db import utcnow
from taskmanager.kit.deps import CurrentPrincipal, SessionDep
from taskmanager.kit.errors import NotFound
from taskmanager.kit.routing import CheckedRoute
from taskmanager.models.api_keys import ApiKey
from taskmanager.models.idempotency import IdempotencyRecord
from taskmanager.models.projects import Project
from taskmanager.models.tasks import Task
from tests.conftest import TEST_PASSWORD, AppFactory, UserFactory, problem
from tests.factories import api_login, create_api_key, deactivate

BASE = "/api/v1/_idem"


class ThingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)


@dataclass
class Probe:
    """What the test routes saw, and a gate to hold a request mid-flight."""

    calls: int = 0
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event | None = None
    fail_next: bool = False


def add_test_routes(app: FastAPI) -> Probe:
    probe = Probe()
    # As every domain router does (kit.http.domain_router): it hands the response to the
    # request's transaction, where the Idempotency-Key record commits with the change.
    app.router.route_class = CheckedRoute

    @app.post(f"{BASE}/things", status_code=201)
    async def create_thing(body: ThingIn, session: SessionDep, response: Response) -> Any:
        probe.calls += 1
        probe.entered.set()
        if probe.gate is not None:
            await probe.gate.wait()
        if probe.fail_next:
            probe.fail_next = False
            raise RuntimeError("boom")
        project = Project(name=body.name)
        session.add(project)
        await session.flush()
        response.headers["Location"] = f"{BASE}/things/{project.id}"
        response.headers["ETag"] = '"1"'
        response.headers["X-Not-Stored"] = "per-request"
        return {"id": project.id, "name": project.name, "call": probe.calls}

    @app.post(f"{BASE}/things/{{thing_id}}/notes", status_code=201)
    async def add_note(thing_id: int) -> Any:
        probe.calls += 1
        return {"thing_id": thing_id, "call": probe.calls}

    @app.post(f"{BASE}/missing")
    async def missing() -> Any:
        probe.calls += 1
        raise NotFound(f"Nothing here (call {probe.calls})")

    @app.post(f"{BASE}/private", status_code=201)
    async def private(principal: CurrentPrincipal) -> Any:
        probe.calls += 1
        return {"user_id": principal.user_id, "call": probe.calls}

    return probe


async def count_projects(app: FastAPI, name: str) -> int:
    async with app.state.database.snapshot() as session:
        return int(
            (
                await session.execute(
                    select(func.count()).select_from(Project).where(Project.name == name)
                )
            ).scalar_one()
        )


async def count_records(app: FastAPI) -> int:
    async with app.state.database.snapshot() as session:
        return int(
            (
                await session.execute(select(func.count()).select_from(IdempotencyRecord))
            ).scalar_one()
        )


def new_key() -> str:
    return f"key-{uuid.uuid4().hex}"


@pytest.fixture
async def idem(make_app: AppFactory) -> tuple[FastAPI, Probe]:
    """A fresh app with the test routes."""
    app, _ = await make_app()
    return app, add_test_routes(app)


def client_for(app: FastAPI, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions),
        base_url="http://testserver",
    )


async def test_retry_replays_the_stored_answer_and_creates_nothing(
    idem: tuple[FastAPI, Probe],
) -> None:
    app, probe = idem
    key = new_key()
    async with client_for(app) as client:
        first = await client.post(
            f"{BASE}/things", json={"name": "once"}, headers={"Idempotency-Key": key}
        )
        second = await client.post(
            f"{BASE}/things", json={"name": "once"}, headers={"Idempotency-Key": key}
        )
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.content == first.content
    assert second.json()["call"] == 1
    for name in ("content-type", "location", "etag"):
        assert second.headers[name] == first.headers[name]
    # Per-request headers are not part of the stored answer.
    assert "x-not-stored" not in second.headers
    assert probe.calls == 1
    assert await count_projects(app, "once") == 1


async def test_same_key_with_a_different_body_is_rejected(idem: tuple[FastAPI, Probe]) -> None:
    app, probe = idem
    key = new_key()
    async with client_for(app) as client:
        first = await client.post(
            f"{BASE}/things", json={"name": "a"}, headers={"Idempotency-Key": key}
        )
        other_body = await client.post(
            f"{BASE}/things", json={"name": "b"}, headers={"Idempotency-Key": key}
        )
        other_query = await client.post(
            f"{BASE}/things?x=1", json={"name": "a"}, headers={"Idempotency-Key": key}
        )
    assert first.status_code == 201
    problem(other_body, 422, "IDEMPOTENCY_KEY_REUSED")
    problem(other_query, 422, "IDEMPOTENCY_KEY_REUSED")
    assert probe.calls == 1
    assert await count_projects(app, "b") == 0


async def test_concurrent_first_requests_run_once(idem: tuple[FastAPI, Probe]) -> None:
    app, probe = idem
    key = new_key()
    probe.gate = asyncio.Event()
    async with client_for(app) as client:

        async def send() -> httpx.Response:
            return await client.post(
                f"{BASE}/things", json={"name": "race"}, headers={"Idempotency-Key": key}
            )

        first = asyncio.create_task(send())
        await asyncio.wait_for(probe.entered.wait(), timeout=10)
        # The first request holds its claim while it waits on the gate.
        second = await send()
        probe.gate.set()
        first_response = await first
        third = await send()
    assert first_response.status_code == 201
    body = problem(second, 409, "CONFLICT")
    assert "still being processed" in body["detail"]
    assert third.status_code == 201
    assert third.headers["idempotent-replayed"] == "true"
    assert third.content == first_response.content
    assert probe.calls == 1
    assert await count_projects(app, "race") == 1


@pytest.mark.postgres_only
async def test_a_request_running_in_another_process_is_409_from_its_first_statement(
    make_app: AppFactory,
) -> None:
    """Two apps stand for two server processes (each has its own in-process set of running
    keys): while the first holds the key's lock — taken by its transaction's first statement
    — the second gets 409, runs nothing, and replays the answer once the first committed."""
    entered, gate = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    def add_route(app: FastAPI, index: int) -> None:
        add_test_routes(app)

        @app.post(f"{BASE}/held", status_code=201)
        async def held(session: SessionDep) -> Any:
            calls.append(f"app {index}")
            session.add(Project(name="held"))
            await session.flush()  # the transaction opens here, and takes the key's lock
            if index == 0:
                entered.set()
                await gate.wait()
            return {"by": index}

    apps = [(await make_app())[0] for _ in range(2)]
    for index, app in enumerate(apps):
        add_route(app, index)

    key = {"Idempotency-Key": new_key()}
    async with client_for(apps[0]) as first_client, client_for(apps[1]) as second_client:
        first = asyncio.create_task(first_client.post(f"{BASE}/held", headers=key))
        await entered.wait()
        second = await second_client.post(f"{BASE}/held", headers=key)
        gate.set()
        first_response = await first
        third = await second_client.post(f"{BASE}/held", headers=key)
    assert first_response.status_code == 201, first_response.text
    assert "still being processed" in problem(second, 409, "CONFLICT")["detail"]
    assert second.headers["retry-after"] == "1"
    assert third.headers["idempotent-replayed"] == "true"
    assert third.json() == {"by": 0}
    assert calls == ["app 0", "app 1"]  # the second stopped at its first statement
    assert await count_projects(apps[0], "held") == 1


async def test_gathered_first_requests_create_one_row(idem: tuple[FastAPI, Probe]) -> None:
    app, _ = idem
    key = new_key()
    async with client_for(app) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{BASE}/things", json={"name": "gather"}, headers={"Idempotency-Key": key}
                )
                for _ in range(5)
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    fresh = [
        r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
    ]
    assert len(fresh) == 1
    assert await count_projects(app, "gather") == 1


async def test_validation_failure_is_not_stored(idem: tuple[FastAPI, Probe]) -> None:
    app, probe = idem
    key = new_key()
    async with client_for(app) as client:
        bad = await client.post(f"{BASE}/things", json={}, headers={"Idempotency-Key": key})
        problem(bad, 422, "VALIDATION_ERROR")
        not_json = await client.post(
            f"{BASE}/things",
            content=b"{nope",
            headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        )
        problem(not_json, 400, "MALFORMED_REQUEST")
        fixed = await client.post(
            f"{BASE}/things", json={"name": "fixed"}, headers={"Idempotency-Key": key}
        )
    assert fixed.status_code == 201
    assert "idempotent-replayed" not in fixed.headers
    assert probe.calls == 1
    assert await count_projects(app, "fixed") == 1


async def test_final_client_errors_are_replayed(idem: tuple[FastAPI, Probe]) -> None:
    app, probe = idem
    key = new_key()
    async with client_for(app) as client:
        first = await client.post(f"{BASE}/missing", headers={"Idempotency-Key": key})
        second = await client.post(f"{BASE}/missing", headers={"Idempotency-Key": key})
    problem(first, 404, "RESOURCE_NOT_FOUND")
    problem(second, 404, "RESOURCE_NOT_FOUND")
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert probe.calls == 1


async def test_server_error_releases_the_key(idem: tuple[FastAPI, Probe]) -> None:
    app, probe = idem
    key = new_key()
    probe.fail_next = True
    async with client_for(app, raise_app_exceptions=False) as client:
        failed = await client.post(
            f"{BASE}/things", json={"name": "retry"}, headers={"Idempotency-Key": key}
        )
        retried = await client.post(
            f"{BASE}/things", json={"name": "retry"}, headers={"Idempotency-Key": key}
        )
    problem(failed, 500, "INTERNAL_ERROR")
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert probe.calls == 2
    assert await count_projects(app, "retry") == 1


async def test_unauthenticated_answer_is_not_stored(
    idem: tuple[FastAPI, Probe], make_user: UserFactory
) -> None:
    app, probe = idem
    key = new_key()
    user = await make_user()
    async with client_for(app) as client:
        bad = await client.post(
            f"{BASE}/private", headers={"Idempotency-Key": key, "Authorization": "Bearer nope"}
        )
        anonymous = await client.post(f"{BASE}/private", headers={"Idempotency-Key": key})
        good = await client.post(
            f"{BASE}/private", headers={"Idempotency-Key": key, **user.headers}
        )
        again = await client.post(
            f"{BASE}/private", headers={"Idempotency-Key": key, **user.headers}
        )
    problem(bad, 401, "INVALID_CREDENTIALS")
    problem(anonymous, 401, "NOT_AUTHENTICATED")
    assert good.status_code == 201
    assert good.json()["user_id"] == user.id
    assert again.headers["idempotent-replayed"] == "true"
    assert probe.calls == 1


async def test_keys_are_scoped_to_the_caller(
    idem: tuple[FastAPI, Probe], make_user: UserFactory
) -> None:
    app, probe = idem
    key = new_key()
    alice, bob = await make_user(), await make_user()
    alice_key = await create_api_key(app, alice, ["projects:write"])
    callers: list[dict[str, str]] = [alice.headers, bob.headers, alice_key, {}]
    async with client_for(app) as client:
        firsts = [
            await client.post(
                f"{BASE}/things", json={"name": "mine"}, headers={"Idempotency-Key": key, **h}
            )
            for h in callers
        ]
        repeats = [
            await client.post(
                f"{BASE}/things", json={"name": "mine"}, headers={"Idempotency-Key": key, **h}
            )
            for h in callers
        ]
    assert [r.status_code for r in firsts] == [201] * len(callers)
    assert not any("idempotent-replayed" in r.headers for r in firsts)
    assert len({r.json()["id"] for r in firsts}) == len(callers)
    for first, repeat in zip(firsts, repeats, strict=True):
        assert repeat.headers["idempotent-replayed"] == "true"
        assert repeat.json() == first.json()
    assert probe.calls == len(callers)
    assert await count_projects(app, "mine") == len(callers)


async def test_keys_are_scoped_to_the_route(idem: tuple[FastAPI, Probe]) -> None:
    app, probe = idem
    key = new_key()
    async with client_for(app) as client:
        five = await client.post(f"{BASE}/things/5/notes", headers={"Idempotency-Key": key})
        six = await client.post(f"{BASE}/things/6/notes", headers={"Idempotency-Key": key})
        five_again = await client.post(f"{BASE}/things/5/notes", headers={"Idempotency-Key": key})
    assert five.json() == {"thing_id": 5, "call": 1}
    assert six.json() == {"thing_id": 6, "call": 2}
    assert "idempotent-replayed" not in six.headers
    assert five_again.json() == {"thing_id": 5, "call": 1}
    assert probe.calls == 2


@pytest.mark.parametrize(
    "value",
    ["x" * 256, "", "has space", "caf\u00e9"],
    ids=["too-long", "empty", "space", "non-ascii"],
)
async def test_invalid_keys_are_rejected(idem: tuple[FastAPI, Probe], value: str) -> None:
    app, probe = idem
    async with client_for(app) as client:
        response = await client.post(
            f"{BASE}/things",
            json={"name": "k"},
            headers=[(b"Idempotency-Key", value.encode("utf-8"))],
        )
    body = problem(response, 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert probe.calls == 0


async def test_two_key_headers_are_rejected(idem: tuple[FastAPI, Probe]) -> None:
    app, probe = idem
    async with client_for(app) as client:
        response = await client.post(
            f"{BASE}/things",
            json={"name": "k"},
            headers=[("Idempotency-Key", "one"), ("Idempotency-Key", "two")],
        )
    problem(response, 422, "VALIDATION_ERROR")
    assert probe.calls == 0


async def test_longest_key_is_accepted(idem: tuple[FastAPI, Probe]) -> None:
    app, _ = idem
    key = ("k" + uuid.uuid4().hex) * 8
    key = (key + "!" * 255)[:255]
    async with client_for(app) as client:
        first = await client.post(
            f"{BASE}/things", json={"name": "long"}, headers={"Idempotency-Key": key}
        )
        second = await client.post(
            f"{BASE}/things", json={"name": "long"}, headers={"Idempotency-Key": key}
        )
    assert first.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"


async def test_without_a_key_every_post_runs(idem: tuple[FastAPI, Probe]) -> None:
    app, probe = idem
    async with client_for(app) as client:
        for _ in range(2):
            response = await client.post(f"{BASE}/things", json={"name": "plain"})
            assert response.status_code == 201
            assert "idempotent-replayed" not in response.headers
    assert probe.calls == 2
    assert await count_projects(app, "plain") == 2


# --- database store specifics --------------------------------------------------------


async def test_expired_record_frees_the_key(make_app: AppFactory) -> None:
    app, client = await make_app()
    probe = add_test_routes(app)
    key = new_key()
    first = await client.post(
        f"{BASE}/things", json={"name": "exp"}, headers={"Idempotency-Key": key}
    )
    assert first.status_code == 201
    async with app.state.database.side_transaction() as session:
        record = (await session.execute(select(IdempotencyRecord))).scalar_one()
        assert record.status_code == 201
        assert record.expires_at > utcnow() + timedelta(hours=23)
        await session.execute(
            update(IdempotencyRecord).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    again = await client.post(
        f"{BASE}/things", json={"name": "exp"}, headers={"Idempotency-Key": key}
    )
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert probe.calls == 2
    assert await count_projects(app, "exp") == 2
    assert await count_records(app) == 1


async def test_nothing_is_recorded_until_the_change_commits(make_app: AppFactory) -> None:
    """No claim row: the record appears with the change, in the same transaction."""
    app, client = await make_app()
    probe = add_test_routes(app)
    probe.gate = asyncio.Event()
    key = new_key()
    task = asyncio.create_task(
        client.post(f"{BASE}/things", json={"name": "tx"}, headers={"Idempotency-Key": key})
    )
    await asyncio.wait_for(probe.entered.wait(), timeout=10)
    assert await count_records(app) == 0
    probe.gate.set()
    assert (await task).status_code == 201
    async with app.state.database.snapshot() as session:
        stored = (await session.execute(select(IdempotencyRecord))).scalar_one()
    assert stored.status_code == 201
    assert stored.expires_at > utcnow() + timedelta(hours=23)
    assert await count_projects(app, "tx") == 1


async def test_a_failed_commit_leaves_neither_change_nor_record(make_app: AppFactory) -> None:
    """The record is part of the request's transaction: an error there undoes both."""
    app, client = await make_app()
    add_test_routes(app)
    key = new_key()
    # A row without an answer (what an earlier version's unfinished claim left behind) makes
    # the record's insert fail at commit; the project the request added must go with it.
    async with app.state.database.side_transaction() as session:
        session.add(
            IdempotencyRecord(
                caller="ip:127.0.0.1",
                route=f"POST {BASE}/things",
                key=key,
                request_hash="0" * 64,
                status_code=None,
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
    response = await client.post(
        f"{BASE}/things", json={"name": "undone"}, headers={"Idempotency-Key": key}
    )
    problem(response, 409, "CONFLICT")
    assert await count_projects(app, "undone") == 0


async def test_expired_records_are_purged(make_app: AppFactory) -> None:
    app, client = await make_app()
    add_test_routes(app)
    past = utcnow() - timedelta(minutes=1)
    async with app.state.database.side_transaction() as session:
        for i in range(3):
            session.add(
                IdempotencyRecord(
                    caller="user:1",
                    route="POST /api/v1/tasks",
                    key=f"old-{i}",
                    request_hash="0" * 64,
                    status_code=201,
                    response_headers=[],
                    response_body=b"{}",
                    expires_at=past,
                )
            )
        await session.commit()
    store = get_store(app)
    assert isinstance(store, IdempotencyStore)
    response = await client.post(
        f"{BASE}/things", json={"name": "purge"}, headers={"Idempotency-Key": new_key()}
    )
    assert response.status_code == 201
    # Only the live record is left: the first request after start-up purged the rest.
    assert await count_records(app) == 1
    # ...and the next purge waits for the interval instead of running on every request.
    async with app.state.database.side_transaction() as session:
        session.add(
            IdempotencyRecord(
                caller="user:1",
                route="POST /api/v1/tasks",
                key="old-later",
                request_hash="0" * 64,
                expires_at=past,
            )
        )
        await session.commit()
    await client.post(
        f"{BASE}/things", json={"name": "purge"}, headers={"Idempotency-Key": new_key()}
    )
    assert await count_records(app) == 3
    assert await store.purge_expired() == 1


# --- a real route ----------------------------------------------------------------------


async def test_real_task_creation_is_idempotent(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    alice, bob = await make_user(), await make_user()
    key = new_key()
    body = {"title": "Pay the invoice"}

    async def create(user_headers: dict[str, str], json: dict[str, Any]) -> httpx.Response:
        return await client.post(
            "/api/v1/tasks", json=json, headers={"Idempotency-Key": key, **user_headers}
        )

    first = await create(alice.headers, body)
    assert first.status_code == 201, first.text
    retry = await create(alice.headers, body)
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    assert retry.headers.get("location") == first.headers.get("location")
    problem(await create(alice.headers, {"title": "Something else"}), 422, "IDEMPOTENCY_KEY_REUSED")
    # Bob's identical key is his own.
    theirs = await create(bob.headers, body)
    assert theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != first.json()["id"]

    async with app.state.database.snapshot() as session:
        titles = (
            await session.execute(
                select(func.count()).select_from(Task).where(Task.title == body["title"])
            )
        ).scalar_one()
    assert titles == 2


async def test_openapi_helper_documents_the_header(app: FastAPI) -> None:
    schema = document_idempotency_key(app.openapi())
    operation = schema["paths"]["/api/v1/tasks"]["post"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert parameter["in"] == "header"
    assert parameter["schema"]["maxLength"] == 255
    assert {"409", "422"} <= set(operation["responses"])
    assert "Idempotency-Key" not in str(schema["paths"]["/api/v1/tasks"]["get"])
    # Applying it twice changes nothing.
    once = copy.deepcopy(schema)
    assert document_idempotency_key(schema) == once


# --- credentials are never stored; replays need a credential valid now ---------------------


async def _all_record_bytes(app: FastAPI) -> bytes:
    async with app.state.database.snapshot() as session:
        rows = (await session.execute(select(IdempotencyRecord))).scalars().all()
    return b"".join(
        (r.response_body or b"") + repr(r.response_headers).encode() + r.key.encode() for r in rows
    )


async def test_refresh_with_a_key_is_not_replayed_and_reuse_revokes_the_family(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user()
    login = await api_login(client, user.username)
    key = new_key()
    body = {"refresh_token": login["refresh_token"]}
    first = await client.post("/api/v1/auth/refresh", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"].startswith("no-store")
    again = await client.post("/api/v1/auth/refresh", json=body, headers={"Idempotency-Key": key})
    # Not a replay of the live pair: the spent token is re-use, refused...
    problem(again, 401, "INVALID_CREDENTIALS")
    assert "idempotent-replayed" not in again.headers
    # ...and the whole family is revoked, including the pair the first call handed out.
    newest = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first.json()["refresh_token"]}
    )
    problem(newest, 401, "INVALID_CREDENTIALS")
    assert await count_records(app) == 0


async def test_no_token_or_key_is_ever_stored(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    user = await make_user()
    login = await client.post(
        "/api/v1/auth/token",
        data={"username": user.username, "password": TEST_PASSWORD},
        headers={"Idempotency-Key": new_key()},
    )
    assert login.status_code == 200
    created = await client.post(
        "/api/v1/api-keys",
        json={"name": "ci", "scopes": ["tasks:read"], "current_password": TEST_PASSWORD},
        headers={"Idempotency-Key": new_key(), **user.headers},
    )
    assert created.status_code == 201, created.text
    key_again = await client.post(
        "/api/v1/api-keys",
        json={"name": "ci", "scopes": ["tasks:read"], "current_password": TEST_PASSWORD},
        headers={"Idempotency-Key": created.request.headers["idempotency-key"], **user.headers},
    )
    # Runs again under the normal rules: a second key, not the first one's secret.
    assert key_again.status_code == 201
    assert "idempotent-replayed" not in key_again.headers
    assert key_again.json()["key"] != created.json()["key"]
    stored = await _all_record_bytes(app)
    for secret in (
        login.json()["access_token"],
        login.json()["refresh_token"],
        created.json()["key"],
        key_again.json()["key"],
    ):
        assert secret.encode() not in stored
    assert await count_records(app) == 0


async def test_replay_keeps_location_etag_and_caching_headers(
    idem: tuple[FastAPI, Probe],
) -> None:
    app, _ = idem

    @app.post(f"{BASE}/cached", status_code=201)
    async def cached(session: SessionDep, response: Response) -> Any:
        project = Project(name="cached")
        session.add(project)
        await session.flush()
        response.headers["Location"] = f"{BASE}/things/{project.id}"
        response.headers["ETag"] = '"7"'
        response.headers["Cache-Control"] = "private, max-age=60"
        response.headers["Vary"] = "Authorization"
        return {"id": project.id}

    key = new_key()
    async with client_for(app) as client:
        first = await client.post(f"{BASE}/cached", headers={"Idempotency-Key": key})
        again = await client.post(f"{BASE}/cached", headers={"Idempotency-Key": key})
    assert first.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    for name in ("location", "etag", "cache-control"):
        assert again.headers[name] == first.headers[name]
    assert "Authorization" in again.headers["vary"]
    assert await count_projects(app, "cached") == 1


async def test_replay_is_refused_to_a_credential_no_longer_valid(
    idem: tuple[FastAPI, Probe], make_user: UserFactory
) -> None:
    app, probe = idem
    owner, other = await make_user(), await make_user()
    key_headers = await create_api_key(app, owner, ["projects:write"])
    key = new_key()
    async with client_for(app) as client:
        by_key = await client.post(
            f"{BASE}/private", headers={"Idempotency-Key": key, **key_headers}
        )
        by_token = await client.post(
            f"{BASE}/private", headers={"Idempotency-Key": key, **other.headers}
        )
        assert by_key.status_code == 201
        assert by_token.status_code == 201
        async with app.state.database.side_transaction() as session:
            await session.execute(update(ApiKey).values(revoked_at=utcnow()))
        await deactivate(app, other)
        revoked = await client.post(
            f"{BASE}/private", headers={"Idempotency-Key": key, **key_headers}
        )
        deactivated = await client.post(
            f"{BASE}/private", headers={"Idempotency-Key": key, **other.headers}
        )
    problem(revoked, 401, "INVALID_CREDENTIALS")
    problem(deactivated, 401, "INVALID_CREDENTIALS")
    assert "idempotent-replayed" not in revoked.headers
    assert probe.calls == 2


async def test_keyed_upload_is_hashed_as_it_streams(idem: tuple[FastAPI, Probe]) -> None:
    """A chunked body is fingerprinted chunk by chunk; a different last chunk is a new body."""
    app, _ = idem
    key = new_key()

    async def chunks(last: bytes) -> Any:
        yield b'{"name": "'
        for _ in range(50):
            yield b"x"
        yield last + b'"}'

    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    async with client_for(app) as client:
        first = await client.post(f"{BASE}/things", content=chunks(b"a"), headers=headers)
        same = await client.post(f"{BASE}/things", content=chunks(b"a"), headers=headers)
        other = await client.post(f"{BASE}/things", content=chunks(b"b"), headers=headers)
    assert first.status_code == 201, first.text
    assert same.headers["idempotent-replayed"] == "true"
    problem(other, 422, "IDEMPOTENCY_KEY_REUSED")


async def test_a_request_that_loses_the_race_is_rolled_back_and_replays(
    idem: tuple[FastAPI, Probe],
) -> None:
    """Another process commits the same key while this request runs (as a second server on
    SQLite can, its retry waiting for the one writer): the check made just before the commit
    rolls this request's change back and replays the winner's answer."""
    app, _ = idem

    @app.post(f"{BASE}/raced", status_code=201)
    async def raced(request: Request, session: SessionDep) -> Any:
        hook = transaction.hook_of(request.scope)
        assert isinstance(hook, KeyedRequest)
        async with app.state.database.side_transaction() as other:  # the winner commits
            other.add(
                IdempotencyRecord(
                    caller=hook.key_scope.caller,
                    route=hook.key_scope.route,
                    key=hook.key_scope.key,
                    request_hash=await hook.fingerprint.finish(),
                    status_code=201,
                    response_headers=[["content-type", "application/json"]],
                    response_body=b'{"winner":true}',
                    expires_at=utcnow() + timedelta(hours=24),
                )
            )
        session.add(Project(name="loser"))
        await session.flush()
        return {"winner": False}

    async with client_for(app) as client:
        response = await client.post(f"{BASE}/raced", headers={"Idempotency-Key": new_key()})
    assert response.status_code == 201
    assert response.json() == {"winner": True}
    assert response.headers["idempotent-replayed"] == "true"
    assert await count_projects(app, "loser") == 0
