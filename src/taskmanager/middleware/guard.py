"""Limits on what one request may cost: headers, rate, body size, time; and the 500 of last resort.

The header-section limit is enforced first by the HTTP server itself (``serving``), before
the section is buffered further; the check here covers every other way the app is served.

It sits inside CORS so that every error it produces (429, 413, 504, 500) still carries the
CORS headers a browser needs to read it, and inside the request context so those errors
carry the request id and security headers and are logged and counted.
"""

from __future__ import annotations

import asyncio

import structlog
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskmanager.kit.config import Settings
from taskmanager.kit.errors import (
    DomainError,
    HeadersTooLarge,
    InternalError,
    PayloadTooLarge,
    RateLimited,
    RequestTimedOut,
)
from taskmanager.kit.problems import dependency_problem, scope_problem
from taskmanager.middleware.rate_limit import RateLimiter

log = structlog.get_logger("taskmanager.request")

_MULTIPART = b"multipart/form-data"
# What a multipart body may carry on top of TASKMANAGER_MAX_UPLOAD_BYTES: boundaries, part
# headers (python-multipart allows 8 lines of ~4 KiB per part) and small form fields. The
# file's own bytes are held to the limit exactly where the upload is read (a file of exactly
# the limit is accepted); this only bounds the whole body, so it cannot balloon.
MULTIPART_FRAMING_BYTES = 64 * 1024


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit.

    A FastAPI ``HTTPException`` on purpose: FastAPI re-raises those from body parsing
    (anything else becomes a 400), so the app's handler renders the 413 problem.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit} bytes")
        self.limit = limit


def header_section_size(headers: list[tuple[bytes, bytes]]) -> int:
    """Bytes of a header section as sent: ``name: value\r\n`` per field."""
    return sum(len(name) + len(value) + 4 for name, value in headers)


def _body_headers(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length or None, whether the body is multipart) in one pass."""
    length: int | None = None
    multipart = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"content-type":
            multipart = value[:19].lower() == _MULTIPART
    return length, multipart


class RequestGuardMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings, limiter: RateLimiter | None) -> None:
        self.app = app
        self.limiter = limiter
        self.max_body = settings.max_body_bytes
        self.max_upload = settings.max_upload_bytes
        self.timeout = settings.request_timeout_seconds
        self.max_header_bytes = settings.max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        if header_section_size(scope["headers"]) > self.max_header_bytes:
            error = HeadersTooLarge(
                f"The request header section is larger than {self.max_header_bytes} bytes"
            )
            await self._problem(scope, receive, send, error, None)
            return

        rate_headers: list[tuple[bytes, bytes]] | None = None
        if self.limiter is not None:
            decision = await self.limiter.check(scope)
            if decision is not None:
                rate_headers = decision.headers()
                if not decision.allowed:
                    await self._problem(
                        scope,
                        receive,
                        send,
                        RateLimited(f"Rate limit exceeded; retry in {decision.reset_seconds} s"),
                        rate_headers,
                    )
                    return

        content_length, multipart = _body_headers(scope)
        limit = self.max_upload + MULTIPART_FRAMING_BYTES if multipart else self.max_body
        if content_length is not None and content_length > limit:
            await self._problem(
                scope,
                receive,
                send,
                PayloadTooLarge(f"The request body is larger than {limit} bytes"),
                rate_headers,
            )
            return

        inner_receive = receive
        if content_length is None:
            # Chunked (or unknown-length) body: count it as it arrives, never buffer it here.
            received = 0

            async def inner_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(limit)
                return message

        started = False
        status = 0

        async def guarded_send(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                if rate_headers:
                    message["headers"] = [*message.get("headers", ()), *rate_headers]
            await send(message)

        failure: DomainError | None = None
        timed_out = False
        # asyncio.timeout rather than an anyio cancel scope: uvicorn runs asyncio, and this
        # is entered on every request, where anyio's scope bookkeeping costs measurably more.
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    await self.app(scope, inner_receive, guarded_send)
                except BodyTooLarge as exc:
                    if started:
                        raise
                    failure = PayloadTooLarge(str(exc.detail))
                except Exception as exc:
                    unavailable = dependency_problem(scope, exc)
                    if unavailable is not None:
                        if started:
                            # Mid-stream: too late for a 503; end the response unfinished so
                            # the client sees a failure (the breaker has logged the outage).
                            return
                        await unavailable(scope, receive, guarded_send)
                        return
                    if started:
                        log.error("unhandled_exception_after_response_start", exc_info=exc)
                        raise
                    # Full traceback in the log, under the request id; nothing of it in the body.
                    log.error("unhandled_exception", exc_info=exc)
                    failure = InternalError("An unexpected error occurred")
        except TimeoutError:
            timed_out = True
        if timed_out:
            if started:
                # Too late for a 504: end the response abruptly so the client sees a failure.
                log.warning("request_timeout_after_response_start", timeout_s=self.timeout)
                raise RuntimeError("request time budget exhausted mid-response")
            log.warning("request_timeout", timeout_s=self.timeout)
            failure = RequestTimedOut(f"The request took longer than {self.timeout:g} s")
        if failure is not None:
            await self._problem(scope, receive, send, failure, rate_headers)
        elif self.limiter is not None and status == 401:
            await self.limiter.after_response(scope, status)

    async def _problem(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        error: DomainError,
        rate_headers: list[tuple[bytes, bytes]] | None,
    ) -> None:
        if rate_headers:
            error.headers.update({k.decode(): v.decode() for k, v in rate_headers})
        await scope_problem(scope, error)(scope, receive, send)
