"""The route class of every route: the checks FastAPI does not make, made once for all.

``CheckedRoute`` (every router's ``route_class``, the app's own included) adds to each route:

- **HEAD on every GET route** (RFC 9110 §9.3.2): the GET handler answers and the request
  context middleware drops the body, so the headers are exactly the GET's.
- **Canonical integers** in the path and the query: plain decimal digits, no sign, no
  leading zero, no ``_`` (Python's ``int()`` and pydantic would read ``1_0`` as 10 and
  ``+5`` as 5, so one resource would have many URLs).
- **Strict query strings**: a parameter the route does not declare is a 422 naming it
  (``?stauts=completed`` would otherwise silently return everything), and a parameter that
  is not repeatable may be sent only once.
- **ETag and 304 on every GET**: a route that sets no ``ETag`` gets a strong one from its
  body's bytes, and a matching ``If-None-Match`` gets 304 (RFC 9110 §13.1.2).
- **Location on every 201**: a route that names none gets the collection's path plus the
  new item's ``id``.
- **415** for a body sent with a content type the route does not take. FastAPI's strict
  content-type mode does not refuse such a body: it hands the raw bytes to validation,
  which answers a confusing 422. The route knows whether it reads JSON (JSON or ``+json``)
  or a form (the OAuth2 login form, multipart uploads).
- **The transaction hook**: a POST's finished response (its ``Location`` included) goes to
  the request's transaction hook (``kit.transaction``: the ``Idempotency-Key`` record
  commits with the change).

Everything a route needs is worked out once, when the handler is built, from the route's
own parameter declarations, so new routes get all of it without a line of their own.

``match_included_routers_once`` makes the app's included routers cheap to match: FastAPI
scans an included router's routes once to decide that it matches and again to handle the
request, and tries every router in turn; each one now answers "no" from the path's literal
prefixes alone and remembers its match for the handling.
"""

from __future__ import annotations

import hashlib
import re
import types
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import parse_qsl

import orjson
from fastapi import Request, params
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, _IncludedRouter
from pydantic import BaseModel
from starlette._utils import get_route_path
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from taskmanager.kit import transaction
from taskmanager.kit.db import SAFE_METHODS
from taskmanager.kit.errors import UnsupportedMediaType
from taskmanager.kit.etags import none_match

BodyKind = Literal["none", "json", "form"]
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
CANONICAL_INTEGER = re.compile(r"0|[1-9][0-9]*")
INTEGER_MESSAGE = "must be an integer in plain decimal digits, e.g. 10"
_REPEATABLE = (list, tuple, set, frozenset, Sequence)


@dataclass(frozen=True, slots=True)
class _Param:
    """What the route's declarations say about one path or query parameter."""

    name: str
    integer: bool  # accepts an integer (so its text must be canonical)
    literals: frozenset[str]  # text values it also accepts as they are (``me``)
    repeatable: bool


@dataclass(frozen=True, slots=True)
class _Rules:
    body: BodyKind
    path: tuple[_Param, ...]
    query: dict[str, _Param]


def _flatten(annotation: Any) -> list[Any]:
    """The concrete types inside ``Annotated``, unions and ``Optional``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _flatten(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [leaf for arg in get_args(annotation) for leaf in _flatten(arg)]
    return [annotation]


def _describe(name: str, annotation: Any) -> _Param:
    leaves = _flatten(annotation)
    repeatable = False
    items: list[Any] = []
    for leaf in leaves:
        origin = get_origin(leaf)
        if origin is not None and isinstance(origin, type) and issubclass(origin, _REPEATABLE):
            repeatable = True
            for arg in get_args(leaf):
                items.extend(_flatten(arg))
        else:
            items.append(leaf)
    integer = any(item is int for item in items)
    literals = frozenset(
        str(value)
        for item in items
        if get_origin(item) is Literal
        for value in get_args(item)
        if isinstance(value, str)
    )
    return _Param(name=name, integer=integer, literals=literals, repeatable=repeatable)


def _query_params(field: Any) -> list[_Param]:
    annotation = field.field_info.annotation
    model = next(
        (
            leaf
            for leaf in _flatten(annotation)
            if isinstance(leaf, type) and issubclass(leaf, BaseModel)
        ),
        None,
    )
    if model is None:
        return [_describe(field.alias, annotation)]
    # A query-parameter model (``Annotated[TaskListQuery, Query()]``): its fields are the
    # parameters, by alias.
    return [
        _describe(info.alias or name, info.annotation) for name, info in model.model_fields.items()
    ]


def _body_kind(route: APIRoute) -> BodyKind:
    field = route.body_field
    if field is None:
        return "none"
    if isinstance(field.field_info, params.Form):  # File is a Form too
        return "form"
    return "json"


def _dependants(root: Dependant) -> list[Dependant]:
    """The route's dependant and every sub-dependency's, each once."""
    found: list[Dependant] = []
    pending = [root]
    while pending:
        current = pending.pop()
        if any(current is seen for seen in found):
            continue
        found.append(current)
        pending.extend(current.dependencies)
    return found


def _rules(route: APIRoute) -> _Rules:
    path: dict[str, _Param] = {}
    query: dict[str, _Param] = {}
    for dependant in _dependants(route.dependant):
        for field in dependant.path_params:
            path[field.alias] = _describe(field.alias, field.field_info.annotation)
        for field in dependant.query_params:
            for param in _query_params(field):
                query[param.name] = param
    return _Rules(body=_body_kind(route), path=tuple(path.values()), query=query)


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


def _integer_error(param: _Param, value: str, where: str) -> dict[str, Any] | None:
    if not param.integer or value in param.literals or CANONICAL_INTEGER.fullmatch(value):
        return None
    return {
        "loc": [where, param.name],
        "msg": INTEGER_MESSAGE,
        "type": "int_parsing",
        "input": value,
    }


# Credentials never travel in a URL (logs, proxies and browser history keep URLs).
_CREDENTIAL_NAMES = frozenset({"api_key", "apikey", "key", "token", "access_token"})


def _unknown_parameter(name: str, rules: _Rules) -> dict[str, Any]:
    if name.lower().replace("-", "_") in _CREDENTIAL_NAMES:
        msg = (
            "credentials are not accepted in the URL; send API keys in the X-API-Key header "
            "and access tokens as Authorization: Bearer"
        )
    else:
        known = ", ".join(sorted(rules.query)) or "none"
        msg = f"is not a parameter of this operation (known: {known})"
    return {"loc": ["query", name], "msg": msg, "type": "unknown_parameter"}


def parameter_errors(
    rules: _Rules, path_params: dict[str, Any], query_string: bytes
) -> list[dict[str, Any]]:
    """Validation errors (``[{loc, msg, type}]``) for the request's path and query text."""
    errors: list[dict[str, Any]] = []
    for param in rules.path:
        value = path_params.get(param.name)
        if isinstance(value, str):
            error = _integer_error(param, value, "path")
            if error:
                errors.append(error)
    if not query_string:
        return errors
    seen: dict[str, int] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        seen[name] = seen.get(name, 0) + 1
        declared = rules.query.get(name)
        if declared is None:
            if seen[name] == 1:
                errors.append(_unknown_parameter(name, rules))
            continue
        if seen[name] == 2 and not declared.repeatable:
            errors.append(
                {
                    "loc": ["query", name],
                    "msg": "may be sent only once",
                    "type": "repeated_parameter",
                }
            )
        error = _integer_error(declared, value, "query")
        if error:
            errors.append(error)
    return errors


SAFE_READS = frozenset({"GET", "HEAD"})
# Headers a 304 repeats from the 200 it stands for (RFC 9110 §15.4.5).
_NOT_MODIFIED_HEADERS = ("etag", "cache-control", "vary", "content-location", "expires")


def body_etag(body: bytes) -> str:
    """A strong ETag from the representation's bytes, for resources without a version."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def conditional(request: Request, response: Response) -> Response:
    """Give a GET's 200 an ETag (its own, or one from the body) and answer a matching
    ``If-None-Match`` with 304 (RFC 9110 §13.1.2). Streamed bodies are left alone."""
    etag = response.headers.get("etag")
    if etag is None:
        if isinstance(response, StreamingResponse):
            return response
        etag = body_etag(bytes(response.body))
        response.headers["ETag"] = etag
    if none_match(request.headers.get("if-none-match"), etag):
        return Response(
            status_code=304,
            headers={k: v for k, v in response.headers.items() if k in _NOT_MODIFIED_HEADERS},
        )
    return response


def _locate(request: Request, response: Response) -> None:
    """``Location`` of a created resource that the route did not name: the collection's
    path plus the new item's ``id`` (``POST /tasks/7/comments`` → ``/tasks/7/comments/12``)."""
    if isinstance(response, StreamingResponse):
        return
    try:
        created = orjson.loads(bytes(response.body))
    except orjson.JSONDecodeError:
        return
    if isinstance(created, dict) and isinstance(created.get("id"), int):
        response.headers["Location"] = f"{request.url.path.rstrip('/')}/{created['id']}"


class _CanonicalIntegerConvertor(Convertor[str]):
    """A path segment that is an integer in plain decimal digits (left as text for pydantic,
    which checks the range). Anything else does not match the route, so ``/tasks/1_0`` is
    no task (404) and ``PUT /tasks/export`` is a method ``/tasks/export`` lacks (405)."""

    regex = CANONICAL_INTEGER.pattern

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("canonical_int", _CanonicalIntegerConvertor())


def _with_integer_convertors(path: str, endpoint: Callable[..., Any]) -> str:
    """``/tasks/{task_id}`` → ``/tasks/{task_id:canonical_int}`` where ``task_id`` is an int."""
    try:
        hints = get_type_hints(endpoint, include_extras=True)
    except (NameError, TypeError):
        return path

    def convert(match: re.Match[str]) -> str:
        name = match.group(1)
        hint = hints.get(name)
        if (
            hint is not None
            and _describe(name, hint).integer
            and not _describe(name, hint).literals
        ):
            return f"{{{name}:canonical_int}}"
        return match.group(0)

    return re.sub(r"{(\w+)}", convert, path)


class CheckedRoute(APIRoute):
    """An APIRoute that also answers HEAD, and checks integers, query names and content types."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(_with_integer_convertors(path, endpoint), endpoint, **kwargs)
        if self.methods and "GET" in self.methods:
            self.methods.add("HEAD")

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        rules = _rules(self)
        # Undocumented pages (the docs UIs, whose OAuth2 redirect takes any query) take any
        # query string; the documented API takes only what its document says.
        strict_query = self.include_in_schema

        async def checked_handler(request: Request) -> Response:
            query = request.scope.get("query_string", b"") if strict_query else b""
            errors = parameter_errors(rules, request.path_params, query)
            if errors:
                raise RequestValidationError(errors)
            require_supported_media_type(request, rules.body)
            response = await handler(request)
            if response.status_code == 200 and request.method in SAFE_READS:
                return conditional(request, response)
            if response.status_code == 201 and "location" not in response.headers:
                _locate(request, response)
            hook = transaction.hook_of(request.scope)
            if hook is not None:
                hook.response_ready(response)
            return response

        return checked_handler


_MATCH_KEY = "taskmanager.included_match"


class _MatchOnceRouter(_IncludedRouter):
    """An included router that rejects a path by its literal prefixes and matches it once.

    FastAPI (0.16x) asks an included router whether it matches (one scan of its routes) and
    then, to handle the request, scans them again; and the app tries each included router in
    turn. Here a path that starts with none of the router's literal route prefixes (the text
    before a route's first ``{``) is no match at once, and a match is kept in the request's
    scope, keyed by path, method and type, for the handling to reuse. Everything else is
    FastAPI's: what matches, in what order, and how it is handled.
    """

    _prefixes: tuple[str, ...] | None = None
    _prefixes_known = False

    def _literal_prefixes(self) -> tuple[str, ...] | None:
        """The literal start of every route's path; None if a route has no path template
        (a host route) or starts with a parameter, so nothing can be rejected early."""
        prefixes: set[str] = set()
        for context in self.effective_route_contexts():
            # As FastAPI names the route it selected: the inclusion's full path.
            template = getattr(context.starlette_route, "path_format", None) or getattr(
                context, "path_format", None
            )
            if not isinstance(template, str):
                return None
            literal = template.split("{", 1)[0]
            if literal in ("", "/"):
                return None
            prefixes.add(literal)
        return tuple(sorted(prefixes))

    def _match(self, scope: Scope) -> tuple[Match, Scope, BaseRoute | None, Any]:
        if not self._prefixes_known:
            # Worked out at the first request, not at start-up (cold start).
            self._prefixes = self._literal_prefixes()
            self._prefixes_known = True
        path = get_route_path(scope)
        if self._prefixes is not None and not path.startswith(self._prefixes):
            return Match.NONE, {}, None, None
        key = (path, scope.get("method"), scope["type"])
        cached = scope.get(_MATCH_KEY)
        if cached is not None and cached[0] is self and cached[1] == key:
            result: tuple[Match, Scope, BaseRoute | None, Any] = cached[2]
            return result
        result = super()._match(scope)
        if result[0] is not Match.NONE:
            scope[_MATCH_KEY] = (self, key, result)
        return result


def match_included_routers_once(routes: list[BaseRoute]) -> None:
    """Make each included router of ``routes`` (the app's, in place) a ``_MatchOnceRouter``:
    same routes, same order, same OpenAPI; cheaper to match."""
    for index, route in enumerate(routes):
        if type(route) is _IncludedRouter:
            routes[index] = _MatchOnceRouter(
                original_router=route.original_router, include_context=route.include_context
            )
