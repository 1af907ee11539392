"""Request and response bodies for projects and their members."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from taskmanager.kit.fields import EntityId, Text
from taskmanager.kit.pagination import Page
from taskmanager.kit.patch import PatchModel
from taskmanager.models.projects import Project, ProjectRole

NAME_MAX = 100
DESCRIPTION_MAX = 2000


ProjectName = Annotated[str, Text(NAME_MAX)]
Description = Annotated[str, Text(DESCRIPTION_MAX, min_length=0, strip=False)]
# Looked up with ``kit.fields.normalize_username``, as registration stored it.
Username = Annotated[str, Text(50)]

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

    @classmethod
    def of(cls, project: Project, role: str | None) -> Self:
        """The project as a caller whose role is ``role`` sees it."""
        columns = {name: getattr(project, name) for name in cls.model_fields if name != "role"}
        return cls.model_validate({**columns, "role": role})


class ProjectPage(Page[ProjectOut]):
    pass


class MemberOut(BaseModel):
    # Read from a ``projects.repository.MemberRow``.
    model_config = ConfigDict(from_attributes=True)

    user_id: int
    username: str
    role: ProjectRole


def _one_identifier_schema(schema: dict[str, Any]) -> None:
    """The schema says what the validators check: exactly one identifier, never null."""
    properties = schema["properties"]
    for name in ("username", "user_id"):
        variants = properties[name].pop("anyOf")
        properties[name].update(next(v for v in variants if v != {"type": "null"}))
        properties[name].pop("default", None)
    schema["oneOf"] = [{"required": ["username"]}, {"required": ["user_id"]}]
    schema["examples"] = [{"username": "bob", "role": "editor"}, {"user_id": 7, "role": "viewer"}]


class MemberAdd(BaseModel):
    """Add a user by ``username`` or by ``user_id`` (exactly one of them)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=_one_identifier_schema,
    )

    username: Username | None = None
    user_id: EntityId | None = None
    role: ProjectRole

    @field_validator("username", "user_id", mode="before")
    @classmethod
    def _refuse_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, but not set to null")
        return value

    @model_validator(mode="after")
    def _exactly_one_identifier(self) -> Self:
        if (self.username is None) == (self.user_id is None):
            raise ValueError("Give exactly one of username or user_id")
        return self


class MemberUpdate(BaseModel):
    """Change a member's role."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "viewer"}]})

    role: ProjectRole
