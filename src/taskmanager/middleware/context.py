"""The outermost layer: request id, timing, security and caching headers, access log, metrics.

One pure-ASGI middleware does all of it, so the hot path pays for one extra coroutine
frame and one ``send`` wrapper, not one per concern. Headers are precomputed byte pairs.

Caching (RFC 9111): a response to a request that carried a credential is
``Cache-Control: private, no-cache`` unless the route chose otherwise (responses that carry
a credential say ``no-store``), and every API response varies on ``Authorization`` and
``X-API-Key`` (plus ``Origin``, from CORS), so no shared cache serves one caller's answer to
another. The access log shows only the query parameters the matched route declares
(``kit.logging.redact_query``).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from fastapi.dependencies.utils import get_flat_params
from fastapi.params import Cookie, Header, Path
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskmanager.kit.authn import caller_label
from taskmanager.kit.errors import InternalError
from taskmanager.kit.http import API_PREFIX
from taskmanager.kit.logging import AccessLog, redact_query
from taskmanager.kit.problems import problem_response
from taskmanager.ops.metrics import UNMATCHED_ROUTE, Metrics

REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._-]{1,128}")

API_CSP = "default-src 'none'; frame-ancestors 'none'"
_COMMON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
)
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
DOCS_PREFIXES = ("/docs", "/redoc")
_CREDENTIAL_HEADERS = frozenset({b"authorization", b"x-api-key"})
_CACHE_CONTROL = b"cache-control"
_PRIVATE = (_CACHE_CONTROL, b"private, no-cache")
_VARY = b"vary"
_VARY_CREDENTIALS = b"Authorization, X-API-Key"

access_log_name = "taskmanager.access"
log = structlog.get_logger("taskmanager.request")


def api_security_headers() -> tuple[tuple[bytes, bytes], ...]:
    """The security headers of every API response (API.md §2), as raw pairs."""
    return (*_COMMON_HEADERS, (b"content-security-policy", API_CSP.encode()))


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-ID if it is a sane token, else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _REQUEST_ID_RE.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


def _read_headers(scope: Scope) -> tuple[str, bool]:
    """(request id, whether a credential header was sent), in one pass over the headers."""
    request_id: str | None = None
    credential = False
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and request_id is None:
            request_id = value.decode("ascii") if _REQUEST_ID_RE.fullmatch(value) else ""
        elif name in _CREDENTIAL_HEADERS:
            credential = True
    return request_id or uuid.uuid4().hex, credential


def _with_caching_headers(headers: list[tuple[bytes, bytes]], credential: bool) -> None:
    """Add ``Vary: Authorization, X-API-Key`` and, for a credentialed request,
    ``Cache-Control: private, no-cache`` unless the response has its own."""
    vary_at: int | None = None
    has_cache_control = False
    for index, (name, _) in enumerate(headers):
        lowered = name.lower()
        if lowered == _VARY:
            vary_at = index
        elif lowered == _CACHE_CONTROL:
            has_cache_control = True
    if vary_at is None:
        headers.append((_VARY, _VARY_CREDENTIALS))
    else:
        name, value = headers[vary_at]
        headers[vary_at] = (name, value + b", " + _VARY_CREDENTIALS)
    if credential and not has_cache_control:
        headers.append(_PRIVATE)


# Query parameter names each route declares, by route (routes live as long as the app).
_DECLARED: dict[int, frozenset[str]] = {}


def declared_query_names(scope: Scope) -> frozenset[str]:
    """The query parameters the matched route declares (none when nothing matched)."""
    route = scope.get("route")
    if not isinstance(route, APIRoute):
        return frozenset()
    names = _DECLARED.get(id(route))
    if names is None:
        names = frozenset(
            field.alias
            for field in get_flat_params(route.dependant)
            if not isinstance(field.field_info, Path | Header | Cookie)
        )
        _DECLARED[id(route)] = names
    return names


class RouteTable:
    """Path templates by matching, for requests answered before the router ran (a 429 from
    the rate limit, an idempotent replay): built once from the app's routes, on first use."""

    def __init__(self) -> None:
        self._table: list[tuple[Any, frozenset[str], str]] | None = None

    def _build(self, app: Any) -> list[tuple[Any, frozenset[str], str]]:
        table = []
        for route in getattr(app, "routes", ()):
            contexts = getattr(route, "effective_route_contexts", None)
            for candidate in contexts() if callable(contexts) else (route,):
                regex = getattr(candidate, "path_regex", None)
                template = getattr(candidate, "path_format", None)
                if regex is not None and isinstance(template, str):
                    methods = frozenset(getattr(candidate, "methods", None) or ())
                    table.append((regex, methods, template))
        return table

    def find(self, scope: Scope) -> str:
        if self._table is None:
            self._table = self._build(scope.get("app"))
        path, method = scope["path"], scope["method"]
        fallback = UNMATCHED_ROUTE
        for regex, methods, template in self._table:
            if regex.match(path):
                if not methods or method in methods:
                    return template
                if fallback == UNMATCHED_ROUTE:
                    fallback = template
        return fallback


def route_template(scope: Scope, endpoints: dict[Any, str], table: RouteTable) -> str:
    """The matched route's path template (never the raw path: it is a metric label)."""
    fastapi_scope = scope.get("fastapi")
    if fastapi_scope:
        context = fastapi_scope.get("effective_route_context")
        template = getattr(context, "path_format", None)
        if isinstance(template, str):
            return template
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if isinstance(template, str):
        return template
    endpoint = scope.get("endpoint")
    if endpoint is not None and endpoint in endpoints:
        return endpoints[endpoint]
    # The router did not run (or matched nothing): find the template by matching.
    return table.find(scope)


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        docs_csp: str,
        endpoint_templates: dict[Any, str],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoint_templates = endpoint_templates
        self.route_table = RouteTable()
        self.api_headers = api_security_headers()
        self.docs_headers = (*_COMMON_HEADERS, (b"content-security-policy", docs_csp.encode()))
        self.access_log = AccessLog(access_log_name, "request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                scope.setdefault("state", {})["request_id"] = request_id_from(scope)
            await self.app(scope, receive, send)
            return

        start = time.perf_counter()
        request_id, credential = _read_headers(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        path: str = scope["path"]
        security = self.docs_headers if path.startswith(DOCS_PREFIXES) else self.api_headers
        varies = credential or path.startswith(API_PREFIX)
        if scope.get("scheme") == "https":
            security = (*security, _HSTS)
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500
        started = False
        # HEAD is answered by the GET handler (kit.routing): the headers stay, the body goes
        # (RFC 9110 §9.3.2), whatever server or test transport carries the response.
        head = scope["method"] == "HEAD"

        async def send_with_context(message: Message) -> None:
            nonlocal status, started
            if head and message["type"] == "http.response.body":
                if message.get("body"):
                    message = {**message, "body": b""}
            elif message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append(id_header)
                headers.append((b"x-process-time", b"%.4f" % (time.perf_counter() - start)))
                headers.extend(security)
                if varies:
                    _with_caching_headers(headers, credential)
                message["headers"] = headers
            await send(message)

        in_flight = self.metrics.in_flight
        in_flight.inc()
        try:
            await self.app(scope, receive, send_with_context)
        except Exception as exc:
            # Inner layers render their own errors; this is the last resort.
            log.error("unhandled_exception", exc_info=exc)
            if started:
                raise
            status = 500
            response = problem_response(
                InternalError("An unexpected error occurred"), request_id=request_id
            )
            await response(scope, receive, send_with_context)
        finally:
            in_flight.dec()
            duration = time.perf_counter() - start
            method: str = scope["method"]
            route = route_template(scope, self.endpoint_templates, self.route_table)
            self.metrics.observe(route, method, status, duration)
            if self.access_log.enabled():
                user_id, caller = caller_label(scope)
                query = scope.get("query_string", b"")
                client = scope.get("client")
                self.access_log.emit(
                    {
                        "method": method,
                        "path": path,
                        "query": (
                            redact_query(query.decode("latin-1"), declared_query_names(scope))
                            if query
                            else None
                        ),
                        "route": route,
                        "status": status,
                        "duration_ms": round(duration * 1000, 2),
                        "user_id": user_id,
                        "caller": caller,
                        "client": client[0] if client else None,
                    }
                )
            structlog.contextvars.reset_contextvars(**tokens)
