"""Request and response bodies for comments."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from taskmanager.pagination import Page
from taskmanager.validation import storable_text

BODY_MAX = 5000

CommentBody = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=BODY_MAX),
    AfterValidator(storable_text),
]

_BODY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": BODY_MAX}


class CommentCreate(BaseModel):
    """A new comment on a task."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"body": "Blocked on the API review."}]}
    )

    body: CommentBody


class CommentPatch(BaseModel):
    """New wording for a comment."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"body": "Unblocked: review done."}]}
    )

    # Optional only so that an empty PATCH is a 400 like everywhere else; null is a 422.
    body: Annotated[CommentBody | None, WithJsonSchema(_BODY_SCHEMA)] = None

    @field_validator("body")
    @classmethod
    def _body_not_null(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("body cannot be null")
        return value


class CommentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    task_id: int
    author_id: int | None
    body: str
    created_at: datetime
    updated_at: datetime


class CommentPage(Page[CommentOut]):
    pass
