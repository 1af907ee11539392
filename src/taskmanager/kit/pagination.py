"""Pagination for every list: offset pages and keyset (cursor) pages, from one kit.

Every list takes ``skip``/``limit`` (offset pages) or ``cursor`` (keyset pages: a page
continues after the last row of the previous one, so a deep page costs what the first
does), answers ``total`` or ``X-Total-Count`` and, while there is a next page, a
``next_cursor`` and an RFC 8288 ``Link: <...>; rel="next"`` (``kit.http.paged``).

A cursor is an opaque, signed token: ``base64url(zlib(JSON)) "." base64url(HMAC-SHA256)``.
The JSON carries the list's whole query (filters and sort), the page size, and the last
row's sort value and id, so ``?cursor=...`` alone continues the list; parameters sent with
it must match the ones it carries (else 422). The signature's context names the list, so
a cursor cannot be forged, edited or replayed against another list.

A list may also carry its ``total`` in the cursor (the task list does): counted once, with
the page that issued the first cursor, and repeated on every page that continues it, so
following a cursor never counts again. It is then the total as of that first page.

Framework-free: services use it; the HTTP side (query aliases, headers) is ``kit.http``'s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import zlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar, TypeVarTuple

import orjson
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, func, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager.kit.errors import ValidationFailed
from taskmanager.models.base import Base

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# A cursor carries the list's filters (text search, up to 20 tags), so it may be long;
# still well inside the 16 KiB request-header limit.
MAX_CURSOR_CHARS = 8192
# The ``type`` of the 422 for a cursor we did not issue (or one that no longer matches its
# list): a state no schema can state, which clients (and fuzzers) can tell apart.
INVALID_CURSOR = "invalid_cursor"

ItemT = TypeVar("ItemT")
RowT = TypeVar("RowT")
ColumnsT = TypeVarTuple("ColumnsT")
EntityT = TypeVar("EntityT", bound=Base)


class Page(BaseModel, Generic[ItemT]):
    """One page of a list. Subclass it per item type (``class UserPage(Page[UserOut])``) so
    the OpenAPI document keeps a readable schema name."""

    items: list[ItemT]
    total: int = Field(description="How many items match (also the `X-Total-Count` header)")
    skip: int
    limit: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page"
    )


# Kept for the task list's schema name; every page can be continued by cursor.
CursorPage = Page


class InvalidCursor(ValueError):
    """The cursor was not made by us, was altered, or belongs to another list."""


@dataclass(frozen=True, slots=True)
class PageRequest:
    """The paging part of a list request, as sent."""

    skip: int = 0
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    # Whether ``limit`` was sent: a cursor carries its page size, which a sent limit overrides.
    limit_sent: bool = False


@dataclass(frozen=True, slots=True)
class KeysetCursor:
    """Where a keyset page ended, and the query it belongs to."""

    query: dict[str, Any]
    limit: int
    # The last row's sort value in JSON form (an ISO string, int, str or None).
    value: Any
    last_id: int
    # The list's total as counted when the list was started; None: count it on each page.
    total: int | None = None


@dataclass(frozen=True, slots=True)
class Seek:
    """Where the previous page ended: its last row's sort value (typed) and id."""

    value: Any
    last_id: int


@dataclass(frozen=True, slots=True)
class Resumed:
    """What a list request asks for once its cursor (if any) is read."""

    query: dict[str, Any]
    skip: int
    limit: int
    seek: Seek | None
    # The total the cursor carries (see KeysetCursor.total), if any.
    total: int | None = None


@dataclass(frozen=True, slots=True)
class ListPage(Generic[RowT]):
    """A page of rows with what the response needs: the total and the next cursor."""

    rows: Sequence[RowT]
    total: int
    skip: int
    limit: int
    next_cursor: str | None


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(payload: bytes, key: str, context: bytes) -> bytes:
    return hmac.new(key.encode(), context + b"\0" + payload, hashlib.sha256).digest()[:16]


def encode_cursor(cursor: KeysetCursor, key: str, *, context: bytes) -> str:
    """Sign a cursor. ``context`` names the list (``b"tasks/v2"``) so lists cannot swap cursors."""
    data: dict[str, Any] = {
        "q": cursor.query,
        "n": cursor.limit,
        "v": cursor.value,
        "i": cursor.last_id,
    }
    if cursor.total is not None:
        data["t"] = cursor.total
    payload = zlib.compress(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
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
    # Signed by us, so the payload is ours: decompressing it cannot be a bomb.
    try:
        data = orjson.loads(zlib.decompress(payload))
        cursor = KeysetCursor(
            query=data["q"],
            limit=data["n"],
            value=data["v"],
            last_id=data["i"],
            total=data.get("t"),
        )
    except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise InvalidCursor("cursor is malformed") from None
    if (
        not isinstance(cursor.query, dict)
        or not isinstance(cursor.limit, int)
        or not isinstance(cursor.last_id, int)
        or not isinstance(cursor.total, int | None)
    ):
        raise InvalidCursor("cursor is malformed")
    return cursor


def invalid_cursor(message: str) -> ValidationFailed:
    return ValidationFailed.field(("query", "cursor"), message, INVALID_CURSOR)


def resume(
    page: PageRequest,
    query: dict[str, Any],
    sent: Collection[str],
    *,
    key: str,
    context: bytes,
) -> Resumed:
    """Read a list request: the query it continues, and where its page starts.

    ``query`` is the list's filters and sort in JSON form as this request gives them,
    ``sent`` the names the client actually sent. Without a cursor that is the answer. With
    one, the cursor's query is used; every name in ``sent`` must hold the cursor's value.
    Raises ValidationFailed (422) for a bad cursor, a mismatch, or ``skip`` with a cursor.
    """
    if page.cursor is None:
        return Resumed(query=query, skip=page.skip, limit=page.limit, seek=None)
    if page.skip:
        raise ValidationFailed.field(
            ("query", "skip"), "cannot be combined with cursor", "parameter_conflict"
        )
    try:
        cursor = decode_cursor(page.cursor, key, context=context)
    except InvalidCursor as exc:
        raise invalid_cursor(str(exc)) from None
    for name in sorted(sent):
        if name in query and query[name] != cursor.query.get(name):
            raise ValidationFailed.field(
                ("query", name),
                f"does not match the cursor, which continues {name}="
                f"{orjson.dumps(cursor.query.get(name)).decode()}; leave it out or send that",
                INVALID_CURSOR,
            )
    limit = page.limit if page.limit_sent else cursor.limit
    return Resumed(
        query=cursor.query,
        skip=0,
        limit=limit,
        seek=Seek(cursor.value, cursor.last_id),
        total=cursor.total,
    )


def json_sort_value(value: Any) -> Any:
    """A sort value as a cursor carries it (datetimes as ISO strings)."""
    return value.isoformat() if isinstance(value, datetime) else value


def finish_page(
    rows: Sequence[RowT],
    resumed: Resumed,
    total: int,
    *,
    row_id: Callable[[RowT], int],
    key: str,
    context: bytes,
    sort_value: Callable[[RowT], Any] | None = None,
    carry_total: bool = False,
) -> ListPage[RowT]:
    """The page from ``limit + 1`` fetched rows: the extra row says there is a next page.

    ``sort_value``: the row's value in the list's order; None for lists ordered by id alone.
    ``carry_total``: put ``total`` in the next cursor, so the pages that follow need not
    count again (see KeysetCursor.total).
    """
    next_cursor = None
    if len(rows) > resumed.limit:
        rows = rows[: resumed.limit]
        last = rows[-1]
        next_cursor = encode_cursor(
            KeysetCursor(
                query=resumed.query,
                limit=resumed.limit,
                value=None if sort_value is None else json_sort_value(sort_value(last)),
                last_id=row_id(last),
                total=total if carry_total else None,
            ),
            key,
            context=context,
        )
    return ListPage(
        rows=rows, total=total, skip=resumed.skip, limit=resumed.limit, next_cursor=next_cursor
    )


def after_row(
    sort_column: ColumnElement[Any] | None,
    id_column: ColumnElement[int],
    seek: Seek,
    *,
    descending: bool = False,
) -> ColumnElement[bool]:
    """The keyset condition "comes after the row ``seek`` names" in ``(sort, id)`` order.

    ``sort_column`` None: the list is ordered by id alone. A row-value comparison, which both
    backends answer from an index on ``(..., sort, id)``.
    """
    last_id = literal(seek.last_id, id_column.type)
    if sort_column is None:
        return id_column < last_id if descending else id_column > last_id
    key = tuple_(sort_column, id_column)
    bound = tuple_(literal(seek.value, sort_column.type), last_id)
    return key < bound if descending else key > bound


def seek_datetime(seek: Seek | None) -> Seek | None:
    """A seek whose JSON sort value is an ISO datetime, typed back; InvalidCursor if not."""
    if seek is None:
        return None
    try:
        return Seek(datetime.fromisoformat(seek.value), seek.last_id)
    except (TypeError, ValueError):
        raise invalid_cursor("cursor is malformed") from None


@dataclass(frozen=True, slots=True)
class Window:
    """The rows a list's query fetches for one page: those after ``seek`` (keyset pages),
    ``skip`` rows in (offset pages), at most ``limit`` (the page size plus one)."""

    seek: Seek | None
    skip: int
    limit: int


def keyset_select(
    stmt: Select[*ColumnsT],
    window: Window,
    id_column: ColumnElement[int],
    *,
    sort_column: ColumnElement[Any] | None = None,
    descending: bool = False,
) -> Select[*ColumnsT]:
    """``stmt`` narrowed to ``window`` in ``(sort_column, id_column)`` order (by id alone
    when ``sort_column`` is None): the one shape of every list's page query."""
    if window.seek is not None:
        stmt = stmt.where(after_row(sort_column, id_column, window.seek, descending=descending))
    order = [id_column] if sort_column is None else [sort_column, id_column]
    return (
        stmt.order_by(*(column.desc() if descending else column for column in order))
        .offset(window.skip)
        .limit(window.limit)
    )


async def count_rows(session: AsyncSession, table: Any, *where: ColumnElement[bool]) -> int:
    """How many rows of ``table`` (a mapped class or table) match ``where``: a list's total."""
    return (
        await session.execute(select(func.count()).select_from(table).where(*where))
    ).scalar_one()


async def entity_page(
    session: AsyncSession,
    entity: type[EntityT],
    window: Window,
    *where: ColumnElement[bool],
    sorted_by: str | None = None,
    descending: bool = False,
) -> tuple[Sequence[EntityT], int]:
    """The rows of ``entity`` that match ``where`` in ``window``, ordered by the column
    ``sorted_by`` (None: by id alone) then ``id``, and how many match: a list of one table."""
    columns = entity.__table__.c
    stmt = keyset_select(
        select(entity).where(*where),
        window,
        columns.id,
        sort_column=None if sorted_by is None else columns[sorted_by],
        descending=descending,
    )
    total = await count_rows(session, entity, *where)
    return (await session.scalars(stmt)).all(), total


@dataclass(frozen=True, slots=True)
class KeysetList(Generic[RowT]):
    """One list's paging rules, declared once beside its service: the name its cursors are
    signed for (``b"taskmanager/comments/cursor/v1"``), its rows' id, and, for a list ordered
    by a datetime before the id (``created_at``), that value."""

    context: bytes
    row_id: Callable[[RowT], int]
    sorted_by: Callable[[RowT], datetime] | None = None

    async def page(
        self,
        page: PageRequest,
        fetch: Callable[[Window], Awaitable[tuple[Sequence[RowT], int]]],
        *,
        key: str,
        scope: dict[str, Any] | None = None,
    ) -> ListPage[RowT]:
        """The page ``page`` asks for: its cursor read (``resume``), ``fetch`` (the rows in
        the window and the list's total) called once, the next cursor made (``finish_page``).

        ``scope``: what narrows the list to one owner or parent (``{"task_id": 7}``), in the
        cursor's query, so a cursor of another task's list does not continue this one.
        Raises ValidationFailed (422) for a bad or mismatched cursor.
        """
        query = {} if scope is None else scope
        resumed = resume(page, query, query, key=key, context=self.context)
        seek = resumed.seek if self.sorted_by is None else seek_datetime(resumed.seek)
        rows, total = await fetch(Window(seek, resumed.skip, resumed.limit + 1))
        return finish_page(
            rows,
            resumed,
            total,
            row_id=self.row_id,
            sort_value=self.sorted_by,
            key=key,
            context=self.context,
        )
