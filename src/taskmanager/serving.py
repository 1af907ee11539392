"""How ``taskmanager serve`` runs uvicorn: a header-size limit in the HTTP parser, and drain.

**Header section limit (431).** uvicorn's two HTTP/1.1 implementations differ: h11 refuses
an incomplete event larger than ``h11_max_incomplete_event_size`` (16 KiB by default) but
answers a plain-text 400; httptools (llhttp, the one uvicorn picks when installed) has no
limit at all and accumulates a header value in memory for as long as the client sends it —
200 MiB of headers were answered 200 OK. ``HeaderLimitedProtocol`` counts the bytes of the
request line and header section as they arrive and, once they pass
``TASKMANAGER_MAX_HEADER_BYTES``, answers 431 ``HEADERS_TOO_LARGE`` (problem+json) and closes
the connection: at most the limit plus one socket read (256 KiB) is ever buffered.

**Drain on SIGTERM (API.md §8).** ``DrainingServer``: the first SIGTERM (or Ctrl-C) marks
the app as draining at once (``/ready`` answers 503) and keeps serving for
``TASKMANAGER_DRAIN_SECONDS``, so a load balancer has time to stop sending. Then it stops
accepting: it takes every connection already waiting in the kernel's accept queue (a closed
listening socket would reset them), closes the listener, lets those connections deliver
their requests, and only then runs uvicorn's graceful shutdown, which finishes in-flight
requests (bounded by ``TASKMANAGER_SHUTDOWN_TIMEOUT_SECONDS``) and closes the pools. A second
signal skips the rest of the drain. The listening socket is ours: uvicorn gets a duplicate,
so closing its server does not close the listener before the queue is emptied.

**A frozen start-up heap.** The cyclic collector is off while the server starts (imports,
``create_app``, the lifespan): start-up builds ~170 k long-lived objects and almost no
garbage (~1.4 k objects in cycles, measured), so the collections it would trigger, full ones
among them, were pure cost (~0.15 s of CPU on the cold-start path). Once the app has started,
``gc.freeze()`` moves what start-up built out of the collector's generations, so a full
collection no longer pauses the worker to walk the whole application (GET p99 118 → 68 ms,
issue 13), and the collector is turned back on. The freeze is not preceded by a full
collection: that walk cost 0.1 to 0.25 s before the first request, to reclaim those few
kilobytes.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Any

import orjson
import structlog
from uvicorn import Config, Server
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import multiprocess

from taskmanager.kit.errors import HeadersTooLarge
from taskmanager.middleware.context import API_CSP
from taskmanager.middleware.shedding import RETRY_AFTER_SECONDS, SHED_STATE_KEY

log = structlog.get_logger("taskmanager.serving")

DEFAULT_MAX_HEADER_BYTES = 16 * 1024
# How long a refused connection's further input is read and discarded before closing.
_LINGER_SECONDS = 1.0
# How long drained connections get to deliver the request they queued before shutdown.
_BACKLOG_REQUEST_GRACE_SECONDS = 2.0


def _headers_too_large_response(limit: int) -> bytes:
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": HeadersTooLarge.title(),
            "status": HeadersTooLarge.status,
            "detail": f"The request header section is larger than {limit} bytes",
            "code": HeadersTooLarge.code,
            "request_id": uuid.uuid4().hex,
        }
    )
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n"
        "x-content-type-options: nosniff\r\n"
        "x-frame-options: DENY\r\n"
        "referrer-policy: strict-origin-when-cross-origin\r\n"
        f"content-security-policy: {API_CSP}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


class HeaderLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing header sections over the configured limit.

    Two lower bounds of the header section's size are kept, so nothing within the limit is
    ever refused: the bytes of fields the parser has completed (request target, names and
    values), and the raw bytes of every read that arrived entirely inside the section.
    A read that starts a message may hold an unfinished field the parser buffers privately;
    the next read is then counted whole, so the buffer never exceeds limit + one read.
    """

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        # Set on the Config by ``serve`` (a plain attribute, so it survives the pickling
        # that hands the config to ``--workers`` processes).
        self.max_header_bytes: int = getattr(config, "max_header_bytes", DEFAULT_MAX_HEADER_BYTES)
        self._in_headers = False
        self._began_in_this_read = False
        self._parsed_bytes = 0
        self._raw_bytes = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # discarded while the 431 is delivered (see _refuse)
        was_in_headers = self._in_headers
        self._began_in_this_read = False
        super().data_received(data)
        if self._refused or not self._in_headers:
            return
        if was_in_headers and not self._began_in_this_read:
            self._raw_bytes += len(data)
        if max(self._raw_bytes, self._parsed_bytes) > self.max_header_bytes:
            self._refuse()

    def send_400_response(self, msg: str) -> None:
        # A parser callback stopped parsing over the limit; httptools reports that as a
        # parser error, which uvicorn would answer with a plain 400.
        if self._parsed_bytes > self.max_header_bytes:
            self._refuse()
            return
        super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._began_in_this_read = True
        self._parsed_bytes = 0
        self._raw_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        state = cycle.scope.get("state") if cycle is not None else None
        if (
            isinstance(state, dict)
            and state.get(SHED_STATE_KEY)
            and not self.transport.is_closing()
        ):
            # The client was told Retry-After; its next request on this connection is read no
            # sooner. A client that ignores it then waits in its socket buffer, at no cost,
            # instead of turning every refusal into more work for a server already full.
            self.flow.pause_reading()
            self.loop.call_later(RETRY_AFTER_SECONDS, self._resume_after_shed)

    def _resume_after_shed(self) -> None:
        if not self.transport.is_closing():
            self.flow.resume_reading()

    def _count(self, size: int) -> None:
        self._parsed_bytes += size
        if self._parsed_bytes > self.max_header_bytes:
            raise _HeadersTooLarge

    def _refuse(self) -> None:
        """Answer 431 and close, without resetting the connection under the answer.

        Closing a socket with unread input makes the kernel send a reset, which can destroy
        the answer before the client reads it; so the write side is closed first, further
        input is discarded, and the connection is closed a moment later (a lingering close).
        """
        if self._refused:
            return
        self._refused = True
        log.warning("headers_too_large", limit=self.max_header_bytes, client=self.client)
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(_headers_too_large_response(self.max_header_bytes))
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, transport.close)


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing (httptools reports a parser error)."""


def _find_app_state(app: Any) -> Any:
    """The Starlette app's ``state`` under uvicorn's wrappers (proxy headers, ...)."""
    for _ in range(16):
        state = getattr(app, "state", None)
        if state is not None and not callable(state):
            return state
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def _freeze_startup_heap() -> None:
    """Move everything start-up built (modules, routes, compiled statements) out of the
    collector's reach (``gc.freeze``) and turn the collector back on: a full collection then
    walks only what requests create, instead of pausing the worker to re-examine the whole
    application each time. Only in the serving process: tests build many apps in one process
    and freezing would keep each one's cycles forever.
    """
    gc.freeze()
    gc.enable()


class DrainingServer(Server):
    """A uvicorn server that drains before it stops (see the module docstring)."""

    def __init__(self, config: Config, *, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self._drain_deadline: float | None = None
        self._listeners: list[socket.socket] = []
        self._protocol_factory: Callable[[], asyncio.Protocol] | None = None

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        # No cyclic collection while starting (see the module docstring); ``startup`` turns
        # it back on once the heap is frozen.
        gc.disable()
        try:
            super().run(sockets=sockets)
        finally:
            gc.enable()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_deadline is None and self.drain_seconds > 0 and not self.should_exit:
            self._drain_deadline = time.monotonic() + self.drain_seconds
            self._captured_signals.append(sig)
            state = _find_app_state(getattr(self.config, "loaded_app", None))
            if state is not None:
                state.draining = True
            log.warning("draining", drain_seconds=self.drain_seconds, signal=sig)
            return
        super().handle_exit(sig, frame)  # a second signal: stop draining now

    async def on_tick(self, counter: int) -> bool:
        if self._drain_deadline is not None and time.monotonic() >= self._drain_deadline:
            self.should_exit = True
        return await super().on_tick(counter)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None:
            sockets = [self.config.bind_socket()]
        # uvicorn closes the sockets it is given when it shuts down; it gets duplicates, and
        # the originals stay listening until their accept queue has been emptied.
        self._listeners = sockets
        duplicates = [sock.dup() for sock in sockets]
        await super().startup(sockets=duplicates)
        config = self.config
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
            )
            return made

        self._protocol_factory = protocol
        _freeze_startup_heap()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in getattr(self, "servers", []):
            server.close()  # stop the event loop's own accepting (closes the duplicates)
        await self._take_accept_queue()
        await self._let_requests_arrive(list(self.server_state.connections))
        await super().shutdown(sockets=None)

    async def _take_accept_queue(self) -> None:
        """Accept every connection already queued, then close the listeners."""
        loop = asyncio.get_running_loop()
        pending: list[socket.socket] = []
        for listener in self._listeners:
            listener.setblocking(False)
            while True:
                try:
                    connection, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                pending.append(connection)
            listener.close()
        self._listeners = []
        if pending and self._protocol_factory is not None:
            log.info("accept_queue_drained", connections=len(pending))
            for connection in pending:
                connection.setblocking(False)
                await loop.connect_accepted_socket(
                    self._protocol_factory, connection, ssl=self.config.ssl
                )

    async def _let_requests_arrive(self, protocols: list[Any]) -> None:
        """Give connections that have not sent a request yet a moment to deliver it.

        uvicorn's shutdown closes every connection without a request in progress; one that
        was accepted a moment ago (from the queue, or by the loop just before the stop) may
        still have its request in the socket buffer, and would get no answer at all.
        """
        deadline = time.monotonic() + _BACKLOG_REQUEST_GRACE_SECONDS
        while time.monotonic() < deadline:
            waiting = [
                p
                for p in protocols
                if getattr(p, "cycle", None) is None
                and getattr(p, "transport", None) is not None
                and not p.transport.is_closing()
            ]
            if not waiting:
                return
            await asyncio.sleep(0.01)


class DrainingProcess(multiprocess.Process):
    """A ``--workers`` child process that runs a ``DrainingServer``."""

    @property
    def server(self) -> Server:
        if self._server is None:
            drain = float(getattr(self.config, "drain_seconds", 0.0))
            self._server = DrainingServer(self.config, drain_seconds=drain)
        return self._server


def configure(config: Config, *, max_header_bytes: int, drain_seconds: float) -> Config:
    """Our HTTP protocol and limits on a uvicorn ``Config`` (plain attributes: picklable)."""
    config.http = HeaderLimitedProtocol
    config.max_header_bytes = max_header_bytes  # type: ignore[attr-defined]
    config.drain_seconds = drain_seconds  # type: ignore[attr-defined]
    return config


def serve(config: Config) -> None:
    """Run uvicorn with drain-on-SIGTERM, in one process or under its worker supervisor."""
    sock = config.bind_socket()
    if config.workers > 1:
        # Each worker drains by itself; uvicorn's supervisor builds workers from this name.
        multiprocess.Process = DrainingProcess  # type: ignore[misc]
        multiprocess.Multiprocess(config, sockets=[sock]).run()
        return
    drain = float(getattr(config, "drain_seconds", 0.0))
    DrainingServer(config, drain_seconds=drain).run(sockets=[sock])
