"""Request and response bodies for projects and their members."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from taskmanager.kit.fields import MAX_ID, storable_text
from taskmanager.kit.pagination import Page
from taskmanager.kit.patch import PatchModel
from taskmanager.models.projects import ProjectRole

NAME_MAX = 100
DESCRIPTION_MAX = 2000


ProjectName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=NAME_MAX),
    AfterValidator(storable_text),
]
Description = Annotated[
    str, StringConstraints(max_length=DESCRIPTION_MAX), AfterValidator(storable_text)
]
Username = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=50),
    AfterValidator(storable_text),
]

_CREATE_EXAMPLE: dict[str, Any] = {
    "name": "Website relaunch",
    "description": "Everything for the Q3 launch",
}


class ProjectCreate(BaseModel):
    """A new project; the caller becomes its owner."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_CREATE_EXAMPLE]})

    name: ProjectName
    description: Description | None = None


class ProjectReplace(BaseModel):
    """Full replacement: a description left out is cleared."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_CREATE_EXAMPLE]})

    name: ProjectName
    description: Description | None = None


class ProjectPatch(PatchModel):
    """Partial update: only the fields sent change; a null description clears it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Ops"}, {"description": "Runbooks"}]},
    )
    nullable = frozenset({"description"})

    name: ProjectName | None = None
    description: Description | None = None


class ProjectOut(BaseModel):
    id: int
    name: str
    description: str | None
    is_inbox: bool
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    role: ProjectRole | None = Field(
        description="The caller's role in the project; null for an admin who is not a member"
    )


class ProjectPage(Page[ProjectOut]):
    pass


class MemberOut(BaseModel):
    user_id: int
    username: str
    role: ProjectRole


class MemberAdd(BaseModel):
    """Add a user by ``username`` or by ``user_id`` (exactly one of them)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"username": "bob", "role": "editor"}, {"user_id": 7, "role": "viewer"}]
        },
    )

    username: Username | None = None
    user_id: Annotated[int, Field(ge=1, le=MAX_ID)] | None = None
    role: ProjectRole

    @model_validator(mode="after")
    def _exactly_one_identifier(self) -> Self:
        if (self.username is None) == (self.user_id is None):
            raise ValueError("Give exactly one of username or user_id")
        return self


class MemberUpdate(BaseModel):
    """Change a member's role."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "viewer"}]})

    role: ProjectRole
