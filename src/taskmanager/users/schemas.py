"""Request and response bodies for users. Validation rules for identity live here, once."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
)

from taskmanager.kit import fields
from taskmanager.kit.pagination import Page
from taskmanager.kit.patch import PatchModel
from taskmanager.models.users import UserRole

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128


def _check_password(value: str) -> str:
    problems = []
    if not any(c.isupper() for c in value):
        problems.append("an upper-case letter")
    if not any(c.islower() for c in value):
        problems.append("a lower-case letter")
    if not any(c.isdigit() for c in value):
        problems.append("a digit")
    if problems:
        raise ValueError("must contain at least " + ", ".join(problems))
    return value


# Normalised by the kit (kit.fields), exactly as login and lookups normalise them; stored
# lower-case, so the plain unique index is case-insensitive uniqueness.
Username = fields.Username
Email = fields.Email
# Checked and held in NFKC, the form that is hashed.
Password = Annotated[
    str, fields.Password(PASSWORD_MIN_LENGTH, PASSWORD_MAX_LENGTH), AfterValidator(_check_password)
]


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


class UserUpdateMe(PatchModel):
    """A user's own profile change; send only the fields to change."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "alice@work.example.com"}]})

    email: Email | None = None
    username: Username | None = None


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

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: Password
    confirm_password: str = Field(max_length=PASSWORD_MAX_LENGTH)

    @field_validator("new_password")
    @classmethod
    def _differs(cls, value: str, info: ValidationInfo) -> str:
        current = info.data.get("current_password")
        if current is not None and value == fields.normalize_password(current):
            raise ValueError("must differ from current_password")
        return value

    @field_validator("confirm_password")
    @classmethod
    def _matches(cls, value: str, info: ValidationInfo) -> str:
        # Absent from info.data when new_password itself failed: that error is reported already.
        new_password = info.data.get("new_password")
        if new_password is not None and fields.normalize_password(value) != new_password:
            raise ValueError("does not match new_password")
        return value


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


class CurrentUserOut(UserOut):
    """The caller's own account, with the Inbox where tasks without a project go."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 5,
                    "email": "alice@example.com",
                    "username": "alice",
                    "role": "user",
                    "is_active": True,
                    "created_at": "2026-11-22T09:30:00Z",
                    "inbox_project_id": 12,
                }
            ]
        },
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
