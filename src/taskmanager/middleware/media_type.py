"""415 for a body sent with a content type the route does not take.

FastAPI's strict content-type mode does not refuse such a body: it hands the raw bytes to
validation, which answers a confusing 422. This app-wide dependency runs before body
validation is reported and knows the matched route, so it can tell JSON routes (JSON or
``+json``) from form routes (the OAuth2 login form, multipart uploads).
"""

from __future__ import annotations

from typing import Literal

from fastapi import Request, params
from fastapi.routing import APIRoute

from taskmanager.db import SAFE_METHODS
from taskmanager.errors import UnsupportedMediaType

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


async def require_supported_media_type(request: Request) -> None:
    """Refuse (415) a body whose content type the matched route cannot read."""
    if request.method in SAFE_METHODS:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    kind = _body_kind(route)
    if kind == "none" or not _has_body(request):
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
