"""Field types shared by every domain's request schemas and query parameters.

Each refuses what a database could not store or compare, so both backends answer 422 alike
(never a 500), and normalises what it accepts (times to UTC).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, StrictInt

# Ids are BIGINT: a larger one in a path, query or body must be a 422 (or simply match
# nothing) rather than reach the driver, which would overflow (a 500).
MAX_ID = 2**63 - 1


def storable_text(value: str) -> str:
    """Refuse what a database cannot store, so both backends answer 422 alike (never a 500).

    PostgreSQL text cannot hold NUL. A lone surrogate (a JSON ``\\ud800`` escape) is not
    encodable as UTF-8; pydantic's ``str`` validation already refuses it in request bodies,
    and this check keeps the guarantee for any other way a value reaches a model.
    """
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


StorableText = Annotated[str, AfterValidator(storable_text)]


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of the supported date range") from None


def _rfc3339_only(value: Any) -> Any:
    # Numbers would be read as Unix timestamps; the contract speaks RFC 3339 only.
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 date-time string with an offset")
    return value


# In a JSON body: a strict integer id, and an RFC 3339 date-time with an offset, in UTC.
EntityId = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]
UTCTimestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only), AfterValidator(_utc)]
# Query strings are text, so ids and datetimes there are parsed from strings, bounded alike.
QueryId = Annotated[int, Field(ge=1, le=MAX_ID)]
QueryDateTime = Annotated[AwareDatetime, AfterValidator(_utc)]
