"""Starlette's CORS middleware, consulted only for requests that carry an ``Origin``.

Most API traffic (scripts, servers, same-origin pages) sends no Origin, yet Starlette
parses every request's headers into a mapping to find that out. This gate looks for the
header in the raw list and, when it is absent, only adds the ``Vary: Origin`` that
Starlette would add, so caches still key responses by Origin.

A preflight that asks for an origin, method or header that is not allowed is answered
like every other error: ``403`` ``application/problem+json`` (Starlette answers a plain-text
400), naming what was refused.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskmanager.kit.errors import Forbidden
from taskmanager.kit.problems import scope_problem

_ORIGIN = b"origin"
_VARY = b"vary"


class OriginGatedCORSMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        allow_origins: list[str],
        allow_credentials: bool,
        allow_methods: list[str],
        allow_headers: list[str],
        expose_headers: list[str],
        max_age: int,
    ) -> None:
        self.app = app
        self.cors = _ProblemCORSMiddleware(
            app,
            allow_origins=allow_origins,
            allow_credentials=allow_credentials,
            allow_methods=allow_methods,
            allow_headers=allow_headers,
            expose_headers=expose_headers,
            max_age=max_age,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == _ORIGIN for name, _ in scope["headers"]):
            await self.cors(scope, receive, send)
            return

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                for index, (name, value) in enumerate(headers):
                    if name.lower() == _VARY:
                        headers[index] = (name, value + b", Origin")
                        break
                else:
                    headers.append((_VARY, b"Origin"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_vary)


class _ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with refused preflights as problem+json 403."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if (
            scope["method"] == "OPTIONS"
            and "origin" in headers
            and "access-control-request-method" in headers
        ):
            answer = self.preflight_response(request_headers=headers)
            if answer.status_code == 400:
                refused = bytes(answer.body).decode().removeprefix("Disallowed CORS ")
                problem = scope_problem(
                    scope, Forbidden(f"This cross-origin request is not allowed ({refused})")
                )
                for name, value in answer.headers.items():
                    if name not in ("content-type", "content-length"):
                        problem.headers[name] = value
                answer = problem
            await answer(scope, receive, send)
            return
        await self.simple_response(scope, receive, send, request_headers=headers)
