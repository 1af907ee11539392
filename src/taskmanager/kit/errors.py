"""The error catalogue: every error a client can see, as a class that carries its HTTP face.

Services raise these and know nothing of HTTP; each class says once which status, problem
``code`` (API.md §1) and OpenAPI description it stands for. ``kit.problems`` renders any of
them as RFC 9457 ``application/problem+json``; the exception handlers, ``problem_responses``
(per-route OpenAPI) and every middleware build their answers from these classes, so a status
and its code are written in exactly one place.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every error a client may cause. ``detail`` is safe to show the client."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    description: ClassVar[str] = "An unexpected error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}

    @classmethod
    def title(cls) -> str:
        """The status's reason phrase (RFC 9110 §15), the problem's ``title``."""
        return HTTPStatus(cls.status).phrase

    def extra(self) -> dict[str, Any]:
        """Members added to the problem body beyond the standard ones."""
        return {}


class MalformedRequest(DomainError):
    """The request cannot be understood (bad JSON, a PATCH that changes nothing)."""

    status = 400
    code = "MALFORMED_REQUEST"
    description = "Malformed request"


class NotAuthenticated(DomainError):
    """No credentials were sent."""

    status = 401
    code = "NOT_AUTHENTICATED"
    description = "Missing, invalid or expired credentials"


class InvalidCredentials(DomainError):
    """Credentials were sent but are wrong, expired, revoked or belong to an inactive user."""

    status = 401
    code = "INVALID_CREDENTIALS"
    description = "Invalid, expired or revoked credentials"


class Forbidden(DomainError):
    """The caller can see the resource but its role or scope does not allow the action."""

    status = 403
    code = "FORBIDDEN"
    description = "The role or API-key scope does not allow this action"


class NotFound(DomainError):
    """Missing, or present but invisible to the caller (never reveal which)."""

    status = 404
    code = "RESOURCE_NOT_FOUND"
    description = "Not found, or not visible to the caller"


class MethodNotAllowed(DomainError):
    """The path exists but not with this method; ``headers`` carries ``Allow``."""

    status = 405
    code = "METHOD_NOT_ALLOWED"
    description = "Method not allowed; see Allow"


class Conflict(DomainError):
    """The change clashes with existing state (unique value, last owner, request in flight)."""

    status = 409
    code = "CONFLICT"
    description = "Conflicts with existing data"


class PreconditionFailed(DomainError):
    """``If-Match`` did not match the current ETag (RFC 9110 §13.1.1)."""

    status = 412
    code = "PRECONDITION_FAILED"
    description = "If-Match does not match the current ETag"


class PayloadTooLarge(DomainError):
    """The body is over the configured limit."""

    status = 413
    code = "PAYLOAD_TOO_LARGE"
    description = "The request body is over the size limit"


class HeadersTooLarge(DomainError):
    """The request's header section is over the configured limit (RFC 6585 §5)."""

    status = 431
    code = "HEADERS_TOO_LARGE"
    description = "The request header section is over the size limit"


class UnsupportedMediaType(DomainError):
    """The body's content type is not one the route accepts."""

    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    description = "Unsupported content type"


class ValidationFailed(DomainError):
    """Input that is well-formed but not acceptable (request validation or a business rule).

    ``errors`` follows the ``[{loc, msg, type}]`` shape of request validation.
    """

    status = 422
    code = "VALIDATION_ERROR"
    description = "Validation failed"
    # A body of 10,000 bad items must not answer with 10,000 entries (API.md §1).
    MAX_ERRORS: ClassVar[int] = 50

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail, headers=headers)
        self.errors = errors or []

    @classmethod
    def field(
        cls, loc: tuple[str | int, ...], msg: str, type_: str = "value_error"
    ) -> ValidationFailed:
        """One failing field, e.g. ``ValidationFailed.field(("body", "assignee_id"), "...")``."""
        return cls(msg, errors=[{"loc": list(loc), "msg": msg, "type": type_}])

    def extra(self) -> dict[str, Any]:
        """``errors`` (the first ``MAX_ERRORS``) and ``error_count`` (all of them)."""
        return {"errors": self.errors[: self.MAX_ERRORS], "error_count": len(self.errors)}


class IdempotencyKeyReused(DomainError):
    """The same ``Idempotency-Key`` was sent with a different request."""

    status = 422
    code = "IDEMPOTENCY_KEY_REUSED"
    description = "The Idempotency-Key was used with a different request"


class RateLimited(DomainError):
    """Too many requests; ``headers`` carries ``Retry-After`` (RFC 6585 §4)."""

    status = 429
    code = "RATE_LIMITED"
    description = "Rate limited; see Retry-After"


class InternalError(DomainError):
    """Anything unexpected. The detail never carries exception text; the log has it."""

    status = 500
    code = "INTERNAL_ERROR"
    description = "An unexpected error"


class ServiceUnavailable(DomainError):
    """A dependency (database, Redis) is down, or the server is shedding load."""

    status = 503
    code = "SERVICE_UNAVAILABLE"
    description = "A dependency is unavailable; see Retry-After"


class RequestTimedOut(DomainError):
    """The server-side time budget ran out."""

    status = 504
    code = "REQUEST_TIMEOUT"
    description = "The request's time budget ran out"


# For errors raised by the framework itself (an unknown route, a wrong method): which
# class speaks for a bare status. Statuses without a class here are internal errors.
_BY_STATUS: dict[int, type[DomainError]] = {
    cls.status: cls
    for cls in (
        MalformedRequest,
        NotAuthenticated,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PreconditionFailed,
        PayloadTooLarge,
        HeadersTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        RateLimited,
        InternalError,
        ServiceUnavailable,
        RequestTimedOut,
    )
}


def error_for_status(status: int) -> type[DomainError]:
    """The catalogue class that speaks for an HTTP status the framework produced."""
    return _BY_STATUS.get(status, InternalError)
