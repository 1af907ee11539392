"""Opaque, signed keyset cursors for task lists.

A cursor is ``base64url(JSON) "." base64url(HMAC-SHA256)``. The JSON carries the sort it
was made for, the last row's sort value and id, and a fingerprint of the filters, so a
cursor cannot be forged, edited, or replayed against another sort or another filter set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

_CONTEXT = b"taskmanager/tasks/cursor/v1:"
_SIG_BYTES = 16
MAX_CURSOR_CHARS = 2048


class InvalidCursor(ValueError):
    """The cursor was not made by us, was altered, or belongs to another query."""


@dataclass(frozen=True, slots=True)
class Cursor:
    sort_by: str
    order: str
    # The last row's sort value as JSON: an ISO string, an int, a str, or None (due_date).
    value: Any
    last_id: int
    fingerprint: str


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(payload: bytes, key: str) -> bytes:
    return hmac.new(key.encode(), _CONTEXT + payload, hashlib.sha256).digest()[:_SIG_BYTES]


def encode_cursor(cursor: Cursor, key: str) -> str:
    payload = orjson.dumps(
        {
            "s": cursor.sort_by,
            "o": cursor.order,
            "v": cursor.value,
            "i": cursor.last_id,
            "f": cursor.fingerprint,
        }
    )
    return f"{_b64encode(payload)}.{_b64encode(_signature(payload, key))}"


def decode_cursor(token: str, key: str) -> Cursor:
    """Verify and unpack a cursor; raise InvalidCursor for anything we did not issue."""
    if len(token) > MAX_CURSOR_CHARS or token.count(".") != 1:
        raise InvalidCursor("cursor is malformed")
    body, _, sig = token.partition(".")
    try:
        payload = _b64decode(body)
        signature = _b64decode(sig)
    except (binascii.Error, ValueError):
        raise InvalidCursor("cursor is malformed") from None
    if not hmac.compare_digest(signature, _signature(payload, key)):
        raise InvalidCursor("cursor is invalid or was altered")
    try:
        data = orjson.loads(payload)
        cursor = Cursor(
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


def to_json_value(sort_by: str, value: Any) -> Any:
    """A row's sort value in the cursor's JSON form."""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def from_json_value(sort_by: str, value: Any) -> Any:
    """Back from the cursor's JSON form to the column's Python type."""
    try:
        if sort_by in ("created_at", "updated_at"):
            return datetime.fromisoformat(value)
        if sort_by == "due_date":
            return None if value is None else datetime.fromisoformat(value)
        if sort_by == "priority" and isinstance(value, int):
            return value
        if sort_by == "title" and isinstance(value, str):
            return value
    except (TypeError, ValueError):
        pass
    raise InvalidCursor("cursor is malformed")


def fingerprint(filters: dict[str, Any]) -> str:
    """A short, stable digest of the filters a cursor was made under."""
    return hashlib.sha256(orjson.dumps(filters, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
