"""Strict inputs: every timestamp is RFC 3339 with an offset, every integer in a path or query
is plain decimal digits, every query parameter is one the operation declares (and sent once
unless repeatable), blank text is blank however it is spelled, and validation errors are
honest and bounded. Each input class is tried on every place it can arrive.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from enum import StrEnum
from typing import Any, Union, get_args, get_origin

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ValidationError

from taskmanager.models.api_keys import ApiKey
from taskmanager.models.tasks import Task
from tests.conftest import TEST_PASSWORD, UserFactory, problem
from tests.factories import API, TASKS, count_rows, database_rows
from tests.route_table import ROUTES, seed_world

# API-key creation asks for the caller's password again (step-up).
STEP_UP = {"current_password": TEST_PASSWORD}

# Number-like and partial forms that must never be read as a time.
NOT_TIMESTAMPS: list[Any] = [
    "1800000000",  # was 2027-01-15 (seconds)
    "20000000000",  # was the year 2603
    "20000000001",  # was 1970 (milliseconds guessed)
    "0.5",
    "1e9",
    "-1",
    "+1800000000",
    1800000000,
    1.5,
    "2026-12-01",  # a date without a time
    "2026-12-01T17:00:00",  # no offset
    "2026-12-01 17:00:00",
    "17:00:00Z",
    "2026-12-01T17:00Z",  # no seconds
    "2026-13-01T17:00:00Z",
    "2026-12-01T17:00:00+25:00",
    "\uff12\uff10\uff12\uff16-12-01T17:00:00Z",  # full-width digits
    "",
    True,
]


def _body_errors(response: httpx.Response) -> list[dict[str, Any]]:
    body = problem(response, 422, "VALIDATION_ERROR")
    errors: list[dict[str, Any]] = body["errors"]
    return errors


@pytest.mark.parametrize("value", NOT_TIMESTAMPS, ids=repr)
async def test_due_date_takes_only_rfc3339(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI, value: Any
) -> None:
    alice = await make_user("alice")
    created = await client.post(TASKS, json={"title": "t"}, headers=alice.headers)
    url = f"{TASKS}/{created.json()['id']}"
    for method, target, body in (
        ("POST", TASKS, {"title": "x", "due_date": value}),
        ("PUT", url, {"title": "x", "due_date": value}),
        ("PATCH", url, {"due_date": value}),
    ):
        errors = _body_errors(
            await client.request(method, target, json=body, headers=alice.headers)
        )
        assert errors[0]["loc"] == ["body", "due_date"]
        assert "2026-12-01T17:00:00Z" in errors[0]["msg"], errors  # the expected form, by example
    assert await count_rows(app, Task) == 1
    assert (await client.get(url, headers=alice.headers)).json()["due_date"] is None


@pytest.mark.parametrize("value", NOT_TIMESTAMPS, ids=repr)
async def test_api_key_expiry_takes_only_rfc3339(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI, value: Any
) -> None:
    alice = await make_user("alice")
    body = {"name": "k", "scopes": ["tasks:read"], "expires_at": value, **STEP_UP}
    errors = _body_errors(await client.post(f"{API}/api-keys", json=body, headers=alice.headers))
    assert errors[0]["loc"] == ["body", "expires_at"]
    assert await count_rows(app, ApiKey) == 0


@pytest.mark.parametrize("value", [v for v in NOT_TIMESTAMPS if isinstance(v, str) and v])
@pytest.mark.parametrize("name", ["due_before", "due_after"])
async def test_query_times_take_only_rfc3339(
    client: httpx.AsyncClient, make_user: UserFactory, name: str, value: str
) -> None:
    alice = await make_user("alice")
    for url in (TASKS, f"{TASKS}/export", f"{API}/projects/{alice.inbox_id}/tasks"):
        errors = _body_errors(await client.get(url, params={name: value}, headers=alice.headers))
        assert errors[0]["loc"] == ["query", name], errors


async def test_messages_say_what_is_wrong_and_show_the_form(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")

    async def message(value: Any) -> str:
        response = await client.post(
            TASKS, json={"title": "x", "due_date": value}, headers=alice.headers
        )
        return str(_body_errors(response)[0]["msg"])

    assert "date without a time" in await message("2026-12-01")
    assert "no offset" in await message("2026-12-01T17:00:00")
    assert "number" in await message("1800000000")
    assert "number" in await message(1800000000)
    # A '+' in a query string is a space once decoded: say so.
    response = await client.get(
        f"{TASKS}?due_before=2026-12-01T18:00:00+01:00", headers=alice.headers
    )
    assert "%2B" in _body_errors(response)[0]["msg"]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2026-12-01T17:00:00Z", "2026-12-01T17:00:00Z"),
        ("2026-12-01t17:00:00z", "2026-12-01T17:00:00Z"),
        ("2026-12-01T18:30:00+01:30", "2026-12-01T17:00:00Z"),
        ("2026-12-01T12:00:00-05:00", "2026-12-01T17:00:00Z"),
        ("2026-12-01T17:00:00.250Z", "2026-12-01T17:00:00.250000Z"),
        ("2026-12-01T17:00:00-00:00", "2026-12-01T17:00:00Z"),
    ],
)
async def test_valid_timestamps_are_stored_in_utc(
    client: httpx.AsyncClient, make_user: UserFactory, sent: str, stored: str
) -> None:
    alice = await make_user("alice")
    response = await client.post(
        TASKS, json={"title": "x", "due_date": sent}, headers=alice.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["due_date"] == stored
    listed = await client.get(TASKS, params={"due_before": sent}, headers=alice.headers)
    assert listed.status_code == 200
    assert listed.json()["total"] == 0  # strictly before itself: none


# ---- integers in paths and queries -----------------------------------------------------------

NOT_CANONICAL = ["1_0", "+5", "05", " 5", "5 ", "5.0", "0x5", "\u0665", "\uff15", "1e1", "-0"]


@pytest.mark.parametrize("raw", NOT_CANONICAL)
async def test_path_ids_are_plain_digits(
    client: httpx.AsyncClient, make_user: UserFactory, raw: str
) -> None:
    alice = await make_user("alice")
    for _ in range(10):  # so that task 10 and task 5 exist
        assert (await client.post(TASKS, json={"title": "t"}, headers=alice.headers)).is_success
    for url in (
        f"{TASKS}/{raw}",
        f"{TASKS}/{raw}/comments",
        f"{API}/projects/{raw}",
        f"{API}/users/{raw}",
    ):
        # Not another spelling of task 10 or 5: no such resource at all.
        body = problem(await client.get(url, headers=alice.headers), 404, "RESOURCE_NOT_FOUND")
        assert "No route matches" in body["detail"], url


async def test_a_word_where_an_id_goes_is_not_that_route(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    # /tasks/export is its own (GET-only) path, not task "export": PUT there is a 405.
    response = await client.put(f"{TASKS}/export", json={"title": "x"}, headers=alice.headers)
    problem(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in response.headers["allow"]


@pytest.mark.parametrize("raw", NOT_CANONICAL)
@pytest.mark.parametrize("name", ["limit", "skip", "priority", "project_id", "assignee_id"])
async def test_query_integers_are_plain_digits(
    client: httpx.AsyncClient, make_user: UserFactory, name: str, raw: str
) -> None:
    alice = await make_user("alice")
    errors = _body_errors(await client.get(TASKS, params={name: raw}, headers=alice.headers))
    assert errors[0]["loc"] == ["query", name]


async def test_canonical_integers_still_work(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    task = (await client.post(TASKS, json={"title": "t"}, headers=alice.headers)).json()
    assert (await client.get(f"{TASKS}/{task['id']}", headers=alice.headers)).status_code == 200
    listed = await client.get(
        TASKS, params={"limit": "5", "skip": "0", "assignee_id": "me"}, headers=alice.headers
    )
    assert listed.status_code == 200, listed.text


# ---- query parameter names -------------------------------------------------------------------


async def test_unknown_query_parameters_are_named(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    response = await client.get(
        f"{TASKS}?stauts=completed&status=pending&colour=red", headers=alice.headers
    )
    errors = _body_errors(response)
    assert [e["loc"] for e in errors] == [["query", "stauts"], ["query", "colour"]]
    assert all(e["type"] == "unknown_parameter" for e in errors)
    assert "status" in errors[0]["msg"]  # the known names are listed
    # On every kind of route, not only lists.
    for url in (f"{API}/users/me", f"{API}/projects/{alice.inbox_id}", "/health"):
        errors = _body_errors(await client.get(url + "?verbose=1", headers=alice.headers))
        assert errors[0]["loc"] == ["query", "verbose"], url


@pytest.mark.parametrize("name", ["q", "sort_by", "order", "limit", "skip", "due_before"])
async def test_repeating_a_single_parameter_is_refused(
    client: httpx.AsyncClient, make_user: UserFactory, name: str
) -> None:
    alice = await make_user("alice")
    values = {
        "q": ("a", "b"),
        "sort_by": ("title", "priority"),
        "order": ("asc", "asc"),
        "limit": ("5", "6"),
        "skip": ("0", "0"),
        "due_before": ("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
    }[name]
    response = await client.get(
        TASKS, params=[(name, value) for value in values], headers=alice.headers
    )
    errors = _body_errors(response)
    assert errors[0]["loc"] == ["query", name]
    assert errors[0]["type"] == "repeated_parameter"


# ---- text ------------------------------------------------------------------------------------

BLANKS = ["", " ", "\u200b", " \u200b\u2060\ufeff ", "\u3164", "\u00a0\t\n", "\U000e0020"]


# The routes whose bodies hold required text: the route table's rows with ``text_fields``.
TEXT_ROWS = [r for r in ROUTES if r.text_fields]


def test_text_rows_cover_every_kind_of_text() -> None:
    named = {(r.operation_id, f) for r in TEXT_ROWS for f in r.text_fields}
    assert {
        ("tasks_create", "title"),
        ("tasks_update", "title"),
        ("tasks_create", "tags"),
        ("projects_create", "name"),
        ("comments_create", "body"),
        ("api_keys_create", "name"),
    } <= named


@pytest.mark.parametrize("blank", BLANKS, ids=repr)
async def test_blank_text_is_blank_however_it_is_spelled(
    client: httpx.AsyncClient, app: FastAPI, blank: str
) -> None:
    world = await seed_world(app)
    before = await database_rows(app)
    for row in TEXT_ROWS:
        call = row.call(world)
        assert call.json is not None, row.operation_id
        assert row.sent_by is not None, row.operation_id
        for field in row.text_fields:
            value: Any = [blank] if field == "tags" else blank  # tags: a list of text
            errors = _body_errors(
                await client.request(
                    row.method,
                    row.url(call),
                    json={**call.json, field: value},
                    headers=world.headers(row.sent_by),
                )
            )
            assert errors[0]["loc"][:2] == ["body", field], (row.operation_id, errors)
            assert errors[0]["msg"] == "must not be blank", errors
    assert await database_rows(app) == before


async def test_text_is_stored_in_nfc_and_limited_on_the_stored_form(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    decomposed = "E\u0301cole"  # É as E + combining acute
    task = await client.post(TASKS, json={"title": decomposed}, headers=alice.headers)
    assert task.json()["title"] == "\u00c9cole"
    # 200 characters sent, but NFC makes each U+FB2C three: over the limit once stored.
    expands = await client.post(TASKS, json={"title": "\ufb2c" * 100}, headers=alice.headers)
    assert _body_errors(expands)[0]["type"] == "string_too_long"
    fits = await client.post(TASKS, json={"title": "\ufb2c" * 66}, headers=alice.headers)
    assert fits.status_code == 201
    assert len(fits.json()["title"]) == 198


async def test_validation_errors_are_capped_at_fifty_with_a_count(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    params = [(f"unknown{i}", "x") for i in range(120)]
    body = problem(
        await client.get(TASKS, params=tuple(params), headers=alice.headers),
        422,
        "VALIDATION_ERROR",
    )
    assert len(body["errors"]) == 50
    assert body["error_count"] == 120
    one = problem(
        await client.post(TASKS, json={"title": ""}, headers=alice.headers), 422, "VALIDATION_ERROR"
    )
    assert one["error_count"] == len(one["errors"]) == 1


async def test_api_key_sent_as_a_bearer_says_where_it_belongs(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice = await make_user("alice")
    key = await client.post(
        f"{API}/api-keys",
        json={"name": "k", "scopes": ["tasks:read"], **STEP_UP},
        headers=alice.headers,
    )
    response = await client.get(TASKS, headers={"Authorization": f"Bearer {key.json()['key']}"})
    body = problem(response, 401, "INVALID_CREDENTIALS")
    assert "send API keys in the X-API-Key header" in body["detail"]
    plain = problem(
        await client.get(TASKS, headers={"Authorization": "Bearer nonsense"}),
        401,
        "INVALID_CREDENTIALS",
    )
    assert "X-API-Key" not in plain["detail"]


UNION_TYPES = (Union, types.UnionType)

# ---- JSON scalar types ----------------------------------------------------------------------

# For each JSON Schema scalar type, values of another JSON type that Pydantic's lax mode would
# coerce (``0`` → ``False``, ``"5"`` → ``5``, ``1.0`` → ``1``): the document says the type, so
# the server takes only that type (schemathesis found ``{"active": 0}`` accepted as ``false``).
WRONG_JSON_TYPES: dict[type, list[Any]] = {
    bool: [0, 1, "true", "false", "yes", 1.0],
    # Not 5.0: JSON Schema counts a zero fraction as an integer (``kit.fields.json_integer``).
    int: ["5", 5.5, True],
    float: ["1.5", True],
    str: [5, 1.5, True],
}


def _scalar_fields(model: type[BaseModel]) -> Iterator[tuple[str, type]]:
    """(field name, scalar type) for each field whose declared type is one JSON scalar."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        members = set(get_args(annotation)) if get_origin(annotation) in UNION_TYPES else None
        candidates = (members - {type(None)}) if members is not None else {annotation}
        if len(candidates) != 1:
            continue
        (candidate,) = candidates
        if candidate in WRONG_JSON_TYPES:
            yield field.alias or name, candidate
        elif isinstance(candidate, type) and issubclass(candidate, StrEnum):
            yield field.alias or name, str


def _request_body_models(app: FastAPI) -> dict[str, type[BaseModel]]:
    models: dict[str, type[BaseModel]] = {}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        body = getattr(route, "body_field", None)
        if isinstance(route, APIRoute) and body is not None:
            model = body.field_info.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):
                models[model.__name__] = model
    return models


def test_every_request_body_takes_each_scalar_only_as_its_json_type(app: FastAPI) -> None:
    models = _request_body_models(app)
    # The walk found the bodies (a change in how routes are stored must not empty it).
    assert {"TaskCreate", "WebhookPatch", "UserAdminUpdate"} <= set(models), sorted(models)
    accepted: list[str] = []
    checked = 0
    for model in models.values():
        for name, kind in _scalar_fields(model):
            for value in WRONG_JSON_TYPES[kind]:
                checked += 1
                try:
                    model.model_validate({name: value})
                except ValidationError as error:
                    if any(e["loc"][:1] == (name,) for e in error.errors()):
                        continue
                accepted.append(f"{model.__name__}.{name} = {value!r} ({kind.__name__})")
    assert checked > 50
    assert not accepted, "\n".join(accepted)


async def test_a_number_is_not_a_boolean_for_a_webhook(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    seed = await seed_world(app)
    url = f"{API}/webhooks/{seed.ids['webhook']}"
    before = (await client.get(url, headers=seed.headers("owner"))).json()
    for value in WRONG_JSON_TYPES[bool]:
        response = await client.patch(url, json={"active": value}, headers=seed.headers("owner"))
        errors = _body_errors(response)
        assert [e["loc"] for e in errors] == [["body", "active"]], errors
    assert (await client.get(url, headers=seed.headers("owner"))).json() == before
