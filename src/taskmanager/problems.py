"""The one place that maps errors to RFC 9457 ``application/problem+json`` responses.

Covers domain errors, the framework's own errors (404/405/422/400), integrity races and
anything unexpected, so every error a client sees has the same shape.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from taskmanager import errors

PROBLEM_CONTENT_TYPE = "application/problem+json"

log = structlog.get_logger("taskmanager.problems")

# error class -> (status, code). Subclasses resolve through the MRO.
_DOMAIN_ERRORS: dict[type[errors.DomainError], tuple[int, str]] = {
    errors.MalformedRequest: (400, "MALFORMED_REQUEST"),
    errors.NotAuthenticated: (401, "NOT_AUTHENTICATED"),
    errors.InvalidCredentials: (401, "INVALID_CREDENTIALS"),
    errors.Forbidden: (403, "FORBIDDEN"),
    errors.NotFound: (404, "RESOURCE_NOT_FOUND"),
    errors.Conflict: (409, "CONFLICT"),
    errors.PreconditionFailed: (412, "PRECONDITION_FAILED"),
    errors.PayloadTooLarge: (413, "PAYLOAD_TOO_LARGE"),
    errors.UnsupportedMediaType: (415, "UNSUPPORTED_MEDIA_TYPE"),
    errors.ValidationFailed: (422, "VALIDATION_ERROR"),
    errors.IdempotencyKeyReused: (422, "IDEMPOTENCY_KEY_REUSED"),
    errors.RateLimited: (429, "RATE_LIMITED"),
    errors.ServiceUnavailable: (503, "SERVICE_UNAVAILABLE"),
    errors.RequestTimedOut: (504, "REQUEST_TIMEOUT"),
}

# Framework HTTP statuses without a domain class.
_STATUS_CODES: dict[int, str] = {
    400: "MALFORMED_REQUEST",
    401: "NOT_AUTHENTICATED",
    403: "FORBIDDEN",
    404: "RESOURCE_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    412: "PRECONDITION_FAILED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
    504: "REQUEST_TIMEOUT",
}


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details, as every error response carries them."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "type": "about:blank",
                "title": "Not Found",
                "status": 404,
                "detail": "Task 42 not found",
                "code": "RESOURCE_NOT_FOUND",
                "request_id": "6f1c0b5e2a9d4c1b8e7f3a2d1c0b9a8e",
            }
        }
    )

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None
    errors: list[ValidationErrorItem] | None = Field(
        default=None, description="Present on validation errors"
    )


def status_and_code(error: errors.DomainError) -> tuple[int, str]:
    for cls in type(error).__mro__:
        if cls in _DOMAIN_ERRORS:
            return _DOMAIN_ERRORS[cls]
    return 500, "INTERNAL_ERROR"


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state")
    if isinstance(state, dict):
        value = state.get("request_id")
        return value if isinstance(value, str) else None
    return None


def problem_response(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """Build a problem+json response; usable from handlers and from raw ASGI middleware."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code or _STATUS_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "ERROR"),
        "request_id": request_id,
    }
    if extra:
        body.update(extra)
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE
    )


def domain_problem(error: errors.DomainError, scope: Scope) -> Response:
    status, code = status_and_code(error)
    extra: dict[str, Any] | None = None
    if isinstance(error, errors.ValidationFailed):
        extra = {"errors": error.errors}
    headers = dict(error.headers)
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return problem_response(
        status,
        error.detail,
        code=code,
        request_id=request_id_of(scope),
        headers=headers,
        extra=extra,
    )


def _jsonable_validation_errors(raw: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for err in raw:
        items.append(
            {
                "loc": [p if isinstance(p, int) else str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "value_error")),
            }
        )
    return items


def _is_json_decode_error(raw: Any) -> bool:
    return any(err.get("type") == "json_invalid" for err in raw)


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.DomainError)
    return domain_problem(exc, request.scope)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    rid = request_id_of(request.scope)
    if _is_json_decode_error(raw):
        return problem_response(400, "Request body is not valid JSON", request_id=rid)
    return problem_response(
        422,
        "Request validation failed",
        request_id=rid,
        extra={"errors": _jsonable_validation_errors(raw)},
    )


def _allowed_methods(request: Request) -> str | None:
    """Every method any route on this path takes (Starlette's Allow names only one route's)."""
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for route in request.app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        for candidate in contexts() if callable(contexts) else (route,):
            regex = getattr(candidate, "path_regex", None)
            if regex is not None and regex.match(path):
                methods.update(getattr(candidate, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods)) or None


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = allowed
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route matches {request.url.path}"
    if exc.status_code == 405 and detail == "Method Not Allowed":
        detail = f"{request.method} is not allowed on {request.url.path}"
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return problem_response(
        exc.status_code, detail, request_id=request_id_of(request.scope), headers=headers
    )


async def _on_integrity_error(request: Request, exc: Exception) -> Response:
    # A unique/foreign-key race the service could not see coming: the client's fault, not ours.
    log.info("integrity_conflict", error=str(getattr(exc, "orig", exc))[:200])
    return problem_response(
        409,
        "The request conflicts with existing data",
        code="CONFLICT",
        request_id=request_id_of(request.scope),
    )


async def _on_database_unavailable(request: Request, exc: Exception) -> Response:
    log.error("database_unavailable", exc_info=exc)
    return problem_response(
        503,
        "The database is unavailable; try again shortly",
        request_id=request_id_of(request.scope),
        headers={"Retry-After": "5"},
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled_exception", exc_info=exc, path=request.url.path, method=request.method)
    return problem_response(
        500, "An unexpected error occurred", request_id=request_id_of(request.scope)
    )


def install_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.DomainError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(IntegrityError, _on_integrity_error)
    app.add_exception_handler(OperationalError, _on_database_unavailable)
    app.add_exception_handler(PoolTimeoutError, _on_database_unavailable)
    app.add_exception_handler(Exception, _on_unexpected)


_DOC_STATUSES: dict[type[errors.DomainError], tuple[int, str]] = {
    errors.NotAuthenticated: (401, "Missing, invalid or expired credentials"),
    errors.Forbidden: (403, "The role or API-key scope does not allow this action"),
    errors.NotFound: (404, "Not found, or not visible to the caller"),
    errors.Conflict: (409, "Conflicts with existing data"),
    errors.PreconditionFailed: (412, "If-Match does not match the current ETag"),
    errors.MalformedRequest: (400, "Malformed request"),
    errors.UnsupportedMediaType: (415, "Unsupported content type"),
    errors.ValidationFailed: (422, "Validation failed"),
    errors.RateLimited: (429, "Rate limited; see Retry-After"),
}


def problem_responses(*error_types: type[errors.DomainError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given errors, all with the Problem schema."""
    out: dict[int | str, dict[str, Any]] = {}
    for error_type in error_types:
        status, description = _DOC_STATUSES.get(
            error_type, (status_and_code(error_type("x"))[0], "Error")
        )
        out[status] = {
            "model": Problem,
            "description": description,
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out
