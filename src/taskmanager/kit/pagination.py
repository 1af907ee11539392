"""Pagination for every list: offset pages and keyset (cursor) pages.

Offset pages take ``skip``/``limit``. Keyset pages continue after the last row of the
previous page, so a deep page costs what the first does; their ``next_cursor`` is an opaque,
signed token: ``base64url(JSON) "." base64url(HMAC-SHA256)``. The JSON carries the sort it
was made for, the last row's sort value and id, and a fingerprint of the filters, so a
cursor cannot be forged, edited, or replayed against another sort or filter set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, Field

from taskmanager.kit.fields import MAX_ID

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_CURSOR_CHARS = 2048

Skip = Annotated[int, Query(ge=0, le=MAX_ID, description="Rows to skip (offset pages)")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
CursorParam = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_CURSOR_CHARS,
        description="`next_cursor` from the previous page (keyset pages)",
    ),
]

ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One offset page of a list. Subclass it per item type (``class UserPage(Page[UserOut])``)
    so the OpenAPI document keeps a readable schema name."""

    items: list[ItemT]
    total: int
    skip: int
    limit: int


class CursorPage(Page[ItemT], Generic[ItemT]):
    """A page that can also be continued by cursor; ``next_cursor`` is null on the last page."""

    total: int = Field(description="How many items match the filters")
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page")


class InvalidCursor(ValueError):
    """The cursor was not made by us, was altered, or belongs to another query."""


@dataclass(frozen=True, slots=True)
class KeysetCursor:
    """Where a keyset page ended, and the query it belongs to."""

    sort_by: str
    order: str
    # The last row's sort value in JSON form (an ISO string, int, str or None).
    value: Any
    last_id: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Seek:
    """Where the previous page ended: its last row's sort value (typed) and id."""

    value: Any
    last_id: int


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(payload: bytes, key: str, context: bytes) -> bytes:
    return hmac.new(key.encode(), context + payload, hashlib.sha256).digest()[:16]


def encode_cursor(cursor: KeysetCursor, key: str, *, context: bytes) -> str:
    """Sign a cursor. ``context`` names the list (``b"tasks/v1"``) so lists cannot swap cursors."""
    payload = orjson.dumps(
        {
            "s": cursor.sort_by,
            "o": cursor.order,
            "v": cursor.value,
            "i": cursor.last_id,
            "f": cursor.fingerprint,
        }
    )
    return f"{_b64encode(payload)}.{_b64encode(_signature(payload, key, context))}"


def decode_cursor(token: str, key: str, *, context: bytes) -> KeysetCursor:
    """Verify and unpack a cursor; raise InvalidCursor for anything we did not issue."""
    if len(token) > MAX_CURSOR_CHARS or token.count(".") != 1:
        raise InvalidCursor("cursor is malformed")
    body, _, sig = token.partition(".")
    try:
        payload = _b64decode(body)
        signature = _b64decode(sig)
    except (binascii.Error, ValueError):
        raise InvalidCursor("cursor is malformed") from None
    if not hmac.compare_digest(signature, _signature(payload, key, context)):
        raise InvalidCursor("cursor is invalid or was altered")
    try:
        data = orjson.loads(payload)
        cursor = KeysetCursor(
            sort_by=data["s"],
            order=data["o"],
            value=data["v"],
            last_id=data["i"],
            fingerprint=data["f"],
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise InvalidCursor("cursor is malformed") from None
    if not isinstance(cursor.last_id, int) or not isinstance(cursor.fingerprint, str):
        raise InvalidCursor("cursor is malformed")
    return cursor


def fingerprint(filters: dict[str, Any]) -> str:
    """A short, stable digest of the filters a cursor was made under."""
    return hashlib.sha256(orjson.dumps(filters, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
