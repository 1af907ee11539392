"""The base of every PATCH body (RFC 5789 partial update with JSON-merge semantics).

A field left out is unchanged; a field sent is set. So every field is declared optional
(``title: Title | None = None``), yet only the fields listed in ``nullable`` may be *sent* as
``null`` (to clear them): ``{"title": null}`` is a 422 naming the field. A body with no field
at all changes nothing and is the one ``MalformedRequest`` (400) every PATCH answers.

The OpenAPI schema says the same: non-nullable fields show their plain type (no
``null``), and the object has ``minProperties: 1`` (one more per required field, such as
a step-up ``current_password``, since those are not changes).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    GetJsonSchemaHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from taskmanager.kit.errors import MalformedRequest

EMPTY_PATCH = "A PATCH must contain at least one field to change"


class PatchModel(BaseModel):
    """Subclass with optional fields; list the ones ``null`` may clear in ``nullable``."""

    model_config = ConfigDict(extra="forbid")

    nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _refuse_empty(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data:
            # Not a validation error: the request is well-formed but asks for nothing.
            raise MalformedRequest(EMPTY_PATCH)
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_null(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs only for fields actually sent: defaults are not validated.
        if value is None and info.field_name not in cls.nullable:
            raise ValueError("may be left out, but not set to null")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields sent, with their validated values (``None`` clears a nullable one)."""
        return self.model_dump(include=self.model_fields_set)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        # At least one change: one property beyond those always required (a step-up password).
        target["minProperties"] = 1 + len(target.get("required", []))
        for name, prop in target.get("properties", {}).items():
            if name not in cls.nullable:
                _drop_null(prop)
        return schema


def _drop_null(prop: dict[str, Any]) -> None:
    """Turn ``anyOf: [X, {type: null}]`` (and a ``default: null``) into plain ``X``."""
    prop.pop("default", None)
    variants = prop.get("anyOf")
    if not isinstance(variants, list):
        return
    kept = [v for v in variants if v != {"type": "null"}]
    if len(kept) == len(variants):
        return
    del prop["anyOf"]
    if len(kept) == 1:
        prop.update(kept[0])
    else:
        prop["anyOf"] = kept
