"""Request and response bodies for comments."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict

from taskmanager.kit.fields import Text
from taskmanager.kit.pagination import Page
from taskmanager.kit.patch import PatchModel

BODY_MAX = 5000

CommentBody = Annotated[str, Text(BODY_MAX)]


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
