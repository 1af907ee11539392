"""Documents ``Idempotency-Key`` on every POST in the OpenAPI schema.

The header is handled by middleware, so no route declares it; this adds it (and the 409
a retry can get while the first request runs) where clients and generators will see it.
"""

from __future__ import annotations

from typing import Any

from taskmanager.idempotency.middleware import MAX_KEY_LENGTH
from taskmanager.kit.http import API_PREFIX

_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes the POST safe to retry: the first answer is stored for 24 h per caller and "
        "route and replayed (with `Idempotent-Replayed: true`) to a retry with the same body. "
        "A different body gets 422 IDEMPOTENCY_KEY_REUSED; a retry while the first request "
        "still runs gets 409."
    ),
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": "^[\\x21-\\x7E]+$",
    },
}
_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def document_idempotency_key(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the header, and the 409 and 422 it can cause, to every POST under the API prefix."""
    for path, item in schema.get("paths", {}).items():
        operation = item.get("post")
        if not path.startswith(API_PREFIX + "/") or operation is None:
            continue
        parameters = operation.setdefault("parameters", [])
        if not any(p.get("name", "").lower() == "idempotency-key" for p in parameters):
            parameters.append(dict(_PARAMETER))
        responses = operation.setdefault("responses", {})
        for status, description in (
            ("409", "A request with this Idempotency-Key is still being processed"),
            ("422", "Validation failed, or the Idempotency-Key was used with another request"),
        ):
            responses.setdefault(
                status,
                {
                    "description": description,
                    "content": {"application/problem+json": {"schema": _PROBLEM}},
                },
            )
    return schema
