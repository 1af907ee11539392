"""Offset pagination shared by the list endpoints: the query parameters and the page body."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from taskmanager.validation import MAX_ID

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

Skip = Annotated[int, Query(ge=0, le=MAX_ID, description="Rows to skip")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]

ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a list. Subclass it per item type (``class UserPage(Page[UserOut])``) so
    the OpenAPI document keeps a readable schema name."""

    items: list[ItemT]
    total: int
    skip: int
    limit: int
