"""Request and response bodies for users. Validation rules for identity live here, once."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

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

USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_]{3,50}$")


def _check_username(value: str) -> str:
    if not USERNAME_PATTERN.fullmatch(value):
        raise ValueError("must be 3-50 characters of letters, digits and underscores")
    return value.lower()


def _lower_email(value: str) -> str:
    return value.lower()


# Stored lower-case, so the plain unique index is case-insensitive uniqueness.
Username = Annotated[str, AfterValidator(_check_username)]
Email = Annotated[EmailStr, Field(max_length=320), AfterValidator(_lower_email)]


class UserCreate(BaseModel):
    """Registration. Role, activity and id are not the client's to choose (extra fields → 422)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"email": "alice@example.com", "username": "alice", "password": "Str0ng-pass"}
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
            "examples": [{"email": "alice@work.example.com", "current_password": "Str0ng-pass"}]
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
        extra="forbid", json_schema_extra={"examples": [{"current_password": "Str0ng-pass"}]}
    )

    current_password: CurrentPassword


class UserAdminUpdate(PatchModel):
    """An administrator's change to another account."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"is_active": False}]})

    role: UserRole | None = None
    is_active: bool | None = None


class PasswordChange(BaseModel):
    """Change the caller's password; every refresh token of the account is revoked."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "current_password": "Str0ng-pass",
                    "new_password": "N3w-and-longer",
                    "confirm_password": "N3w-and-longer",
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
        if value == info.data.get("current_password"):
            raise ValueError("must differ from current_password")
        return value

    _matches = field_validator("confirm_password")(matches_new_password)


class UserOut(BaseModel):
    """A user as clients see it: never a password or hash."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 5,
                    "email": "alice@example.com",
                    "username": "alice",
                    "role": "user",
                    "is_active": True,
                    "created_at": "2026-11-22T09:30:00Z",
                }
            ]
        },
    )

    id: int
    email: str
    username: str
    role: UserRole
    is_active: bool
    created_at: datetime


class UserPage(Page[UserOut]):
    pass
