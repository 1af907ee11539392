"""Task ETags and the conditional headers that use them (RFC 9110 §8.8.3, §13.1)."""

from __future__ import annotations


def task_etag(task_id: int, version: int) -> str:
    """A strong ETag: ids are never reused and every change bumps the version."""
    return f'"{task_id}-{version}"'


def _tags(header: str) -> list[str]:
    return [part.strip() for part in header.split(",") if part.strip()]


def none_match(header: str | None, etag: str) -> bool:
    """True when ``If-None-Match`` matches, i.e. the client's copy is current (→ 304).

    Uses the weak comparison the RFC prescribes for ``If-None-Match``: ``W/`` is ignored.
    """
    if not header:
        return False
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in _tags(header))


def expected_versions(header: str | None, task_id: int) -> list[int] | None:
    """The versions ``If-Match`` accepts for this task; None means "no condition".

    ``*`` only asks that the task exists, which every update requires anyway. Strong
    comparison applies, so weak tags, malformed tags and tags of other tasks match nothing:
    an empty list, which makes the update a guaranteed 412 (or 404 if the task is gone).
    """
    if header is None:
        return None
    tags = _tags(header)
    if "*" in tags:
        return None
    prefix = f'"{task_id}-'
    versions: list[int] = []
    for tag in tags:
        if tag.startswith(prefix) and tag.endswith('"'):
            digits = tag[len(prefix) : -1]
            if digits.isascii() and digits.isdigit() and len(digits) <= 10:
                versions.append(int(digits))
    return versions
