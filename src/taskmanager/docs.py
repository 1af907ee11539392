"""Offline API docs (Swagger UI, ReDoc) and the finishing touches on the OpenAPI schema.

The docs pages load their assets from this service (the ``fastapi_offline`` package's
files, mounted at ``/docs/static``), so they work without internet access. Their inline
init scripts are allowed by hash in the docs pages' Content-Security-Policy, so no
``'unsafe-inline'`` scripts are needed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import warnings
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response

from taskmanager.idempotency.openapi import document_idempotency_key
from taskmanager.kit.http import API_PREFIX
from taskmanager.kit.problems import PROBLEM_CONTENT_TYPE, PROBLEM_REF, Problem, problem_content

STATIC_DIR = Path(fastapi_offline.__file__).parent / "static"
STATIC_URL = "/docs/static"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
# ReDoc's menu shows its maker's logo from a CDN (blocked by our CSP: a console error, and a
# request to a third party from an offline page). The bundle is served with it pointed here.
_REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
REDOC_JS_URL = f"{STATIC_URL}/redoc.offline.js"

# Responses every /api/v1 operation can give, documented once here rather than per route.
_COMMON_ERRORS: dict[str, str] = {
    "429": "Rate limited; see Retry-After",
    "431": "The request header section is over the size limit",
    "503": "A dependency is unavailable or the server is at capacity; see Retry-After",
}
_BODY_ERRORS: dict[str, str] = {
    "400": "Malformed request (the body is not valid JSON)",
    "413": "The request body is over the size limit",
    "415": "Unsupported content type",
}


def _script_hashes(*pages: HTMLResponse) -> list[str]:
    hashes: set[str] = set()
    for page in pages:
        for script in _INLINE_SCRIPT.findall(bytes(page.body).decode()):
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            hashes.add(f"'sha256-{digest}'")
    return sorted(hashes)


@functools.cache
def _redoc_bundle() -> bytes:
    """ReDoc's bundle (~1 MB) with its logo served from here: read at the first request for
    it, not at every start (most processes never serve the docs)."""
    bundle = (STATIC_DIR / "redoc.standalone.js").read_bytes()
    return bundle.replace(_REDOC_CDN_LOGO, f"{STATIC_URL}/favicon.png".encode())


def install_docs(app: FastAPI) -> str:
    """Add /docs, /redoc and their assets; return the docs pages' Content-Security-Policy."""
    openapi_url = app.openapi_url or "/openapi.json"
    swagger = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
        swagger_favicon_url=f"{STATIC_URL}/favicon.png",
        oauth2_redirect_url=OAUTH2_REDIRECT_URL,
        swagger_ui_parameters={"persistAuthorization": True},
    )
    redoc = get_redoc_html(
        openapi_url=openapi_url,
        title=f"{app.title} - ReDoc",
        redoc_js_url=REDOC_JS_URL,
        redoc_favicon_url=f"{STATIC_URL}/favicon.png",
        with_google_fonts=False,
    )
    redirect = get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_JS_URL, include_in_schema=False)
    async def redoc_bundle() -> Response:
        return Response(_redoc_bundle(), media_type="text/javascript; charset=utf-8")

    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger.body)

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return HTMLResponse(redirect.body)

    @app.get("/redoc", include_in_schema=False)
    async def redoc_ui() -> HTMLResponse:
        return HTMLResponse(redoc.body)

    scripts = " ".join(["'self'", *_script_hashes(swagger, redoc, redirect)])
    return (
        "default-src 'none'; "
        f"script-src {scripts}; "
        # Both UIs set element styles at run time; styles cannot run code.
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "font-src 'self' data:; "
        "connect-src 'self'; "
        # ReDoc runs its search index in a worker built from a blob.
        "worker-src 'self' blob:; "
        "base-uri 'none'; "
        "form-action 'self'; "
        "frame-ancestors 'none'"
    )


_METHOD_ORDER = ("get", "head", "post", "put", "patch", "delete", "options", "trace")


def _method_rank(entry: tuple[str, Any]) -> tuple[int, str]:
    key = entry[0]
    return (_METHOD_ORDER.index(key) if key in _METHOD_ORDER else -1, key)


def install_openapi(app: FastAPI) -> None:
    """Post-process the generated schema once: every error is documented as a Problem."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if getattr(app.state, "openapi_finished", False) and app.openapi_schema:
            return app.openapi_schema
        with warnings.catch_warnings():
            # Every GET route also takes HEAD (kit.routing), so FastAPI sees each operation
            # id twice; finish_schema gives the HEAD operations their own ids.
            warnings.filterwarnings("ignore", message="Duplicate Operation ID")
            schema = generate()
        finish_schema(schema)
        document_idempotency_key(schema)
        # A route's methods are a set, so FastAPI lists them in an order that changes with
        # the process's hash seed; a document that differs between two processes defeats
        # caching and diffing: methods in RFC 9110's order, every time.
        for path, item in schema.get("paths", {}).items():
            schema["paths"][path] = dict(sorted(item.items(), key=_method_rank))
        app.openapi_schema = schema
        app.state.openapi_finished = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_REPLACEABLE_REFS = {
    "#/components/schemas/Problem",
    "#/components/schemas/HTTPValidationError",
}


def _is_problem_or_default(response: dict[str, Any]) -> bool:
    """True unless the route documented its own, different error body (e.g. /ready's 503)."""
    content: dict[str, Any] = response.get("content") or {}
    if not content or PROBLEM_CONTENT_TYPE in content:
        return True
    refs = {entry.get("schema", {}).get("$ref") for entry in content.values()}
    return refs <= _REPLACEABLE_REFS


def _document_head(path_item: dict[str, Any]) -> None:
    """HEAD as what it is: the GET's headers, no body (RFC 9110 §9.3.2), with its own id."""
    head = path_item.get("head")
    get = path_item.get("get")
    if head is None or get is None:
        return
    head["operationId"] = f"{get['operationId']}_head"
    head["summary"] = f"{get.get('summary', '')} (headers only)".strip()
    for response in head.get("responses", {}).values():
        # Errors too: their headers are a problem's, their body is not sent.
        response.pop("content", None)


_ETAG = {"description": "Strong ETag of this representation", "schema": {"type": "string"}}
_LOCATION = {"description": "The new resource's URL", "schema": {"type": "string"}}
_IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "Answer 304 with no body if the current ETag is one of these",
    "schema": {"type": "string"},
}


def _document_conditional_get(operation: dict[str, Any]) -> None:
    """Every GET (and HEAD) of a JSON or HTML representation has an ETag and honours
    ``If-None-Match`` (``kit.routing.conditional`` makes it true for every route)."""
    responses = operation.get("responses", {})
    ok = responses.get("200")
    if ok is None or any(t.startswith("text/csv") for t in ok.get("content", {})):
        return  # streamed bodies have no ETag
    ok.setdefault("headers", {}).setdefault("ETag", _ETAG)
    responses.setdefault(
        "304",
        {
            "description": "Not modified: the `If-None-Match` ETag is current",
            "headers": {"ETag": _ETAG},
        },
    )
    parameters = operation.setdefault("parameters", [])
    if not any(p.get("name", "").lower() == "if-none-match" for p in parameters):
        parameters.append(dict(_IF_NONE_MATCH))


def _document_created(operation: dict[str, Any]) -> None:
    """Every 201 names the new resource (``kit.routing`` adds ``Location`` where a route
    does not)."""
    created = operation.get("responses", {}).get("201")
    if created is not None:
        created.setdefault("headers", {}).setdefault("Location", _LOCATION)


def _parameters_without_null(operation: dict[str, Any]) -> None:
    """A query, path or header value cannot be null: optional means "may be left out"."""
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        variants = schema.get("anyOf")
        if isinstance(variants, list) and {"type": "null"} in variants:
            kept = [v for v in variants if v != {"type": "null"}]
            del schema["anyOf"]
            if len(kept) == 1:
                schema.update(kept[0])
            else:
                schema["anyOf"] = kept
        if schema.get("default", 0) is None:
            del schema["default"]


def finish_schema(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in problem_schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas["Problem"] = problem_schema

    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in {"get", "put", "post", "patch", "delete", "head", "options"}:
                continue
            _parameters_without_null(operation)
            if method in {"get", "head"}:
                _document_conditional_get(operation)
            _document_created(operation)
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if path.startswith(API_PREFIX):
                for status, description in _COMMON_ERRORS.items():
                    responses.setdefault(status, problem_content(description))
                if "requestBody" in operation:
                    for status, description in _BODY_ERRORS.items():
                        responses.setdefault(status, problem_content(description))
            if operation.get("security") and "401" not in responses:
                responses["401"] = problem_content("Missing, invalid or expired credentials")
            for status, response in responses.items():
                if status[:1] in {"4", "5"}:
                    if status == "422" and response.get("description") == "Validation Error":
                        response["description"] = "Validation failed"
                    if _is_problem_or_default(response):
                        response["content"] = {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_REF}}

    for item in schema.get("paths", {}).values():
        _document_head(item)

    # FastAPI's default 422 schemas are replaced by Problem everywhere; drop them if unused.
    text = repr(schema.get("paths", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas and f"#/components/schemas/{name}'" not in text:
            del schemas[name]
