"""``/health``, ``/ready`` and ``/metrics``: at the root, never rate limited."""

from __future__ import annotations

import hmac
from typing import Any, Literal

import anyio
import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from starlette.responses import JSONResponse, Response

from taskmanager.kit.availability import Breaker
from taskmanager.kit.errors import InvalidCredentials, NotAuthenticated
from taskmanager.kit.http import operation_id
from taskmanager.kit.routing import CheckedRoute
from taskmanager.models.events import Event
from taskmanager.models.webhooks import WebhookDelivery

log = structlog.get_logger("taskmanager.ops")

CHECK_TIMEOUT_SECONDS = 2.0

router = APIRouter(
    tags=["operations"], route_class=CheckedRoute, generate_unique_id_function=operation_id
)

CheckStatus = Literal["healthy", "unhealthy", "disabled"]


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"status": "healthy"}})

    status: Literal["healthy"]


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {"status": "ready", "checks": {"database": "healthy", "redis": "disabled"}}
        }
    )

    status: Literal["ready", "not_ready"]
    checks: dict[str, CheckStatus]
    draining: bool | None = None


@router.get("/health", summary="Liveness", response_model=Health)
async def health() -> dict[str, str]:
    """The process is up and serving requests."""
    return {"status": "healthy"}


async def _check(name: str, probe: Any, breaker: Breaker | None = None) -> CheckStatus:
    if breaker is not None and breaker.is_open:
        return "unhealthy"  # known down: no need to wait for another timeout
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            await probe()
    except Exception as exc:
        log.warning("readiness_check_failed", check=name, error=type(exc).__name__)
        if breaker is not None:
            breaker.failed(exc)
        return "unhealthy"
    if breaker is not None:
        breaker.succeeded()
    return "healthy"


@router.get(
    "/ready",
    summary="Readiness",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is unavailable"}},
)
async def ready(request: Request) -> Response:
    """Whether the database (and Redis, when configured) answer; 503 if one does not.

    Also 503 (``"draining": true``) from the moment SIGTERM arrives, so load balancers stop
    sending new requests while the server finishes what it has (API.md §8).
    """
    state = request.app.state
    checks: dict[str, CheckStatus] = {
        "database": await _check("database", state.database.ping, state.database.breaker)
    }
    redis = getattr(state, "redis", None)
    checks["redis"] = (
        "disabled"
        if redis is None
        else await _check("redis", redis.ping, getattr(state, "redis_breaker", None))
    )
    draining = bool(getattr(state, "draining", False))
    ok = all(value != "unhealthy" for value in checks.values()) and not draining
    if draining:
        return JSONResponse(
            {"status": "not_ready", "checks": checks, "draining": True}, status_code=503
        )
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": checks},
        status_code=200 if ok else 503,
    )


def _check_metrics_token(request: Request) -> None:
    """With TASKMANAGER_METRICS_TOKEN set, /metrics needs ``Authorization: Bearer <it>``."""
    expected: str = request.app.state.settings.metrics_token
    if not expected:
        return
    authorization = request.headers.get("authorization")
    if not authorization:
        raise NotAuthenticated("/metrics needs Authorization: Bearer <metrics token>")
    scheme, _, token = authorization.partition(" ")
    # Constant time: the comparison must not tell how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise InvalidCredentials("The metrics token is wrong")


async def _sample_outbox(request: Request) -> None:
    """Set the event and webhook-delivery gauges from the database (three small queries).

    A database that cannot answer within the readiness timeout leaves the gauges as they
    were: the scrape still answers, and ``/ready`` is what reports the outage.
    """
    metrics = request.app.state.metrics
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            async with request.app.state.database.snapshot() as session:
                pending = await session.scalar(
                    select(func.count()).select_from(Event).where(Event.seq.is_(None))
                )
                newest = await session.scalar(select(func.max(Event.seq)))
                by_status = (
                    await session.execute(
                        select(WebhookDelivery.status, func.count()).group_by(
                            WebhookDelivery.status
                        )
                    )
                ).all()
    except Exception as exc:
        log.debug("metrics_outbox_unavailable", error=type(exc).__name__)
        return
    metrics.events_pending.set(pending or 0)
    metrics.events_published.set(newest or 0)
    counts = dict.fromkeys(("pending", "succeeded", "failed"), 0)
    counts.update({str(status): int(count) for status, count in by_status})
    for status, count in counts.items():
        metrics.webhook_deliveries.labels(status).set(count)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Request counts and latencies by route template, requests in flight, pool use,
    events waiting and published, webhook delivery attempts by status."""
    _check_metrics_token(request)
    await _sample_outbox(request)
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
