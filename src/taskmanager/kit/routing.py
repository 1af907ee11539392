"""415 for a body sent with a content type the route does not take; the response for a hook.

FastAPI's strict content-type mode does not refuse such a body: it hands the raw bytes to
validation, which answers a confusing 422. ``BodyCheckedRoute`` (every domain router's
``route_class``) checks before the body is parsed and knows its own route, so it can tell
JSON routes (JSON or ``+json``) from form routes (the OAuth2 login form, multipart
uploads). It also hands a POST's finished response to the request's transaction hook
(``kit.transaction``: the ``Idempotency-Key`` record commits with the change). Other routes
without a body get no wrapper at all, so the hot GETs pay nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Literal

from fastapi import Request, params
from fastapi.routing import APIRoute
from starlette.responses import Response

from taskmanager.kit import transaction
from taskmanager.kit.db import SAFE_METHODS
from taskmanager.kit.errors import UnsupportedMediaType

BodyKind = Literal["none", "json", "form"]
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_KIND_ATTRIBUTE = "_taskmanager_body_kind"


def _body_kind(route: APIRoute) -> BodyKind:
    kind: BodyKind | None = getattr(route, _KIND_ATTRIBUTE, None)
    if kind is None:
        field = route.body_field
        if field is None:
            kind = "none"
        elif isinstance(field.field_info, params.Form):  # File is a Form too
            kind = "form"
        else:
            kind = "json"
        setattr(route, _KIND_ATTRIBUTE, kind)
    return kind


def _has_body(request: Request) -> bool:
    headers = request.headers
    length = headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in headers


def require_supported_media_type(request: Request, kind: BodyKind) -> None:
    """Refuse (415) a body whose content type a route of this kind cannot read."""
    if kind == "none" or request.method in SAFE_METHODS or not _has_body(request):
        return
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "json":
        if media_type == "application/json" or (
            media_type.startswith("application/") and media_type.endswith("+json")
        ):
            return
        expected = "application/json"
    else:
        if media_type in _FORM_TYPES:
            return
        expected = " or ".join(_FORM_TYPES)
    raise UnsupportedMediaType(
        f"Content-Type {media_type or '(none)'!r} is not supported here; send {expected}"
    )


class BodyCheckedRoute(APIRoute):
    """An APIRoute that answers 415 for a body in a content type it cannot read."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        kind = _body_kind(self)
        if kind == "none" and "POST" not in (self.methods or ()):
            return handler

        async def checked_handler(request: Request) -> Response:
            require_supported_media_type(request, kind)
            response = await handler(request)
            hook = transaction.hook_of(request.scope)
            if hook is not None:
                hook.response_ready(response)
            return response

        return checked_handler
