"""A small TCP proxy the tests control, to put PostgreSQL behind a faulty network.

Modes:
- ``forward``: a plain proxy.
- ``refuse``: the listening socket is closed (new connections are refused) and every open
  connection is reset — the database server "stopped".
- ``blackhole``: connections stay open and new ones are accepted, but no byte moves in either
  direction — a silent network partition (packets dropped); the client only learns from its
  own timeouts.
- ``cut_next``: the next bytes a client sends (its next query) reset that connection
  instead of being forwarded — a connection lost mid-query; other traffic is forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Pipe:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.server):
            transport = writer.transport
            with contextlib.suppress(Exception):
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    # SO_LINGER 0: close with a reset, as a dying server or network would.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        for task in self.tasks:
            task.cancel()


class FaultyProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "forward"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()
        self._moved = asyncio.Event()  # set whenever traffic may flow again

    async def start(self) -> None:
        self._moved.set()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._drop_all()
        if self._server is not None:
            self._server.close()
            self._server = None

    def _drop_all(self) -> None:
        for pipe in list(self._pipes):
            pipe.abort()
        self._pipes.clear()

    async def set_mode(self, mode: str) -> None:
        assert mode in ("forward", "refuse", "blackhole", "cut_next"), mode
        previous, self.mode = self.mode, mode
        if mode == "refuse":
            self._drop_all()
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
        elif previous == "refuse":
            await self._listen()  # the same port again
        if mode == "blackhole":
            self._moved.clear()
        else:
            self._moved.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pipe = _Pipe(writer, up_writer)
        self._pipes.add(pipe)
        pipe.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, pipe, from_client=True)),
            asyncio.create_task(self._pump(up_reader, writer, pipe, from_client=False)),
        ]

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pipe: _Pipe,
        *,
        from_client: bool,
    ) -> None:
        try:
            while True:
                data = await source.read(65536)
                if not data:
                    break
                # A black hole holds what it read and forwards nothing until healed.
                await self._moved.wait()
                if from_client and self.mode == "cut_next":
                    self.mode = "forward"
                    self._pipes.discard(pipe)
                    pipe.abort()
                    return
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()
            self._pipes.discard(pipe)
