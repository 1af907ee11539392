"""Domain errors. Services raise these; they know nothing of HTTP.

``taskmanager.problems`` is the one place that turns them into problem+json responses.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a client may cause. ``detail`` is safe to show the client."""

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class NotFound(DomainError):
    """Missing, or present but invisible to the caller (never reveal which)."""


class Forbidden(DomainError):
    """The caller can see the resource but its role or scope does not allow the action."""


class Conflict(DomainError):
    """The change clashes with existing state (unique value, last owner, request in flight)."""


class PreconditionFailed(DomainError):
    """``If-Match`` did not match the current ETag."""


class NotAuthenticated(DomainError):
    """No credentials were sent."""


class InvalidCredentials(DomainError):
    """Credentials were sent but are wrong, expired, revoked or belong to an inactive user."""


class MalformedRequest(DomainError):
    """The request cannot be understood (bad JSON, empty PATCH)."""


class UnsupportedMediaType(DomainError):
    """The body's content type is not one the route accepts."""


class PayloadTooLarge(DomainError):
    """The body is over the configured limit."""


class RateLimited(DomainError):
    """Too many requests; ``headers`` carries ``Retry-After``."""


class ServiceUnavailable(DomainError):
    """A dependency (database, Redis) is down."""


class RequestTimedOut(DomainError):
    """The server-side time budget ran out."""


class IdempotencyKeyReused(DomainError):
    """The same ``Idempotency-Key`` was sent with a different request."""


class ValidationFailed(DomainError):
    """A business rule rejected a well-formed value (e.g. assignee is not a project member).

    ``errors`` follows the same ``[{loc, msg, type}]`` shape as request validation.
    """

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []

    @classmethod
    def field(
        cls, loc: tuple[str | int, ...], msg: str, type_: str = "value_error"
    ) -> ValidationFailed:
        return cls(msg, errors=[{"loc": list(loc), "msg": msg, "type": type_}])
