"""The OpenAPI document is a product: walk it and hold every operation to the same bar."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest

PROBLEM_REF = "#/components/schemas/Problem"
METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


@pytest.fixture
async def schema(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        node = schema["components"]["schemas"][name]
    return node


async def test_problem_schema_is_a_component(schema: dict[str, Any]) -> None:
    problem = schema["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"]) | set(
        problem["properties"]
    )
    assert "request_id" in problem["properties"]
    assert "errors" in problem["properties"]


async def test_api_operations_are_documented(schema: dict[str, Any]) -> None:
    operations = [op for op in _operations(schema) if op[0].startswith("/api/v1")]
    assert operations, "no /api/v1 operations documented"
    seen_ids: dict[str, str] = {}
    problems: list[str] = []
    for path, method, operation in operations:
        where = f"{method.upper()} {path}"
        operation_id = operation.get("operationId")
        if not operation_id:
            problems.append(f"{where}: no operationId")
        elif operation_id in seen_ids:
            problems.append(f"{where}: operationId {operation_id} also on {seen_ids[operation_id]}")
        else:
            seen_ids[operation_id] = where
        if not operation.get("summary"):
            problems.append(f"{where}: no summary")
        if not operation.get("tags"):
            problems.append(f"{where}: no tags")
        if operation.get("security") and "401" not in operation.get("responses", {}):
            problems.append(f"{where}: needs auth but does not document 401")
    assert not problems, "\n".join(problems)


async def test_every_error_response_is_a_problem(schema: dict[str, Any]) -> None:
    problems: list[str] = []
    for path, method, operation in _operations(schema):
        for status, response in operation.get("responses", {}).items():
            if status[:1] not in {"4", "5"}:
                continue
            if method == "head":
                if "content" in response:
                    problems.append(f"HEAD {path} {status}: documents a body")
                continue
            content = response.get("content", {})
            entry = content.get("application/problem+json")
            if entry is None or entry.get("schema", {}).get("$ref") != PROBLEM_REF:
                if path == "/ready" and status == "503":
                    continue  # readiness has its own documented shape
                problems.append(f"{method.upper()} {path} {status}: {sorted(content)}")
            if "application/json" in content:
                problems.append(f"{method.upper()} {path} {status}: also application/json")
    assert not problems, "\n".join(problems)
    assert "HTTPValidationError" not in schema["components"]["schemas"]


async def test_json_request_bodies_have_examples(schema: dict[str, Any]) -> None:
    problems: list[str] = []
    for path, method, operation in _operations(schema):
        body = operation.get("requestBody")
        if not body:
            continue
        for media_type, entry in body.get("content", {}).items():
            if "json" not in media_type:
                continue
            if "example" in entry or "examples" in entry:
                continue
            resolved = _resolve(schema, entry.get("schema", {}))
            if "example" in resolved or resolved.get("examples"):
                continue
            problems.append(f"{method.upper()} {path}: {media_type} body has no example")
    assert not problems, "\n".join(problems)


async def test_ops_endpoints_documented_outside_the_api(schema: dict[str, Any]) -> None:
    assert "/health" in schema["paths"]
    assert "/ready" in schema["paths"]
    assert "503" in schema["paths"]["/ready"]["get"]["responses"]
    assert not any(path.startswith("/docs") for path in schema["paths"])


# ---- exactness: what a validator and a client generator rely on ----------------------------


async def test_the_served_document_validates(schema: dict[str, Any]) -> None:
    from openapi_spec_validator import validate

    validate(schema)  # raises with the first error


async def test_every_header_has_a_schema(schema: dict[str, Any]) -> None:
    missing = []
    for path, method, operation in _operations(schema):
        for status, response in operation.get("responses", {}).items():
            for name, header in response.get("headers", {}).items():
                if "schema" not in header and "content" not in header:
                    missing.append(f"{method.upper()} {path} {status} {name}")
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "header" and "schema" not in parameter:
                missing.append(f"{method.upper()} {path} parameter {parameter['name']}")
    assert missing == []


async def test_every_get_has_a_head_without_a_body(schema: dict[str, Any]) -> None:
    for path, item in schema["paths"].items():
        if "get" not in item:
            continue
        head = item.get("head")
        assert head is not None, path
        assert head["operationId"] == item["get"]["operationId"] + "_head"
        for status, response in head["responses"].items():
            assert "content" not in response, (path, status)


async def test_parameters_are_never_null(schema: dict[str, Any]) -> None:
    for path, method, operation in _operations(schema):
        for parameter in operation.get("parameters", []):
            assert "null" not in repr(parameter["schema"]), (method, path, parameter)


async def test_patch_bodies_refuse_null_and_empty(schema: dict[str, Any]) -> None:
    patches = 0
    for path, item in schema["paths"].items():
        operation = item.get("patch")
        if operation is None or "requestBody" not in operation:
            continue
        body = _resolve(schema, operation["requestBody"]["content"]["application/json"]["schema"])
        # {} is refused: said by minProperties, or by a required field.
        assert body.get("minProperties") == 1 or body.get("required"), path
        patches += 1
    assert patches >= 5
    # A step-up password is required but is no change: one more property than that.
    assert schema["components"]["schemas"]["UserUpdateMe"]["minProperties"] == 2
    task_patch = schema["components"]["schemas"]["TaskPatch"]["properties"]
    assert "anyOf" not in task_patch["title"]  # null is refused: not in the schema
    assert {"type": "null"} in task_patch["description"]["anyOf"]  # null clears it


async def test_identity_and_text_rules_are_in_the_schema(schema: dict[str, Any]) -> None:
    schemas = schema["components"]["schemas"]
    username = schemas["UserCreate"]["properties"]["username"]
    assert {k: username[k] for k in ("type", "minLength", "maxLength", "pattern")} == {
        "type": "string",
        "minLength": 3,
        "maxLength": 50,
        "pattern": ANY_PATTERN,
    }
    password = schemas["UserCreate"]["properties"]["password"]
    assert (password["minLength"], password["maxLength"]) == (8, 128)
    title = schemas["TaskCreate"]["properties"]["title"]
    assert (title["minLength"], title["maxLength"]) == (1, 200)
    # Invisible characters do not count as text; the schema says so too.
    assert re.fullmatch(title["pattern"], "\u200b \u2060") is None
    assert re.fullmatch(title["pattern"], " Buy milk\u200b") is not None
    assert re.fullmatch(title["pattern"], "nul\x00") is None
    login = _resolve(
        schema,
        schema["paths"]["/api/v1/auth/token"]["post"]["requestBody"]["content"][
            "application/x-www-form-urlencoded"
        ]["schema"],
    )
    for field in ("username", "password"):
        assert login["properties"][field]["minLength"] == 1, field
        assert login["properties"][field]["maxLength"] > 1, field
    due = schemas["TaskCreate"]["properties"]["due_date"]["anyOf"][0]
    assert due["format"] == "date-time"


class _AnyPattern:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith("^")


ANY_PATTERN: Any = _AnyPattern()


async def test_examples_never_reuse_the_readme_passwords(schema: dict[str, Any]) -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    # Passwords as the README writes them: in JSON, in a form, on a command line.
    shown = re.findall(
        r'"(?:current_|new_|confirm_)?password"\s*:\s*"([^"$]{6,})"'
        r"|password=([^&\s'\"$]{6,})"
        r"|--password\s+'?([^'\s$\]]{6,})",
        readme,
    )
    passwords = {value for match in shown for value in match if value}
    document = repr(schema)
    assert [p for p in passwords if p in document] == []
    # And the document's own examples are not the test suite's or a factory's passwords.
    assert "Corr3ct-Horse" not in document


def test_the_document_is_the_same_in_every_process() -> None:
    """Byte for byte, whatever the process's hash seed (methods are a set inside FastAPI)."""
    program = (
        "import json, sys; from taskmanager.main import create_app; "
        "from taskmanager.kit.config import Settings; "
        "sys.stdout.write(json.dumps(create_app(Settings()).openapi()))"
    )
    documents = {
        subprocess.run(
            [sys.executable, "-c", program],
            env={**os.environ, "PYTHONHASHSEED": seed, "TASKMANAGER_ENV": "test"},
            capture_output=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3", "4")
    }
    assert len(documents) == 1
