"""The delivery loop: send due attempts, signed per Standard Webhooks v1, and log each one.

One ``Deliverer`` runs per process that delivers (``serve``'s lifespan and ``taskmanager
worker``, through ``background.py``). It keeps up to ``batch`` attempts in flight, each on
its own: whenever slots are free it

1. **claims** as many due ``pending`` attempts of active webhooks as slots are free, in a
   short transaction, leasing them for ``lease_seconds`` under a random token
   (``repository.claim_due``: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the single writer on
   SQLite). Several deliverers never send one attempt at the same time; a deliverer killed
   mid-send leaves a lease that runs out, and the attempt is made again: **at-least-once**.
2. **sends** each at once, concurrently with the others: the target is resolved and
   checked against the SSRF rules again (``webhooks.targets``) and the connection goes to
   the checked address; the body is the stored event JSON, with ``webhook-id`` (the event
   id, the same on every attempt), ``webhook-timestamp`` and ``webhook-signature``
   (``v1,<base64 HMAC-SHA256>``, one per valid secret, space-separated, made by the
   ``standardwebhooks`` library). Each attempt has ``ATTEMPT_TIMEOUT_SECONDS`` in all,
   reads at most ``MAX_RESPONSE_BYTES`` of the answer, and never follows a redirect. Only a
   2xx answer is a success.
3. **records** each outcome as soon as it is known, only if its lease is still this
   deliverer's, and its slot is free for the next claim: the attempt's row becomes
   ``succeeded`` or ``failed``; a failure queues the next attempt (a new row) after the
   back-off below, ``410 Gone`` disables the webhook, and so does a
   failure when every attempt for ``DISABLE_AFTER`` has failed.

So a receiver that hangs holds only the slots of its own attempts (each for at most
``ATTEMPT_TIMEOUT_SECONDS``) while every other webhook's deliveries keep flowing through the
rest; it never makes the next claim wait for the slowest attempt of a round.

Retry schedule (``retry_delay``): after attempt *n* fails, attempt *n + 1* is due
``5 s * 4^(n-1)``, capped at 10 h, times a random factor in [1, 1.2) (jitter, so the
retries of many deliveries that failed together spread out): about 5 s, 20 s, 80 s,
5 min, 21 min, 85 min, 5.7 h, 10 h, 10 h — 10 attempts over at least 27.5 hours.

Times come from ``clock`` (injectable, so tests drive days of back-off without sleeping);
the ``webhook-timestamp`` is always the real time of sending, which is what receivers
compare with their own clocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import standardwebhooks
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from taskmanager import __version__
from taskmanager.kit.availability import Backoff
from taskmanager.kit.config import Settings
from taskmanager.kit.db import Database, utcnow
from taskmanager.models.webhooks import DeliveryStatus, Webhook, WebhookDelivery
from taskmanager.webhooks import repository
from taskmanager.webhooks.crypto import SecretBox, SecretUnreadable
from taskmanager.webhooks.targets import (
    Resolver,
    TargetRefused,
    parse_target,
    pin,
    resolve_checked,
    system_resolver,
)

if TYPE_CHECKING:
    import httpx

log = structlog.get_logger("taskmanager.webhooks")

ATTEMPT_TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 64 * 1024
MAX_ATTEMPTS = 10
RETRY_BASE = timedelta(seconds=5)
RETRY_FACTOR = 4
RETRY_CAP = timedelta(hours=10)
RETRY_JITTER = 0.2
DISABLE_AFTER = timedelta(days=3)
# Longer than an attempt can take (timeout + recording), so a live deliverer's lease never
# runs out under it.
LEASE_SECONDS = 60.0
USER_AGENT = f"Taskmanager-Webhooks/{__version__}"
_ERROR_CHARS = 500


def nominal_delay(attempt: int) -> timedelta:
    """The back-off after attempt ``attempt`` (1-based) failed, before jitter."""
    delay: timedelta = RETRY_BASE * RETRY_FACTOR ** (attempt - 1)
    return min(delay, RETRY_CAP)


def retry_delay(attempt: int, rng: random.Random) -> timedelta:
    """The back-off after attempt ``attempt`` failed: nominal times a factor in [1, 1 + jitter)."""
    return nominal_delay(attempt) * (1 + RETRY_JITTER * rng.random())


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to."""

    succeeded: bool
    response_status: int | None
    duration_ms: int
    error: str | None


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed attempt with what sending it needs (read in the claiming transaction)."""

    delivery_id: int
    webhook_id: int
    event_id: str
    event_type: str
    payload: str
    attempt: int
    url: str
    secret: str
    previous_secret: str | None
    previous_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Claim:
    """Attempts leased to one deliverer under one token."""

    jobs: list[Job]
    token: str


def _bounded(text: str) -> str:
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"


class Deliverer:
    """Claims, sends and records webhook deliveries; ``run()`` loops, ``start()``/``stop()``
    run it as a task.

    ``clock`` gives the current time (UTC, aware) for due times, leases and the 3-day rule;
    ``resolver`` resolves target names (the system's by default).
    """

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        resolver: Resolver = system_resolver,
        rng: random.Random | None = None,
        batch: int = 50,
        poll_seconds: float = 1.0,
        lease_seconds: float = LEASE_SECONDS,
        attempt_timeout: float = ATTEMPT_TIMEOUT_SECONDS,
    ) -> None:
        self.database = database
        self.allow_private = settings.webhook_allow_private_targets
        self.box = SecretBox(settings.signing_key)
        self.clock = clock
        self.resolver = resolver
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self.attempt_timeout = attempt_timeout
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None  # made at the first attempt

    @property
    def client(self) -> httpx.AsyncClient:
        """The HTTP client, made (and ``httpx`` imported: ~6 MiB, ~100 ms) at the first
        attempt, so a server with no webhook to deliver never pays for it."""
        if self._client is None:
            import httpx

            # Never from the environment: a proxy would connect somewhere the check did not
            # see.
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(self.attempt_timeout),
                headers={"user-agent": USER_AGENT},
            )
        return self._client

    # ---- running ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due work now instead of at the next poll (e.g. after a fan-out)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled, up to ``batch`` attempts in flight; a slot that frees is
        filled by the next claim, never held for a round's slowest attempt. A failing
        database is logged and retried, never fatal; cancelling abandons the attempts in
        flight (their leases run out and they are made again: at-least-once)."""
        backoff = Backoff(self.poll_seconds * 2)
        in_flight = 0
        slot_freed = asyncio.Event()

        async def attempt(job: Job, token: str) -> None:
            nonlocal in_flight
            try:
                await self.deliver(job, token)
            except Exception as exc:  # never expected (send and record catch their own)
                log.warning(
                    "webhook_attempt_failed", error=_bounded(f"{type(exc).__name__}: {exc}")
                )
            finally:
                in_flight -= 1
                slot_freed.set()

        async with anyio.create_task_group() as tasks:
            while True:
                free = self.batch - in_flight
                claimed = 0
                if free > 0:
                    try:
                        claim = await self.claim(limit=free)
                        backoff.succeeded()
                    except Exception as exc:
                        await backoff.failed("webhook_claim_failed", exc)
                        continue
                    for job in claim.jobs:
                        in_flight += 1
                        tasks.start_soon(attempt, job, claim.token)
                    claimed = len(claim.jobs)
                if free > 0 and claimed < free:
                    # Nothing more is due: wait for a fan-out's wake or the next poll.
                    try:
                        async with asyncio.timeout(self.poll_seconds):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                    self._wake.clear()
                else:
                    # Every slot is taken (more may be due): claim again as one frees.
                    slot_freed.clear()
                    if in_flight >= self.batch:
                        await slot_freed.wait()

    def start(self) -> None:
        """Run the loop as a task of the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="webhooks")

    async def stop(self) -> None:
        """Stop the loop (an attempt in flight is abandoned; its lease runs out) and close."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()

    async def run_once(self) -> int:
        """One round, for tests and tools: claim up to ``batch`` due attempts, send them
        concurrently, record them together; how many. ``run`` does not wait for rounds."""
        claim = await self.claim()
        if claim.jobs:
            outcomes = await asyncio.gather(*(self.send(job) for job in claim.jobs))
            await self._record(claim.token, list(zip(claim.jobs, outcomes, strict=True)))
        return len(claim.jobs)

    # ---- claim -----------------------------------------------------------------------------

    async def claim(self, *, limit: int | None = None) -> Claim:
        """Lease up to ``limit`` (default ``batch``) due attempts to this deliverer (a
        transaction of its own)."""
        token = secrets.token_hex(16)
        now = self.clock()
        async with self.database.side_transaction() as session:
            claimed = await repository.claim_due(
                session,
                now=now,
                lease_until=now + self.lease,
                token=token,
                limit=self.batch if limit is None else limit,
            )
            if not claimed:
                return Claim([], token)
            ids = {d.webhook_id for d in claimed}
            webhooks = {
                w.id: w
                for w in (await session.scalars(select(Webhook).where(Webhook.id.in_(ids)))).all()
            }
        jobs = []
        for delivery in claimed:
            webhook = webhooks[delivery.webhook_id]
            jobs.append(
                Job(
                    delivery_id=delivery.id,
                    webhook_id=webhook.id,
                    event_id=delivery.event_id,
                    event_type=delivery.event_type,
                    payload=delivery.payload,
                    attempt=delivery.attempt,
                    url=webhook.url,
                    secret=webhook.secret_encrypted,
                    previous_secret=webhook.previous_secret_encrypted,
                    previous_expires_at=webhook.previous_secret_expires_at,
                )
            )
        return Claim(jobs, token)

    # ---- send ------------------------------------------------------------------------------

    def _signing_secrets(self, job: Job, now: datetime) -> list[str]:
        found = [self.box.open(job.secret)]
        if (
            job.previous_secret is not None
            and job.previous_expires_at is not None
            and job.previous_expires_at > now
        ):
            with contextlib.suppress(SecretUnreadable):  # the current secret still signs
                found.append(self.box.open(job.previous_secret))
        return found

    async def send(self, job: Job) -> Outcome:
        """Make one attempt; never raises (every failure is an Outcome with its error)."""
        started = time.monotonic()

        def failed(error: str, status: int | None = None) -> Outcome:
            elapsed = int((time.monotonic() - started) * 1000)
            return Outcome(False, status, elapsed, _bounded(error))

        try:
            keys = self._signing_secrets(job, self.clock())
        except SecretUnreadable as exc:
            return failed(str(exc))
        import httpx  # already loaded by ``client`` after the first attempt

        try:
            async with asyncio.timeout(self.attempt_timeout):
                target = parse_target(job.url)
                address = await resolve_checked(
                    target, allow_private=self.allow_private, resolver=self.resolver
                )
                pinned = pin(target, address)
                # The real time of sending: receivers check it against their own clocks.
                signed_at = datetime.now(UTC)
                signature = " ".join(
                    standardwebhooks.Webhook(key).sign(job.event_id, signed_at, job.payload)
                    for key in keys
                )
                headers = {
                    "host": pinned.host_header,
                    "content-type": "application/json",
                    "webhook-id": job.event_id,
                    "webhook-timestamp": str(int(signed_at.timestamp())),
                    "webhook-signature": signature,
                }
                extensions: dict[str, Any] = {}
                if pinned.sni_hostname is not None:
                    extensions["sni_hostname"] = pinned.sni_hostname
                request = self.client.build_request(
                    "POST",
                    pinned.url,
                    content=job.payload.encode(),
                    headers=headers,
                    extensions=extensions,
                )
                response = await self.client.send(request, stream=True)
                try:
                    snippet = await _read_capped(response)
                finally:
                    await response.aclose()
        except TargetRefused as exc:
            return failed(f"target refused: {exc}")
        except TimeoutError:
            return failed(f"timed out after {self.attempt_timeout:g} s")
        except httpx.HTTPError as exc:
            return failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        except OSError as exc:
            return failed(f"{type(exc).__name__}: {exc}")
        elapsed = int((time.monotonic() - started) * 1000)
        status = response.status_code
        if 200 <= status < 300:
            return Outcome(True, status, elapsed, None)
        if 300 <= status < 400:
            where = response.headers.get("location", "")
            return failed(f"HTTP {status}: redirect to {where!r} not followed", status)
        text = snippet.decode("utf-8", "replace").strip()
        return failed(f"HTTP {status}" + (f": {text}" if text else ""), status)

    # ---- record ----------------------------------------------------------------------------

    async def deliver(self, job: Job, token: str) -> None:
        """Send one claimed attempt and record its outcome (if ``token`` still holds it)."""
        await self._record(token, [(job, await self.send(job))])

    async def _record(self, token: str, results: list[tuple[Job, Outcome]]) -> None:
        """Record a batch's outcomes in one transaction (one commit, not one per attempt).

        A failure here loses nothing: the leases run out and the attempts are made again.
        """
        try:
            async with self.database.side_transaction() as session:
                await self._apply(session, token, results)
        except Exception as exc:
            log.warning(
                "webhook_record_failed",
                deliveries=[job.delivery_id for job, _ in results],
                error=_bounded(f"{type(exc).__name__}: {exc}"),
            )

    async def _apply(
        self, session: AsyncSession, token: str, results: list[tuple[Job, Outcome]]
    ) -> None:
        now = self.clock()
        # Locked in id order (PostgreSQL), so concurrent deliverers never deadlock on them.
        ids = sorted({job.webhook_id for job, _ in results})
        webhooks = {
            w.id: w
            for w in (
                await session.scalars(
                    select(Webhook)
                    .where(Webhook.id.in_(ids))
                    .order_by(Webhook.id)
                    .with_for_update()
                )
            ).all()
        }
        for job, outcome in results:
            webhook = webhooks.get(job.webhook_id)
            values: dict[str, Any] = {
                "status": DeliveryStatus.SUCCEEDED if outcome.succeeded else DeliveryStatus.FAILED,
                "response_status": outcome.response_status,
                "duration_ms": outcome.duration_ms,
                "error": outcome.error,
                "attempted_at": now,
                "next_attempt_at": None,
            }
            retry_at: datetime | None = None
            disable: str | None = None
            if webhook is not None and not outcome.succeeded:
                failing_since = webhook.failing_since or now
                if outcome.response_status == 410:
                    disable = f"The target answered 410 Gone at {_iso(now)}"
                elif now - failing_since >= DISABLE_AFTER:
                    disable = (
                        f"Every delivery attempt since {_iso(failing_since)} failed "
                        f"(last: {outcome.error})"
                    )
                elif job.attempt < MAX_ATTEMPTS:
                    retry_at = now + retry_delay(job.attempt, self.rng)
                    values["next_attempt_at"] = retry_at
            if not await repository.finish_attempt(session, job.delivery_id, token, values):
                continue  # the lease ran out and another deliverer took the attempt over
            if webhook is None:
                continue
            if outcome.succeeded:
                webhook.failing_since = None
            else:
                webhook.failing_since = webhook.failing_since or now
                if disable is not None and webhook.active:
                    webhook.active = False
                    webhook.disabled_reason = _bounded(disable)
                    webhook.updated_at = now
                    log.warning("webhook_disabled", webhook_id=webhook.id, reason=disable)
            if retry_at is not None:
                await repository.add_delivery(
                    session,
                    WebhookDelivery(
                        webhook_id=job.webhook_id,
                        event_id=job.event_id,
                        event_type=job.event_type,
                        payload=job.payload,
                        attempt=job.attempt + 1,
                        status=DeliveryStatus.PENDING,
                        created_at=now,
                        next_attempt_at=retry_at,
                    ),
                )


async def _read_capped(response: httpx.Response) -> bytes:
    """Up to ``MAX_RESPONSE_BYTES`` of the raw answer (not decompressed: no gzip bomb),
    and the first 200 of them for the log; the rest is never read."""
    read = 0
    head = b""
    async for chunk in response.aiter_raw():
        if len(head) < 200:
            head += chunk[: 200 - len(head)]
        read += len(chunk)
        if read >= MAX_RESPONSE_BYTES:
            break
    return head


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
