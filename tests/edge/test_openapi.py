"""The OpenAPI document is a product: walk it and hold every operation to the same bar."""

from __future__ import annotations

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
