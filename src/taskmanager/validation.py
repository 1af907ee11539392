"""Field validators shared by every domain's request schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

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
