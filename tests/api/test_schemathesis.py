"""Property-based conformance: Schemathesis's engine against the real app's own OpenAPI document.

Every phase runs (examples, coverage, fuzzing, and the stateful phase, which chains
operations through the links it infers from ``Location`` headers and response bodies), with
every check, once as a user, once as an API key and once as an administrator: no 5xx, every
status, content type, body and header as documented, schema-invalid requests refused
(negative data) and schema-valid requests accepted (positive data), methods the document
does not list answered 405, no operation that ignores authentication.

"Schema-valid request rejected" is checked by ``accepts_schema_valid_requests``: the built-in
check, except for the few refusals that depend on state no schema can describe — a cursor,
an ``Idempotency-Key`` or a password-reset token the server did not issue for this request,
an assignee who is not a member, an expiry already past, a password the strength rules
refuse, or ``If-Match`` with an ETag that is not current (412, like the 409 the built-in
check already allows). Each is recognised by its documented problem ``code`` or error
``type``, never by a loose status.

Runs on SQLite only: the HTTP contract does not depend on the backend (the backend-specific
behaviour is covered by the SQLite+PostgreSQL suites), and the three runs are the suite's
slowest test on a 2-core machine. Schemathesis drives the app in process (its ASGI
transport, its own event-loop thread); the users are created beforehand through a separate
engine on the same SQLite file.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.engine import from_schema as engine_for
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from taskmanager import migrate
from taskmanager.kit.config import Settings
from taskmanager.kit.db import Database
from taskmanager.kit.security import create_access_token, digest, hash_password
from taskmanager.models.api_keys import ApiKey
from taskmanager.models.users import User
from taskmanager.projects.inbox import create_inbox
from tests.conftest import TEST_PASSWORD, TestDatabase, make_settings
from tests.route_table import HTTP_ROUTES, ROUTES

# Refusals of schema-valid requests that depend on state the schema cannot describe (see the
# module docstring), by the problem ``code`` or by every error's ``type``.
STATE_CODES = frozenset({"IDEMPOTENCY_KEY_REUSED", "PRECONDITION_FAILED"})
STATE_ERROR_TYPES = frozenset(
    # invalid_webhook_target: where a URL leads (DNS, address ranges) is no schema's to say.
    {
        "invalid_cursor",
        "parameter_conflict",
        "not_a_member",
        "invalid_token",
        "invalid_webhook_target",
    }
)
# Field-level rules a schema cannot state: an expiry in the future, password strength.
STATE_FIELD_RULES = frozenset(
    {
        ("expires_at", "not_in_future"),
        ("password", "value_error"),
        ("new_password", "value_error"),
        ("confirm_password", "value_error"),  # equal to new_password: not a schema's to say
    }
)


def _refused_for_state(method: str, query: str, status: int, body: bytes) -> bool:
    if status not in (412, 422):
        return False
    if method == "HEAD":
        # No body to read the problem from: a HEAD with a cursor we did not issue is the one
        # state refusal a HEAD can meet.
        return status == 422 and "cursor=" in query
    try:
        problem = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(problem, dict):
        return False
    if problem.get("code") in STATE_CODES:
        return True
    errors = problem.get("errors") or []
    return bool(errors) and all(
        error.get("type") in STATE_ERROR_TYPES
        or (str(error.get("loc", [""])[-1]), error.get("type")) in STATE_FIELD_RULES
        for error in errors
    )


@schemathesis.check
def accepts_schema_valid_requests(ctx: Any, response: Any, case: Any) -> bool | None:
    """The built-in "schema-valid request rejected" check, minus refusals for state."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except Exception:
        request = response.request
        query = str(request.url).partition("?")[2]
        if _refused_for_state(request.method, query, response.status_code, response.content):
            return None
        raise


# The route table's rows the fuzzer must not call (each row says why: ending every session
# of the fuzzing user would turn every later request into a 401). Logging out with a
# refresh token, deleting the account or changing the password need secrets the fuzzer
# does not have, so they run and are refused.
SELF_DESTRUCTIVE = [row.operation_id for row in HTTP_ROUTES if not row.fuzz]
# The API key fuzzes with every scope a route asks of keys.
KEY_SCOPES = sorted({row.scope.value for row in ROUTES if row.scope is not None})


@dataclass(frozen=True)
class Identity:
    name: str
    headers: dict[str, str]
    max_examples: int


async def _prepare(settings: Settings) -> list[Identity]:
    """A user, an API key of that user (every scope it may hold) and an administrator."""
    database = Database(settings)
    password_hash = await hash_password(TEST_PASSWORD)
    try:
        async with database.side_transaction() as session:
            users = {}
            for username, role in (("fuzzer", "user"), ("root", "admin")):
                user = User(
                    email=f"{username}@example.com",
                    username=username,
                    password_hash=password_hash,
                    role=role,
                    is_active=True,
                )
                session.add(user)
                await session.flush()
                await create_inbox(session, user.id)
                users[username] = user.id
            key = "tm_schemathesis-key-0123456789abcdefghijkl"
            session.add(
                ApiKey(
                    user_id=users["fuzzer"],
                    name="fuzzing",
                    prefix=key[:10],
                    key_hash=digest(key),
                    scopes=KEY_SCOPES,
                )
            )
    finally:
        await database.dispose()

    def bearer(user_id: int) -> dict[str, str]:
        # The longest lifetime the server accepts (a longer one is refused as forged).
        lifetime = timedelta(minutes=settings.access_token_expire_minutes)
        token = create_access_token(user_id, settings.signing_key, lifetime)
        return {"Authorization": f"Bearer {token}"}

    return [
        Identity("user", bearer(users["fuzzer"]), max_examples=6),
        Identity("api-key", {"X-API-Key": key}, max_examples=3),
        # Last: an administrator may deactivate the others' accounts.
        Identity("admin", bearer(users["root"]), max_examples=3),
    ]


@pytest.fixture(scope="module")
async def fuzz_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root: Path = tmp_path_factory.mktemp("schemathesis")
    database = TestDatabase("sqlite", f"sqlite+aiosqlite:///{root / 'fuzz.db'}")
    await migrate.upgrade_async(database.url)
    return make_settings(database, root / "data")


@pytest.fixture(scope="module")
async def identities(fuzz_settings: Settings) -> list[Identity]:
    return await _prepare(fuzz_settings)


@pytest.fixture(scope="module")
def app(fuzz_settings: Settings) -> Iterator[Any]:
    from taskmanager.main import create_app

    yield create_app(fuzz_settings)
    # Closes the app's engines inside Schemathesis's event-loop thread.
    schemathesis_asgi.shutdown_lifespans()


def _run(app: Any, identity: Identity, seen: Counter[str]) -> list[str]:
    config = SchemathesisConfig.from_dict(
        {
            "headers": identity.headers,
            "seed": 20261130,
            "generation": {"max-examples": identity.max_examples},
            "checks": {"positive_data_acceptance": {"enabled": False}},
            "phases": {"stateful": {"max-steps": 12}},
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    operation_ids = {
        operation.get("operationId")
        for item in schema.raw_schema["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict)
    }
    assert set(SELF_DESTRUCTIVE) <= operation_ids, "exclusions of unknown operations"
    # Every documented operation has its row (the route-table walk checks the converse).
    assert operation_ids <= {row.operation_id for row in ROUTES}, "operations without a row"
    fuzzed = schema.exclude(operation_id=SELF_DESTRUCTIVE)
    failures: list[str] = []
    for event in engine_for(fuzzed).execute():
        if isinstance(event, events.ScenarioFinished):
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    seen[f"{interaction.request.method} {interaction.response.status_code}"] += 1
            if event.status != Status.FAILURE:
                continue
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failures.append(
                            f"--- [{identity.name}/{event.phase.value}] {event.recorder.label}: "
                            f"{check.failure_info.failure.title}\n"
                            f"{check.failure_info.failure.message}\n"
                            f"{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            failures.append(f"--- [{identity.name}] error in {event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            failures.append(f"--- [{identity.name}] fatal: {event.exception!r}")
    return failures


# Three full runs of every phase: the suite's longest test (about 12 minutes on a 2-core
# machine); the bound is only there so a hang fails instead of stalling the run.
@pytest.mark.timeout(1500)
def test_api_conforms_to_its_openapi(
    app: Any, identities: list[Identity], fuzz_settings: Settings
) -> None:
    failures: list[str] = []
    seen: Counter[str] = Counter()
    for identity in identities:
        started = time.monotonic()
        failures += _run(app, identity, seen)
        print(f"{identity.name}: {time.monotonic() - started:.0f} s")
    print("\n".join(f"{n:6d}  {label}" for label, n in sorted(seen.items())))
    # Really authenticated, and really reaching rows: plenty of successful writes and reads.
    assert seen["GET 200"] > 100, seen
    assert seen["POST 201"] > 20, seen
    assert seen["PATCH 200"] > 5, seen
    assert seen["DELETE 204"] > 5, seen
    # Generated POSTs carried Idempotency-Keys and their answers were stored.
    assert fuzz_settings.sqlite_path is not None
    with closing(sqlite3.connect(fuzz_settings.sqlite_path)) as db:
        assert db.execute("SELECT count(*) FROM idempotency_records").fetchone()[0] > 0
    unique = list(dict.fromkeys(failures))
    assert not unique, f"{len(unique)} failure(s):\n\n" + "\n\n".join(unique[:40])
