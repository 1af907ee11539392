"""The outermost layer: request id, timing, security headers, access log and metrics.

One pure-ASGI middleware does all of it, so the hot path pays for one extra coroutine
frame and one ``send`` wrapper, not one per concern. Headers are precomputed byte pairs.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskmanager.kit.authn import caller_label
from taskmanager.kit.errors import InternalError
from taskmanager.kit.logging import redact_query
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

access_log_name = "taskmanager.access"
log = structlog.get_logger("taskmanager.request")


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-ID if it is a sane token, else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _REQUEST_ID_RE.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


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
        self.api_headers = (*_COMMON_HEADERS, (b"content-security-policy", API_CSP.encode()))
        self.docs_headers = (*_COMMON_HEADERS, (b"content-security-policy", docs_csp.encode()))
        self.access_log = structlog.get_logger(access_log_name).bind()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                scope.setdefault("state", {})["request_id"] = request_id_from(scope)
            await self.app(scope, receive, send)
            return

        start = time.perf_counter()
        request_id = request_id_from(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        path: str = scope["path"]
        security = self.docs_headers if path.startswith(DOCS_PREFIXES) else self.api_headers
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
            user_id, caller = caller_label(scope)
            self.metrics.observe(route, method, status, duration)
            query = scope.get("query_string", b"")
            client = scope.get("client")
            self.access_log.info(
                "request",
                method=method,
                path=path,
                query=redact_query(query.decode("latin-1")) if query else None,
                route=route,
                status=status,
                duration_ms=round(duration * 1000, 2),
                user_id=user_id,
                caller=caller,
                client=client[0] if client else None,
            )
            structlog.contextvars.reset_contextvars(**tokens)
