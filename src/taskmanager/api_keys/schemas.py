"""API-key request and response bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from taskmanager.kit.fields import Text, UTCTimestamp
from taskmanager.kit.identity import Scope
from taskmanager.kit.passwords import CurrentPassword


class ApiKeyCreate(BaseModel):
    """A new key: a name to recognise it by, its scopes, an optional expiry, and the caller's
    current password (a key outlives sessions, so minting one needs the password again)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "nightly report",
                    "scopes": ["tasks:read", "projects:read"],
                    "expires_at": "2027-01-01T00:00:00Z",
                    "current_password": "An-example-0nly",
                }
            ]
        },
    )

    current_password: CurrentPassword
    name: Annotated[str, Text(100, single_line=True)]
    scopes: list[Scope] = Field(min_length=1, max_length=20)
    expires_at: UTCTimestamp | None = Field(
        default=None, description="When the key stops working (with a UTC offset); never if null"
    )

    @field_validator("scopes")
    @classmethod
    def _dedupe(cls, value: list[Scope]) -> list[Scope]:
        return list(dict.fromkeys(value))

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(UTC):
            # Its own type: no schema can say "in the future", so clients and fuzzers can
            # tell this rule from a malformed value.
            raise PydanticCustomError("not_in_future", "must be in the future")
        return value


class ApiKeyOut(BaseModel):
    """A key as listed: never the secret or its hash, only a short prefix to recognise it."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 3,
                    "name": "nightly report",
                    "prefix": "tm_Qx7bY2z",
                    "scopes": ["tasks:read", "projects:read"],
                    "expires_at": "2027-01-01T00:00:00Z",
                    "last_used_at": None,
                    "created_at": "2026-11-22T09:30:00Z",
                }
            ]
        },
    )

    id: int
    name: str
    prefix: str
    scopes: list[str]
    expires_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime


class ApiKeyCreated(ApiKeyOut):
    """The new key, with the full secret: shown this once and never again."""

    key: str = Field(
        description="Send as the X-API-Key header; store it now, it is not shown again"
    )
