"""Entity ETags ``"<id>-<version>"`` and the conditional headers that use them (RFC 9110 §13.1).

One module for every resource that carries a version column, so that
parsing, comparison rules and range checks cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from taskmanager.kit.errors import PreconditionFailed

# The version column is a 32-bit INTEGER: a larger number in a header must simply match
# nothing rather than reach the driver, where PostgreSQL would reject it (a 500).
MAX_VERSION = 2**31 - 1

# One entity-tag of a list: optional weak prefix, quoted opaque part, then a comma or the end.
_ENTITY_TAG = re.compile(r'\s*(W/)?"([^"]*)"\s*(?:,|$)')


def strong_etag(entity_id: int, version: int, variant: str = "") -> str:
    """A strong ETag ``"<id>-<version>"``: ids are never reused and every change bumps the
    version. ``variant`` names another representation of the same version (``"<id>-<version>-
    <variant>"``), which a strong ETag must tell apart (RFC 9110 §8.8.3); ``If-Match`` takes
    only the plain form (``expected_versions``)."""
    return f'"{entity_id}-{version}-{variant}"' if variant else f'"{entity_id}-{version}"'


def _entity_tags(header: str) -> list[tuple[bool, str]]:
    """(is_weak, opaque) pairs of an If-Match / If-None-Match list; junk entries are dropped."""
    return [(bool(m.group(1)), m.group(2)) for m in _ENTITY_TAG.finditer(header)]


def none_match(header: str | None, etag: str) -> bool:
    """True when ``If-None-Match`` matches, i.e. the client's copy is current (→ 304).

    Uses the weak comparison the RFC prescribes for ``If-None-Match``: ``W/`` is ignored.
    The comparison is textual, so no header value can reach the database.
    """
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(f'"{opaque}"' == etag for _weak, opaque in _entity_tags(header))


def strong_match(header: str | None, *etags: str) -> bool:
    """True when ``If-Match`` allows a write to a resource whose current ETags are ``etags``:
    no header, ``*``, or one of them by the strong comparison (weak tags match nothing)."""
    if header is None or header.strip() == "*":
        return True
    return any(not weak and f'"{opaque}"' in etags for weak, opaque in _entity_tags(header))


def expected_versions(header: str | None, entity_id: int) -> list[int] | None:
    """The versions ``If-Match`` accepts for this entity; None means "no condition".

    ``*`` only asks that the entity exists, which every update requires anyway. Strong
    comparison applies, so weak tags, malformed tags, tags of other entities and versions
    no column can hold match nothing: an empty list, which makes the update a guaranteed
    412 (or 404 if the entity is gone).
    """
    if header is None:
        return None
    if header.strip() == "*":
        return None
    owner = str(entity_id)
    versions: list[int] = []
    for weak, opaque in _entity_tags(header):
        tag_owner, _, digits = opaque.partition("-")
        if weak or tag_owner != owner:
            continue
        # Only the exact text an ETag of ours can have: ASCII digits, no leading zero,
        # within the column's range (checked on the length first so int() stays cheap).
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 10):
            continue
        version = int(digits)
        if str(version) == digits and 1 <= version <= MAX_VERSION and version not in versions:
            versions.append(version)
    return versions


def require_version(version: int, expected: Collection[int] | None, what: str) -> None:
    """Raise PreconditionFailed (412) unless ``version`` is one ``If-Match`` accepts.

    For a row read under the lock its write holds (or one that never changes), where the
    comparison cannot go stale before the write; ``expected`` None means no condition.
    """
    if expected is not None and version not in expected:
        raise stale(what)


def stale(what: str) -> PreconditionFailed:
    """The 412 of a write whose ``If-Match`` names no current ETag of ``what``."""
    return PreconditionFailed(f"The {what} has changed since you read it (ETag mismatch)")
