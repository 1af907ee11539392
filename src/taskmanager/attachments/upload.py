"""Reading a ``multipart/form-data`` upload as a stream (the HTTP side of an upload).

FastAPI's ``UploadFile`` would parse the whole body first, spooling the file to memory (up
to 1 MiB) and then to a temporary file, before the route could look at it; and its size is
known only at the end. Here the body is fed, chunk by chunk as the server receives it, to
``python-multipart``'s push parser: the ``file`` part's bytes are handed on (to the object
store) as they arrive, counted, and the upload is cut with 413 the moment they pass the
limit, without reading the rest. At most one received chunk is held at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from email.message import Message
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from taskmanager.kit.errors import (
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)

FIELD = "file"
MULTIPART = "multipart/form-data"
# One part's header section (Content-Disposition, Content-Type): generous for a long file
# name, tiny against the body limit.
_PART_HEADERS_MAX = 16 * 1024

_Event = tuple[str, Any]


def _missing_file() -> ValidationFailed:
    return ValidationFailed.field(
        ("body", FIELD), f"a multipart field named '{FIELD}' with the file is required", "missing"
    )


class MultipartUpload:
    """One ``multipart/form-data`` request body, read as it arrives.

    ``file_part()`` reads up to the headers of the ``file`` part and returns its file name
    and content type as sent; ``data()`` yields that part's bytes; ``finish()`` reads the
    rest of the body (other parts are ignored). Raises UnsupportedMediaType (415, not
    multipart), MalformedRequest (400, anything python-multipart refuses), ValidationFailed
    (422, no ``file`` part, or more than one) and PayloadTooLarge (413, the file passes
    ``limit`` bytes).
    """

    def __init__(self, request: Request, *, limit: int) -> None:
        media_type, params = parse_options_header(request.headers.get("content-type", ""))
        if media_type.decode("latin-1").lower() != MULTIPART:
            raise UnsupportedMediaType(
                f"Content-Type {media_type.decode('latin-1') or '(none)'!r} is not supported "
                f"here; send {MULTIPART} with a '{FIELD}' field"
            )
        boundary = params.get(b"boundary")
        if not boundary:
            raise MalformedRequest("The multipart Content-Type has no boundary")
        self.limit = limit
        self._body = request.stream()
        self._events: deque[_Event] = deque()
        self._ended = False
        self._headers: dict[str, str] = {}
        self._name = bytearray()
        self._value = bytearray()
        self._header_bytes = 0
        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._on_part_begin,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                    "on_end": self._on_end,
                },
            )
        except FormParserError as exc:  # a boundary over the parser's 256 bytes (RFC 2046: 70)
            raise MalformedRequest(f"The multipart Content-Type is malformed: {exc}") from exc

    # -- parser callbacks (synchronous, called from ``write``) -----------------------------

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._header_bytes = 0

    def _grow(self, target: bytearray, data: bytes, start: int, end: int) -> None:
        self._header_bytes += end - start
        if self._header_bytes > _PART_HEADERS_MAX:
            raise MalformedRequest("A multipart part's headers are too large")
        target += data[start:end]

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._grow(self._name, data, start, end)

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._grow(self._value, data, start, end)

    def _on_header_end(self) -> None:
        # Browsers send file names as raw UTF-8 in the quoted string.
        name = self._name.decode("latin-1").strip().lower()
        self._headers[name] = self._value.decode("utf-8", errors="replace").strip()
        self._name.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        self._events.append(("headers", self._headers))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(("data", bytes(data[start:end])))

    def _on_part_end(self) -> None:
        self._events.append(("end", None))

    def _on_end(self) -> None:
        self._ended = True

    # -- the stream ------------------------------------------------------------------------

    async def _next(self) -> _Event | None:
        """The next parser event, reading more of the body as needed; None at its end."""
        while not self._events:
            chunk = await anext(self._body, None)
            if chunk is None:
                return None
            if chunk:
                try:
                    self._parser.write(chunk)
                except FormParserError as exc:  # every error python-multipart raises
                    raise MalformedRequest(f"The multipart body is malformed: {exc}") from exc
        return self._events.popleft()

    @staticmethod
    def _disposition(headers: dict[str, str]) -> Message | None:
        """The part's Content-Disposition when it is the ``file`` field, else None."""
        disposition = Message()
        disposition["content-disposition"] = headers.get("content-disposition", "")
        if disposition.get_param("name", header="content-disposition") == FIELD:
            return disposition
        return None

    async def file_part(self) -> tuple[str | None, str | None]:
        """Read up to the ``file`` part's data; its (file name, content type) as sent."""
        while (event := await self._next()) is not None:
            if event[0] != "headers":
                continue  # another part's data: not kept
            disposition = self._disposition(event[1])
            if disposition is not None:
                return disposition.get_filename(), event[1].get("content-type")
        raise _missing_file()

    async def data(self) -> AsyncIterator[bytes]:
        """The ``file`` part's bytes as they arrive; PayloadTooLarge past the limit."""
        size = 0
        while (event := await self._next()) is not None:
            if event[0] == "end":
                return
            if event[0] == "data":
                size += len(event[1])
                if size > self.limit:
                    raise PayloadTooLarge(f"The file is larger than {self.limit} bytes")
                yield event[1]
        raise MalformedRequest("The multipart body ended inside the file part")

    async def finish(self) -> None:
        """Read the rest of the body (later parts are ignored); ValidationFailed (422) at a
        second ``file`` part, without reading its data; MalformedRequest if the closing
        boundary never comes."""
        while (event := await self._next()) is not None:
            if event[0] == "headers" and self._disposition(event[1]) is not None:
                # Keeping one and dropping the other would answer 201 for a file the
                # client believes stored; the caller removes the one already written.
                raise ValidationFailed.field(
                    ("body", FIELD), f"exactly one file is allowed in '{FIELD}'", "too_many"
                )
        if not self._ended:
            raise MalformedRequest("The multipart body has no closing boundary")
