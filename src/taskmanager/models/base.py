"""The declarative base and the column types every table uses.

Pure SQLAlchemy: this layer imports nothing else of ours, so every other layer (the kit,
the domains, migrations) may use the tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    case,
    false,
    literal_column,
    or_,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only aliases INTEGER PRIMARY KEY to the rowid; PostgreSQL gets 64-bit ids.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")
JSONList = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def only_on(dialect: str, index: Index) -> Index:
    """An index that exists only on ``dialect`` (a GIN index has no SQLite counterpart).

    ``ddl_if`` keeps ``create_all`` from building it elsewhere; the ``info`` mark is what
    ``schema_filter`` reads, since Alembic's autogenerate does not honour ``ddl_if``.
    """
    index.info["only_on"] = dialect
    return index.ddl_if(dialect=dialect)


def schema_filter(dialect: str) -> Callable[..., bool]:
    """Alembic's ``include_object`` for a database of ``dialect``: skip other dialects' indexes."""

    def include_object(
        obj: Any, _name: str | None, type_: str, _reflected: bool, _compare_to: Any
    ) -> bool:
        if type_ != "index":
            return True
        wanted = obj.info.get("only_on") if isinstance(obj, Index) else None
        return wanted is None or wanted == dialect

    return include_object


def version_column(table: str) -> Mapped[int]:
    """A row version for an ETag ``"<id>-<version>"`` (RFC 9110 §8.8.3): 1 when inserted,
    one more on every UPDATE of the row that does not set it itself, whichever statement
    (ORM flush or Core ``update()``) makes the change, so no writer can forget to bump it.

    Tables using it set ``eager_defaults`` so an ORM flush reads the new value back with
    RETURNING instead of leaving an expired attribute (a lazy load is an error under asyncio).
    """
    return mapped_column(
        Integer, default=1, server_default="1", onupdate=literal_column(f"{table}.version") + 1
    )


def stamp_if_changed(columns: Any, values: Mapping[str, Any], now: Any) -> dict[str, Any]:
    """``version`` and ``updated_at`` for an UPDATE that sets ``values`` (column name → a
    value or SQL expression), each moved only when some value differs from the row's
    (null-safe: ``IS DISTINCT FROM``, SQLite's ``IS NOT``). API.md §6: the version goes up
    on every change — a write of the values a row already has is none, so its ETag (and a
    client's ``If-Match``) holds. ``columns``: the table's ``c``; ``now``: the time to
    stamp (a value or a bound parameter). Setting ``version`` here overrides
    ``version_column``'s unconditional bump for this statement. No ``values`` (an UPDATE
    that only re-checks its conditions) is no change.
    """
    differs = or_(
        false(), *(columns[name].is_distinct_from(value) for name, value in values.items())
    )
    return {
        "version": case((differs, columns.version + 1), else_=columns.version),
        "updated_at": case((differs, now), else_=columns.updated_at),
    }


# ``__mapper_args__`` of a table with a ``version_column``.
EAGER_DEFAULTS: dict[str, Any] = {"eager_defaults": True}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC: what every time column stores."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime bound to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
