"""Request and response bodies for users. Validation rules for identity live here, once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
    model_validator,
)

from taskmanager.kit import fields
from taskmanager.kit.errors import MalformedRequest
from taskmanager.kit.pagination import Page
from taskmanager.kit.passwords import (
    CurrentPassword,
    Password,
    PasswordInput,
    identifier_problem,
    matches_new_password,
)
from taskmanager.kit.patch import EMPTY_PATCH, PatchModel
from taskmanager.models.users import UserRole

# Normalised by the kit (kit.fields), exactly as login and lookups normalise them; stored
# lower-case, so the plain unique index is case-insensitive uniqueness.
Username = fields.Username
Email = fields.Email


class UserCreate(BaseModel):
    """Registration. Role, activity and id are not the client's to choose (extra fields → 422)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"email": "alice@example.com", "username": "alice", "password": "An-example-0nly"}
            ]
        },
    )

    email: Email
    username: Username
    password: Password

    @field_validator("password")
    @classmethod
    def _not_the_identifiers(cls, value: str, info: ValidationInfo) -> str:
        # email and username are declared first, so info.data has them when they are valid.
        problem = identifier_problem(value, info.data.get("username"), info.data.get("email"))
        if problem:
            raise ValueError(problem)
        return value


class UserUpdateMe(PatchModel):
    """A user's own profile change: the fields to change, and the current password."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "alice@work.example.com", "current_password": "An-example-0nly"}]
        }
    )

    email: Email | None = None
    username: Username | None = None
    current_password: CurrentPassword

    @model_validator(mode="after")
    def _changes_something(self) -> UserUpdateMe:
        if not self.changes():
            raise MalformedRequest(EMPTY_PATCH)
        return self

    def changes(self) -> dict[str, Any]:
        """The identifiers sent (the step-up password is not a change)."""
        return {k: v for k, v in super().changes().items() if k != "current_password"}


class AccountDeletion(BaseModel):
    """Delete the caller's account: the current password, asked again."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"current_password": "An-example-0nly"}]}
    )

    current_password: CurrentPassword


class UserAdminUpdate(PatchModel):
    """An administrator's change to another account."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"is_active": False}]})

    role: UserRole | None = None
    is_active: StrictBool | None = None


class PasswordChange(BaseModel):
    """Change the caller's password; every refresh token of the account is revoked."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "current_password": "An-example-0nly",
                    "new_password": "An0ther-example",
                    "confirm_password": "An0ther-example",
                }
            ]
        },
    )

    current_password: CurrentPassword
    new_password: Password
    confirm_password: PasswordInput

    @field_validator("new_password")
    @classmethod
    def _differs(cls, value: str, info: ValidationInfo) -> str:
        current = info.data.get("current_password")
        normalize = fields.normalize_password
        if current is not None and normalize(value) == normalize(current):
            raise ValueError("must differ from current_password")
        return value

    _matches = field_validator("confirm_password")(matches_new_password)


_USER_EXAMPLE: dict[str, Any] = {
    "id": 5,
    "email": "alice@example.com",
    "username": "alice",
    "role": "user",
    "is_active": True,
    "created_at": "2026-11-22T09:30:00Z",
}


class UserOut(BaseModel):
    """A user as clients see it: never a password or hash."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_USER_EXAMPLE]})

    id: int
    email: str
    username: str
    role: UserRole
    is_active: bool
    created_at: datetime


class CurrentUserOut(UserOut):
    """The caller's own account, with the Inbox where tasks without a project go."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_USER_EXAMPLE, "inbox_project_id": 12}]},
    )

    inbox_project_id: int | None = Field(
        description="The caller's Inbox project (null only if it was removed by an operator)"
    )


class UserPublic(BaseModel):
    """Another user as someone sharing a project with them sees them."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"id": 7, "username": "bob"}]})

    id: int
    username: str


class UserPage(Page[UserOut]):
    pass
