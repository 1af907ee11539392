"""Starlette's CORS middleware, consulted only for requests that carry an ``Origin``.

Most API traffic (scripts, servers, same-origin pages) sends no Origin, yet Starlette
parses every request's headers into a mapping to find that out. This gate looks for the
header in the raw list and, when it is absent, only adds the ``Vary: Origin`` that
Starlette would add, so caches still key responses by Origin.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        self.cors = CORSMiddleware(
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
