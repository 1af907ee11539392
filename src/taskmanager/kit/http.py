"""The HTTP boundary every domain router shares: the API prefix, path, query and header
aliases, ``Location`` values, documented headers, and the router factory with derived
operation ids.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from taskmanager.kit.errors import DomainError
from taskmanager.kit.etags import none_match
from taskmanager.kit.fields import MAX_ID
from taskmanager.kit.pagination import (
    DEFAULT_LIMIT,
    MAX_CURSOR_CHARS,
    MAX_LIMIT,
    ListPage,
    Page,
    PageRequest,
)
from taskmanager.kit.problems import problem_responses
from taskmanager.kit.routing import CheckedRoute

API_PREFIX = "/api/v1"


def id_path(noun: str) -> Any:
    """A positive 64-bit id in the path: ``Annotated[int, id_path("comment")]``."""
    return Path(ge=1, le=MAX_ID, description=f"The {noun}'s id")


# Ids that several domains' routes take; a domain's own ids use ``id_path`` beside its router.
TaskId = Annotated[int, id_path("task")]
ProjectId = Annotated[int, id_path("project")]
UserId = Annotated[int, id_path("user")]

# Conditional requests (RFC 9110 §13.1), as the entity-tag lists ``kit.etags`` parses.
# Any text is accepted: a value that is not a list of our entity-tags simply matches nothing
# (If-Match: 412; If-None-Match: the full answer), which is the safe reading (RFC 9110 §13.1).
IfMatch = Annotated[
    str | None,
    Header(
        description="Apply only if the current ETag is one of these (else 412): `*` or "
        'entity-tags such as `"17-3"`; anything else matches nothing',
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(description="Answer 304 with no body if the current ETag is one of these"),
]

# Pages of a list (``kit.pagination``): offset pages, and keyset pages by cursor.
Skip = Annotated[int, Query(ge=0, le=MAX_ID, description="Rows to skip (offset pages)")]
# No default in the schema: a generated client would send it, and with a cursor a sent
# limit overrides the page size the cursor carries.
Limit = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_LIMIT,
        description=f"Page size, 1-{MAX_LIMIT}: {DEFAULT_LIMIT} when left out; a cursor "
        "continues with the size of the page it came from",
    ),
]
CursorParam = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_CURSOR_CHARS,
        pattern="^[A-Za-z0-9_-]+[.][A-Za-z0-9_-]+$",
        description=(
            "`next_cursor` from the previous page (keyset pages). It carries the list's "
            "filters, sort and page size: sent alone it continues the list; filters sent "
            "with it must match. Not with `skip`."
        ),
    ),
]


async def page_request(
    skip: Skip = 0, limit: Limit = None, cursor: CursorParam = None
) -> PageRequest:
    """The paging parameters every list takes (``kit.pagination``)."""
    return PageRequest(
        skip=skip,
        limit=DEFAULT_LIMIT if limit is None else limit,
        cursor=cursor,
        limit_sent=limit is not None,
    )


PageDep = Annotated[PageRequest, Depends(page_request)]


def list_headers(request: Request, page: ListPage[Any]) -> dict[str, str]:
    """``X-Total-Count`` and, with a next page, ``Link: <...?cursor=...>; rel="next"``.

    The link (RFC 8288) is relative to the request's own path; the cursor alone continues
    the list, so it carries no other parameter.
    """
    headers = {"X-Total-Count": str(page.total)}
    if page.next_cursor is not None:
        target = f"{request.url.path}?{urlencode({'cursor': page.next_cursor})}"
        headers["Link"] = f'<{target}>; rel="next"'
    return headers


def paged(response: Response, request: Request, page: ListPage[Any]) -> None:
    """Set the list headers on a route's ``response`` (for routes returning a model)."""
    response.headers.update(list_headers(request, page))


RowT = TypeVar("RowT")
ItemT = TypeVar("ItemT")
PageT = TypeVar("PageT", bound=Page[Any])


@dataclass(frozen=True, slots=True)
class Listing:
    """A list request (``kit.deps.ListingDep``): its paging, the key its cursors are signed
    with, and the request and response its list headers are read from and set on."""

    page: PageRequest
    signing_key: str
    request: Request
    response: Response

    def items(self, result: ListPage[RowT], item: Callable[[RowT], ItemT]) -> list[ItemT]:
        """The page's rows as ``item`` shows them, for a list answered as a bare array; sets
        ``X-Total-Count`` and ``Link`` (``list_headers``)."""
        paged(self.response, self.request, result)
        return [item(row) for row in result.rows]

    def page_of(
        self, model: type[PageT], result: ListPage[RowT], item: Callable[[RowT], Any]
    ) -> PageT:
        """The page as ``model`` (a ``Page`` subclass), items shown by ``item``; sets the
        list headers as ``items`` does."""
        return model(
            items=self.items(result, item),
            total=result.total,
            skip=result.skip,
            limit=result.limit,
            next_cursor=result.next_cursor,
        )


def location(*segments: str | int) -> str:
    """The API URL of a resource, for ``Location`` headers: ``location("tasks", 7)``."""
    return API_PREFIX + "".join(f"/{segment}" for segment in segments)


def operation_id(route: APIRoute) -> str:
    """``<tag>_<endpoint name>``: ``tasks`` + ``create`` → ``tasks_create``.

    The one rule for every operation id. A trailing underscore (``list_``, named so as not
    to shadow a builtin) is dropped; dashes in tags become underscores.
    """
    tag = str(route.tags[0]) if route.tags else "api"
    return f"{tag.replace('-', '_')}_{route.name.rstrip('_')}"


def domain_router(tag: str, *, prefix: str = "") -> APIRouter:
    """The router of one domain: its OpenAPI tag, derived operation ids and ``CheckedRoute``
    (HEAD, canonical integers, strict query strings, 415)."""
    return APIRouter(
        prefix=prefix,
        tags=[tag],
        route_class=CheckedRoute,
        generate_unique_id_function=operation_id,
    )


# ---- documented response headers (OpenAPI), written once -----------------------------------

ETAG_HEADER: dict[str, Any] = {
    "ETag": {"description": "Strong ETag of the current version", "schema": {"type": "string"}}
}
LOCATION_HEADER: dict[str, Any] = {
    "Location": {"description": "The new resource's URL", "schema": {"type": "string"}}
}
TOTAL_HEADER: dict[str, Any] = {
    "X-Total-Count": {"description": "How many items match", "schema": {"type": "integer"}}
}
LIST_HEADERS: dict[str, Any] = {
    **TOTAL_HEADER,
    "Link": {
        "description": 'RFC 8288 link to the next page, `<...?cursor=...>; rel="next"`; '
        "absent on the last page",
        "schema": {"type": "string"},
    },
}


NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the `If-None-Match` ETag is current"}
}

# ---- a route's documented responses, by kind of route ---------------------------------------


def list_responses(*errors: type[DomainError]) -> dict[int | str, dict[str, Any]]:
    """A list route's ``responses=``: the 200's list headers, then the problems ``errors``."""
    return {200: {"headers": LIST_HEADERS}, **problem_responses(*errors)}


def created_responses(
    *errors: type[DomainError], headers: dict[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """A create route's ``responses=``: the 201's ``Location`` (and ``headers``), then the
    problems ``errors``."""
    return {201: {"headers": {**LOCATION_HEADER, **(headers or {})}}, **problem_responses(*errors)}


def versioned_responses(
    *errors: type[DomainError], conditional: bool = False
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route answering one version of a resource: the 200's ``ETag``,
    with ``conditional`` (a read taking ``If-None-Match``) the 304, then the problems."""
    return {
        200: {"headers": ETAG_HEADER},
        **(NOT_MODIFIED if conditional else {}),
        **problem_responses(*errors),
    }


def not_modified(if_none_match: str | None, etag: str) -> Response | None:
    """The 304 answer when ``If-None-Match`` matches ``etag`` (RFC 9110 §13.1.2), else None."""
    if if_none_match is not None and none_match(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return None
