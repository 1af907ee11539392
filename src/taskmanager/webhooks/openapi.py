"""The OpenAPI 3.1 ``webhooks`` section: one operation per event type, with its payload.

These are requests the server *sends* (FastAPI's ``app.webhooks`` router documents them and
serves nothing): a POST of the event JSON with the Standard Webhooks headers.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel

from taskmanager.webhooks.payloads import PAYLOAD_MODELS, PING

_HEADERS: dict[str, str] = {
    "webhook_id": "The event id (`evt_...`; `ping_...` for a ping): the same on every "
    "attempt, so receivers can drop repeats",
    "webhook_timestamp": "Unix seconds when this attempt was signed",
    "webhook_signature": '`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed '
    "with the base64-decoded part of the secret after `whsec_`; several space-separated "
    "for 24 h after a secret rotation",
}

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Any 2xx: delivered"},
    410: {"description": "Gone: the webhook is disabled"},
    "default": {
        "description": "Anything else (3xx included: redirects are not followed), a timeout "
        "after 10 s or no answer: retried with back-off"
    },
}


def _receiver(event_type: str, model: type[BaseModel]) -> Any:
    """An endpoint whose signature documents the delivery (never called)."""

    async def receive(**_: Any) -> None:
        raise NotImplementedError  # pragma: no cover - documentation only

    parameters = [
        inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=model),
        *(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[
                    str, Header(alias=name.replace("_", "-"), description=description)
                ],
            )
            for name, description in _HEADERS.items()
        ),
    ]
    receive.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    receive.__name__ = "webhook_" + event_type.replace(".", "_")
    return receive


def webhook_catalogue() -> APIRouter:
    """A router for ``app.webhooks``: every event type a webhook can receive."""
    router = APIRouter(tags=["webhooks"])
    for event_type, model in PAYLOAD_MODELS.items():
        when = (
            "Sent by `POST /api/v1/webhooks/{id}/ping`."
            if event_type == PING
            else f"Sent to webhooks subscribed to `{event_type}`."
        )
        router.add_api_route(
            event_type,
            _receiver(event_type, model),
            methods=["POST"],
            summary=f"The {event_type} event",
            description=when,
            operation_id="webhook_" + event_type.replace(".", "_"),
            responses=_RESPONSES,
            status_code=200,
        )
    return router
