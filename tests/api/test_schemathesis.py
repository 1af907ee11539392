"""Property-based conformance: Schemathesis against the real app's own OpenAPI document.

Every operation gets generated requests (as an authenticated user) and every response must
be documented: no 5xx, status code, content type, body schema and headers as the OpenAPI
says. Runs on SQLite only: the point is the HTTP contract, which does not depend on the
backend (the backend-specific behaviour is covered by the SQLite+PostgreSQL suites), and
a second run would double the suite's slowest test on a 2-core machine.

Schemathesis drives the app through its own ASGI client in its own event-loop thread, so
the app here is a dedicated instance whose lifespan Schemathesis starts; the database and
the user are prepared beforehand with a separate engine on the same SQLite file.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from taskmanager import migrate
from taskmanager.idempotency.openapi import document_idempotency_key
from taskmanager.kit.config import Settings
from taskmanager.kit.db import Database
from taskmanager.kit.security import create_access_token, hash_password
from taskmanager.models.users import User
from taskmanager.projects.inbox import create_inbox
from tests.conftest import TEST_PASSWORD, TestDatabase, make_settings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

# Positive data must be accepted (or refused with a documented 4xx), negative data refused
# with a documented 4xx; neither may ever produce a 5xx.
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]

# Operations that would end the fuzzing user's own session: running them would turn every
# later operation into a 401 and hide real findings. Their behaviour is covered by the
# auth/users test suites. Each must exist (asserted below), so the list cannot go stale.
SELF_DESTRUCTIVE = ["auth_logout", "auth_logout_all", "users_change_password", "users_delete_me"]


@dataclass
class Fuzzer:
    user_id: int
    headers: dict[str, str]
    # Ids of resources the fuzzer owns, by path-parameter name (see _seed).
    known_ids: dict[str, int] = field(default_factory=dict)


async def _prepare(settings: Settings) -> int:
    """Create the fuzzing user (with Inbox) through a short-lived engine of our own."""
    database = Database(settings)
    try:
        async with database.side_transaction() as session:
            user = User(
                email="fuzzer@example.com",
                username="fuzzer",
                password_hash=await hash_password(TEST_PASSWORD),
                role="user",
                is_active=True,
            )
            session.add(user)
            await session.flush()
            await create_inbox(session, user.id)
            await session.commit()
            return user.id
    finally:
        await database.dispose()


@pytest.fixture(scope="module")
async def fuzz_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root: Path = tmp_path_factory.mktemp("schemathesis")
    database = TestDatabase("sqlite", f"sqlite+aiosqlite:///{root / 'fuzz.db'}")
    await migrate.upgrade_async(database.url)
    return make_settings(database, root / "data")


@pytest.fixture(scope="module")
async def fuzzer(fuzz_settings: Settings) -> Fuzzer:
    user_id = await _prepare(fuzz_settings)
    # The longest lifetime the server accepts (a longer one is refused as forged).
    lifetime = timedelta(minutes=fuzz_settings.access_token_expire_minutes)
    token = create_access_token(user_id, fuzz_settings.signing_key, lifetime)
    return Fuzzer(user_id, {"Authorization": f"Bearer {token}"})


def _seed(app: Any, fuzzer: Fuzzer) -> None:
    """Create one resource of each kind through the API, so generated requests can hit
    existing rows (random ids almost only ever find 404s)."""
    base = f"http://{schemathesis_asgi.HOST}/api/v1"
    with schemathesis_asgi.get_client(app) as client:

        def create(path: str, body: dict[str, Any]) -> int:
            response = client.post(f"{base}{path}", json=body, headers=fuzzer.headers)
            assert response.status_code == 201, (path, response.status_code, response.text)
            return int(response.json()["id"])

        project_id = create("/projects", {"name": "Fuzzed project"})
        task_id = create("/tasks", {"title": "Fuzzed task", "project_id": project_id})
        fuzzer.known_ids.update(
            project_id=project_id,
            task_id=task_id,
            comment_id=create(f"/tasks/{task_id}/comments", {"body": "Fuzzed comment"}),
            key_id=create(
                "/api-keys",
                {"name": "fuzzed", "scopes": ["tasks:read"], "current_password": TEST_PASSWORD},
            ),
            user_id=fuzzer.user_id,
        )


def _operation_ids(document: dict[str, Any]) -> set[str]:
    return {
        operation["operationId"]
        for path_item in document["paths"].values()
        for operation in path_item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }


@pytest.fixture(scope="module")
def api_schema(fuzz_settings: Settings, fuzzer: Fuzzer) -> Iterator[schemathesis.BaseSchema]:
    from taskmanager.main import create_app

    app = create_app(fuzz_settings)
    # The served document plus the Idempotency-Key header on every POST (a no-op once the
    # app documents it itself), so the fuzzer exercises the idempotency middleware too.
    document = document_idempotency_key(app.openapi())
    assert set(SELF_DESTRUCTIVE) <= _operation_ids(document), "exclusions of unknown operations"
    schema = schemathesis.openapi.from_dict(document)
    schema.app = app
    _seed(app, fuzzer)
    yield schema.exclude(operation_id=SELF_DESTRUCTIVE)
    # Closes the app's engines inside Schemathesis's event-loop thread.
    schemathesis_asgi.shutdown_lifespans()


FUZZ_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


def _fuzz(
    operation: APIOperation,
    mode: GenerationMode,
    fuzzer: Fuzzer,
    seen: Counter[str],
    path_parameters: dict[str, Any] | None = None,
) -> None:
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @FUZZ_SETTINGS
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        # A copy: the client adds its own headers to the dict it is given.
        response = case.call_and_validate(headers=dict(fuzzer.headers), checks=CHECKS)
        seen[f"{operation.label} {response.status_code}"] += 1

    try:
        run()
    except Unsatisfiable:
        # Nothing left to make invalid (no free parameters, no body).
        if mode is not GenerationMode.NEGATIVE:
            raise


def _plan(
    schema: schemathesis.BaseSchema, fuzzer: Fuzzer
) -> list[tuple[APIOperation, GenerationMode, dict[str, Any] | None]]:
    """Every operation in both modes, then again on the seeded rows; DELETEs of seeded rows
    last, so the other operations still find them."""
    free: list[tuple[APIOperation, GenerationMode, dict[str, Any] | None]] = []
    seeded = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"invalid operation in the OpenAPI document: {result.err()}")
        operation = result.ok()
        for mode in MODES:
            free.append((operation, mode, None))
        names = re.findall(r"{(\w+)}", operation.path)
        if names and all(name in fuzzer.known_ids for name in names):
            fixed = {name: fuzzer.known_ids[name] for name in names}
            seeded.append((operation, GenerationMode.POSITIVE, fixed))
    # Children before parents: deleting a project takes its tasks and comments with it.
    seeded.sort(
        key=lambda item: (
            item[0].method.upper() == "DELETE",
            -len(item[2] or {}),
            "/projects/" in item[0].path,
        )
    )
    return free + seeded


def test_api_conforms_to_its_openapi(
    api_schema: schemathesis.BaseSchema, fuzzer: Fuzzer, fuzz_settings: Settings
) -> None:
    # Schemathesis's own pytest integration (`from_fixture`) does not run on pytest 9 yet
    # (it writes a private node attribute that no longer exists), so Hypothesis is driven
    # per operation here and every failure is collected into one report.
    failures: list[str] = []
    seen: Counter[str] = Counter()
    plan = _plan(api_schema, fuzzer)
    for operation, mode, fixed in plan:
        try:
            _fuzz(operation, mode, fuzzer, seen, fixed)
        except Exception as exc:
            where = f" with {fixed}" if fixed else ""
            failures.append(f"--- {operation.label} [{mode.value}{where}]\n{exc}")
    print("\n".join(f"{n:4d}  {label}" for label, n in sorted(seen.items())))
    assert plan
    # The fuzzing user really is authenticated, and the seeded rows are really found.
    ok = {label for label, n in seen.items() if label.endswith((" 200", " 201", " 204"))}
    assert len(ok) > 20, sorted(ok)
    # Generated POSTs carried Idempotency-Keys and their answers were stored.
    assert fuzz_settings.sqlite_path is not None
    with closing(sqlite3.connect(fuzz_settings.sqlite_path)) as db:
        assert db.execute("SELECT count(*) FROM idempotency_records").fetchone()[0] > 0
    assert not failures, f"{len(failures)} failing run(s):\n\n" + "\n\n".join(failures)
