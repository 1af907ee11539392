"""RFC 9457 ``application/problem+json``: the one shape of every error response.

``problem_response`` renders any catalogue error (``kit.errors``); the exception handlers
installed here cover domain errors, the framework's own errors (404/405/422/400), integrity
races, unreachable dependencies and anything unexpected; ``problem_responses`` documents a
route's errors in OpenAPI from the same classes.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope

from taskmanager.kit import errors
from taskmanager.kit.availability import Breaker, is_contention, is_unavailable, redis_errors

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

log = structlog.get_logger("taskmanager.kit.problems")


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
        default=None,
        max_length=errors.ValidationFailed.MAX_ERRORS,
        description="Present on validation errors: the first 50 of them",
    )
    error_count: int | None = Field(
        default=None, description="Present on validation errors: how many there are in all"
    )


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state")
    if isinstance(state, dict):
        value = state.get("request_id")
        return value if isinstance(value, str) else None
    return None


def problem_response(
    error: errors.DomainError, *, request_id: str | None, status: int | None = None
) -> Response:
    """Render a catalogue error; usable from handlers and from raw ASGI middleware.

    ``status`` overrides the class's own only for framework errors whose status has no
    class of its own (rendered with the nearest class's code).
    """
    status = status or error.status
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": error.detail,
        "code": error.code,
        "request_id": request_id,
    }
    body.update(error.extra())
    headers = dict(error.headers)
    if status == 401:
        # RFC 9110 §11.6.1: a 401 names the scheme the client should use.
        headers.setdefault("WWW-Authenticate", "Bearer")
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE
    )


def scope_problem(scope: Scope, error: errors.DomainError) -> Response:
    """``problem_response`` for the request in ``scope`` (its request id included)."""
    return problem_response(error, request_id=request_id_of(scope))


def _message(err: dict[str, Any]) -> str:
    # Pydantic prefixes a validator's ValueError text; the text alone is the message.
    return str(err.get("msg", "")).removeprefix("Value error, ")


def _jsonable_validation_errors(raw: Any) -> list[dict[str, Any]]:
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in err.get("loc", ())],
            "msg": _message(err),
            "type": str(err.get("type", "value_error")),
        }
        for err in raw
    ]


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.DomainError)
    return scope_problem(request.scope, exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    if any(err.get("type") == "json_invalid" for err in raw):
        return scope_problem(
            request.scope, errors.MalformedRequest("Request body is not valid JSON")
        )
    failed = errors.ValidationFailed(
        "Request validation failed", errors=_jsonable_validation_errors(raw)
    )
    return scope_problem(request.scope, failed)


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
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = allowed
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404 and detail == "Not Found":
        detail = f"No route matches {request.url.path}"
    if status == 405 and detail == "Method Not Allowed":
        detail = f"{request.method} is not allowed on {request.url.path}"
    error = errors.error_for_status(status)(detail, headers=headers)
    return problem_response(error, request_id=request_id_of(request.scope), status=status)


async def _on_integrity_error(request: Request, exc: Exception) -> Response:
    # A unique/foreign-key race the service could not see coming: the client's fault, not ours.
    log.info("integrity_conflict", error=str(getattr(exc, "orig", exc))[:200])
    return scope_problem(request.scope, errors.Conflict("The request conflicts with existing data"))


def _breaker_for(scope: Scope, exc: BaseException) -> Breaker | None:
    state = getattr(scope.get("app"), "state", None)
    chain: BaseException | None = exc
    redis_error = redis_errors()
    for _ in range(8):
        if chain is None:
            break
        if isinstance(chain, redis_error):
            breaker = getattr(state, "redis_breaker", None)
            return breaker if isinstance(breaker, Breaker) else None
        chain = chain.__cause__ or chain.__context__
    database = getattr(state, "database", None)
    breaker = getattr(database, "breaker", None)
    return breaker if isinstance(breaker, Breaker) else None


def dependency_problem(scope: Scope, exc: BaseException) -> Response | None:
    """A 503 for a failure to reach a dependency (recorded by its breaker), else None.

    The breaker logs one warning line per incident (no traceback: this is an outage, not a
    bug); ``Retry-After`` is the breaker's remaining back-off, at least 1 s.
    """
    if not is_unavailable(exc):
        return None
    if is_contention(exc):
        # Lost to another transaction (a lock wait, a deadlock) while the database answered:
        # no outage, so the breaker is left alone; its own line, with the error, because a
        # contention that repeats is a lock-order bug to find, not an outage to wait out.
        log.warning("database_contention", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        return scope_problem(
            scope,
            errors.ServiceUnavailable(
                "The database is busy with a conflicting change; try again shortly",
                headers={"Retry-After": "1"},
            ),
        )
    breaker = _breaker_for(scope, exc)
    if breaker is None:
        log.warning("dependency_unavailable", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        error = errors.ServiceUnavailable(
            "A dependency is unavailable; try again shortly", headers={"Retry-After": "1"}
        )
    else:
        breaker.failed(exc)
        error = breaker.error()
    return scope_problem(scope, error)


async def _on_dependency_error(request: Request, exc: Exception) -> Response:
    response = dependency_problem(request.scope, exc)
    if response is not None:
        return response
    return await _on_unexpected(request, exc)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    unavailable = dependency_problem(request.scope, exc)
    if unavailable is not None:
        return unavailable
    log.error("unhandled_exception", exc_info=exc, path=request.url.path, method=request.method)
    return scope_problem(request.scope, errors.InternalError("An unexpected error occurred"))


def install_exception_handlers(app: FastAPI, *, postgresql: bool, redis: bool) -> None:
    """The handlers, the drivers' errors among them only for the drivers in use
    (``postgresql``, ``redis``): importing a driver just to name its errors costs start-up."""
    app.add_exception_handler(errors.DomainError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(IntegrityError, _on_integrity_error)
    # Every way a dependency can fail to answer (API.md §1: 503 with Retry-After, never 500).
    for failure in (DBAPIError, DisconnectionError, PoolTimeoutError, OSError):
        app.add_exception_handler(failure, _on_dependency_error)
    if postgresql:
        from asyncpg import PostgresError

        app.add_exception_handler(PostgresError, _on_dependency_error)
    if redis:
        from redis.exceptions import RedisError

        app.add_exception_handler(RedisError, _on_dependency_error)
    app.add_exception_handler(Exception, _on_unexpected)


def problem_content(description: str) -> dict[str, Any]:
    """An OpenAPI response object whose body is a Problem."""
    return {"description": description, "content": {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_REF}}}


def problem_responses(*error_types: type[errors.DomainError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given errors, all with the Problem schema.

    Errors sharing a status (401 has two codes) share one entry whose description names both.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for error_type in error_types:
        entry = out.get(error_type.status)
        if entry is None:
            out[error_type.status] = {"model": Problem, **problem_content(error_type.description)}
        elif error_type.description not in entry["description"]:
            entry["description"] = f"{entry['description']}; or: {error_type.description}"
    return out
