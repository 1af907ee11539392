"""Request and response bodies for comments."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from taskmanager.kit.fields import storable_text
from taskmanager.kit.pagination import Page
from taskmanager.kit.patch import PatchModel

BODY_MAX = 5000

CommentBody = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=BODY_MAX),
    AfterValidator(storable_text),
]


class CommentCreate(BaseModel):
    """A new comment on a task."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"body": "Blocked on the API review."}]}
    )

    body: CommentBody


class CommentPatch(PatchModel):
    """New wording for a comment."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"body": "Unblocked: review done."}]})

    body: CommentBody | None = None


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
