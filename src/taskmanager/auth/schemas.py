"""Token request and response bodies."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from taskmanager.kit.passwords import Password, PasswordInput, matches_new_password

_EXAMPLE_REFRESH = "mF3x0Wq9nY8d2c4b6a1e7f5g3h9j0k2l4m6n8p0q2r4s6t8u0v2w4x6y8z0"


class TokenPair(BaseModel):
    """An access token and the refresh token that renews it (OAuth2 token response)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...",
                    "token_type": "bearer",
                    "expires_in": 1800,
                    "refresh_token": _EXAMPLE_REFRESH,
                }
            ]
        }
    )

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int = Field(description="Seconds until the access token expires")
    refresh_token: str


class RefreshRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"refresh_token": _EXAMPLE_REFRESH}]}
    )

    # Bounded so junk is refused before it is hashed; real tokens are 64 characters.
    refresh_token: str = Field(min_length=1, max_length=512)


# Beyond anything registration accepts: the form refuses longer values (422) before any
# query or hash is spent on them.
LOGIN_MAX_LENGTH = 320
LOGIN_PASSWORD_MAX_LENGTH = 1024


class LoginForm(BaseModel):
    """The OAuth2 password grant (RFC 6749 §4.3.2), sent as a form.

    ``username`` is a username or an email address, looked up normalised as registration
    stored it (``kit.fields.normalize_login``); ``password`` is verified in NFKC form.
    """

    # A form has no null: optional fields have defaults instead.
    grant_type: Literal["password"] = Field(
        default="password", description="`password` if sent (RFC 6749 §4.3.2)"
    )
    username: str = Field(
        min_length=1, max_length=LOGIN_MAX_LENGTH, description="Username or email address"
    )
    password: Annotated[
        str,
        Field(min_length=1, max_length=LOGIN_PASSWORD_MAX_LENGTH),
        WithJsonSchema(
            {
                "type": "string",
                "format": "password",
                "minLength": 1,
                "maxLength": LOGIN_PASSWORD_MAX_LENGTH,
                "writeOnly": True,
            }
        ),
    ]
    scope: str = Field(default="", max_length=1024, description="Ignored: tokens carry no scopes")
    client_id: str = Field(default="", max_length=255, description="Ignored")
    client_secret: str = Field(default="", max_length=255, description="Ignored")


class PasswordResetRequest(BaseModel):
    """Ask for a password-reset link by email (always answered 202: no account oracle)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"email": "alice@example.com"}]}
    )

    # Not validated as an address: any string gets the same 202, and a lookup finds nothing.
    email: str = Field(min_length=1, max_length=320)


class PasswordResetConfirm(BaseModel):
    """Set a new password with the token from the reset mail."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "token": "q3Jx0Wq9nY8d2c4b6a1e7f5g3h9j0k2l4m6n8p0q2r4",
                    "new_password": "N3w-and-longer",
                    "confirm_password": "N3w-and-longer",
                }
            ]
        },
    )

    token: str = Field(min_length=1, max_length=512, description="The token from the reset mail")
    new_password: Password
    confirm_password: PasswordInput

    _matches = field_validator("confirm_password")(matches_new_password)
