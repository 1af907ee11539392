"""Deliveries to a real receiver on loopback: signatures, retries and back-off (a clock the
test drives), disabling, redirects, the body cap, SSRF at delivery time, leases, and who
receives what."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
import standardwebhooks
from fastapi import FastAPI
from sqlalchemy import event

from taskmanager.kit.outbox import EventType
from taskmanager.models.webhooks import Webhook
from taskmanager.webhooks import repository
from taskmanager.webhooks.delivery import (
    DISABLE_AFTER,
    MAX_ATTEMPTS,
    MAX_RESPONSE_BYTES,
)
from taskmanager.webhooks.targets import Resolver
from tests.conftest import UserFactory
from tests.factories import add_member, create_project, parse_time
from tests.webhooks.conftest import DelivererFactory, Subscribe
from tests.webhooks.support import (
    Answer,
    Clock,
    Receiver,
    Subscription,
    create_webhook,
    deliveries,
    dispatch,
    emit,
)


def verify(secret: str, received: Any) -> dict[str, Any]:
    payload: dict[str, Any] = standardwebhooks.Webhook(secret).verify(
        received.body, received.headers
    )
    return payload


async def test_a_delivery_is_signed_per_standard_webhooks_and_logged(
    app: FastAPI, subscribe: Subscribe, receiver: Receiver, make_deliverer: DelivererFactory
) -> None:
    subscribed = await subscribe(events=["task.created"])
    owner, project, hook = subscribed.owner, subscribed.project, subscribed.hook
    await emit(app, project, actor=owner, data={"id": 7, "title": "Ship it"})
    await emit(app, project, type=EventType.TASK_DELETED, data={"id": 7})  # not subscribed
    assert await dispatch(app) == 1
    assert await make_deliverer().run_once() == 1

    [got] = receiver.at("/hook")
    payload = verify(hook["secret"], got)
    assert payload["type"] == "task.created"
    assert payload["project_id"] == project
    assert payload["actor_id"] == owner.id
    assert payload["data"] == {"id": 7, "title": "Ship it"}
    assert "changed" not in payload
    assert payload["occurred_at"].endswith("Z")
    assert got.headers["webhook-id"] == payload["id"]
    assert payload["id"].startswith("evt_")
    assert got.headers["content-type"] == "application/json"
    assert got.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert got.headers["webhook-signature"].startswith("v1,")

    [logged] = await subscribed.log()
    assert logged["status"] == "succeeded"
    assert logged["response_status"] == 200
    assert logged["attempt"] == 1
    assert logged["event_id"] == payload["id"]
    assert logged["event_type"] == "task.created"
    assert logged["error"] is None
    assert logged["next_attempt_at"] is None
    assert isinstance(logged["duration_ms"], int)
    assert await make_deliverer().run_once() == 0  # nothing is sent twice


async def test_failures_are_retried_with_the_same_id_and_growing_back_off(
    subscribed: Subscription, receiver: Receiver, make_deliverer: DelivererFactory
) -> None:
    receiver.answers["/hook"] = Answer(status=500, body=b"boom " * 200)
    clock = Clock()
    deliverer = make_deliverer(clock=clock)
    await subscribed.publish()
    start = clock()
    attempted_at = [start]
    assert await deliverer.run_once() == 1
    for attempt in range(2, MAX_ATTEMPTS + 1):
        log = await subscribed.log()
        pending = log[0]
        assert pending["status"] == "pending"
        assert pending["attempt"] == attempt
        failed = log[1]
        assert failed["status"] == "failed"
        assert failed["response_status"] == 500
        assert failed["error"].startswith("HTTP 500: boom")
        assert len(failed["error"]) <= 500
        due = parse_time(pending["next_attempt_at"])
        assert failed["next_attempt_at"] == pending["next_attempt_at"]
        clock.to(due - timedelta(seconds=1))
        assert await deliverer.run_once() == 0  # not due yet
        clock.to(due)
        assert await deliverer.run_once() == 1
        attempted_at.append(due)

    log = await subscribed.log()
    assert [d["attempt"] for d in log] == list(range(MAX_ATTEMPTS, 0, -1))
    assert all(d["status"] == "failed" for d in log)
    assert log[0]["next_attempt_at"] is None  # the last attempt: no retry
    gaps = [b - a for a, b in itertools.pairwise(attempted_at)]
    assert timedelta(seconds=4) < gaps[0] <= timedelta(seconds=10)
    assert all(b > a for a, b in itertools.pairwise(gaps[:7]))  # growing up to the 10 h cap
    assert max(gaps) >= timedelta(hours=5)
    assert attempted_at[-1] - start >= timedelta(days=1)

    got = receiver.at("/hook")
    assert len(got) == MAX_ATTEMPTS
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert len({r.body for r in got}) == 1
    for one in got:
        verify(subscribed.hook["secret"], one)
    # 27.5 hours of failures is less than 3 days: still active.
    assert (await subscribed.shown())["active"]


async def test_410_gone_disables_the_webhook_until_re_enabled(
    client: httpx.AsyncClient,
    subscribed: Subscription,
    receiver: Receiver,
    make_deliverer: DelivererFactory,
) -> None:
    receiver.answers["/hook"] = Answer(status=410)
    path, owner = subscribed.path, subscribed.owner
    await subscribed.publish()
    await make_deliverer().run_once()
    shown = await subscribed.shown()
    assert shown["active"] is False
    assert "410" in shown["disabled_reason"]
    [logged] = await subscribed.log()
    assert logged["status"] == "failed"
    assert logged["next_attempt_at"] is None

    assert await subscribed.publish() == 0  # a disabled webhook is queued nothing

    receiver.answers["/hook"] = Answer(status=204)
    enabled = await client.patch(path, json={"active": True}, headers=owner.headers)
    assert enabled.json()["active"] is True
    assert enabled.json()["disabled_reason"] is None
    await client.post(path + "/ping", headers=owner.headers)
    await make_deliverer().run_once()
    assert verify(subscribed.hook["secret"], receiver.at("/hook")[-1])["type"] == "webhook.ping"


async def test_three_days_of_failed_attempts_disable_the_webhook(
    subscribed: Subscription, receiver: Receiver, make_deliverer: DelivererFactory
) -> None:
    receiver.answers["/hook"] = Answer(status=503)
    clock = Clock()
    deliverer = make_deliverer(clock=clock)
    start = clock()

    async def fail_everything_due() -> None:
        while True:
            log = await subscribed.log()
            pending = [d for d in log if d["status"] == "pending"]
            if not pending:
                return
            clock.to(min(parse_time(d["next_attempt_at"]) for d in pending))
            await deliverer.run_once()

    await subscribed.publish()
    await fail_everything_due()
    # A second event 36 h in: its retries end 27.5 h later, still inside the 3 days.
    clock.to(start + timedelta(hours=36))
    await subscribed.publish()
    await fail_everything_due()
    assert (await subscribed.shown())["active"] is True

    clock.to(start + DISABLE_AFTER + timedelta(minutes=1))
    await subscribed.publish()
    await deliverer.run_once()
    shown = await subscribed.shown()
    assert shown["active"] is False
    assert shown["disabled_reason"].startswith("Every delivery attempt since")
    assert (await subscribed.log())[0]["next_attempt_at"] is None


async def test_a_success_ends_the_run_of_failures(
    subscribed: Subscription, receiver: Receiver, make_deliverer: DelivererFactory
) -> None:
    clock = Clock()
    deliverer = make_deliverer(clock=clock)
    receiver.answers["/hook"] = Answer(status=500)
    await subscribed.publish()
    await deliverer.run_once()
    receiver.answers["/hook"] = Answer(status=200)
    clock.advance(timedelta(days=2))
    await deliverer.run_once()  # the retry succeeds
    receiver.answers["/hook"] = Answer(status=500)
    clock.advance(timedelta(days=2))  # 4 days after the first failure, 2 after the success
    await subscribed.publish()
    await deliverer.run_once()
    assert (await subscribed.shown())["active"]


async def test_redirects_are_not_followed(
    subscribed: Subscription, receiver: Receiver, make_deliverer: DelivererFactory
) -> None:
    receiver.answers["/hook"] = Answer(status=307, headers={"location": receiver.url("/other")})
    await subscribed.publish()
    await make_deliverer().run_once()
    assert len(receiver.at("/hook")) == 1
    assert receiver.at("/other") == []
    failed = (await subscribed.log())[1]
    assert failed["status"] == "failed"
    assert failed["response_status"] == 307
    assert "not followed" in failed["error"]


async def test_the_answer_is_read_up_to_64_kib(
    subscribed: Subscription, receiver: Receiver, make_deliverer: DelivererFactory
) -> None:
    total = 64 * 1024 * 1024
    receiver.answers["/hook"] = Answer(status=200, stream_bytes=total)
    await subscribed.publish()
    await make_deliverer().run_once()
    [logged] = await subscribed.log()
    assert logged["status"] == "succeeded"
    # The deliverer hung up after MAX_RESPONSE_BYTES: the receiver could not write it all.
    for _ in range(100):
        if receiver.streamed:
            break
        await asyncio.sleep(0.05)
    assert receiver.streamed
    assert receiver.streamed[0] < total
    assert MAX_RESPONSE_BYTES == 64 * 1024


async def test_an_attempt_that_overruns_its_timeout_fails_and_is_retried(
    subscribed: Subscription, receiver: Receiver, make_deliverer: DelivererFactory
) -> None:
    receiver.answers["/hook"] = Answer(status=200, delay=3.0)
    await subscribed.publish()
    await make_deliverer(attempt_timeout=0.5).run_once()
    pending, failed = await subscribed.log()
    assert failed["status"] == "failed"
    assert failed["response_status"] is None
    assert failed["error"] == "timed out after 0.5 s"
    assert pending["status"] == "pending"
    assert pending["attempt"] == 2


async def test_targets_are_checked_again_at_delivery_time(
    client: httpx.AsyncClient,
    subscribed: Subscription,
    receiver: Receiver,
    make_deliverer: DelivererFactory,
) -> None:
    """Created while private targets were allowed; the deliverer no longer allows them: the
    receiver on 127.0.0.1 (by address and by name) never gets a request."""
    owner = subscribed.owner
    by_name = await create_webhook(client, owner, f"http://localhost:{receiver.port}/hook")
    await subscribed.publish()
    assert await make_deliverer(allow_private=False).run_once() == 2
    assert receiver.received == []
    for hook in (subscribed.hook, by_name):
        failed = (await deliveries(client, owner, hook["id"]))[1]
        assert failed["status"] == "failed"
        assert failed["response_status"] is None
        assert failed["error"].startswith("target refused:")


async def test_a_name_that_rebinds_to_a_refused_address_is_never_connected(
    subscribe: Subscribe, receiver: Receiver, make_deliverer: DelivererFactory
) -> None:
    """The name resolved to something allowed when the webhook was made; at delivery it
    resolves to link-local and loopback: refused, nothing sent."""
    named = await subscribe(f"http://hooks.example.invalid:{receiver.port}/hook")

    async def rebinding(host: str, port: int) -> list[str]:
        return ["127.0.0.1", "169.254.169.254"]

    await named.publish()
    await make_deliverer(resolver=rebinding).run_once()
    assert receiver.received == []
    failed = (await named.log())[1]
    assert "169.254.169.254" in failed["error"]


async def test_the_connection_goes_to_the_checked_address_with_the_original_host(
    subscribe: Subscribe, receiver: Receiver, make_deliverer: DelivererFactory
) -> None:
    named = await subscribe(f"http://hooks.example.invalid:{receiver.port}/hook")
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.1"]

    checked: Resolver = resolver
    await named.publish()
    await make_deliverer(resolver=checked).run_once()
    assert asked == [("hooks.example.invalid", receiver.port)]
    [got] = receiver.at("/hook")
    assert got.headers["host"] == f"hooks.example.invalid:{receiver.port}"
    verify(named.hook["secret"], got)


async def test_rotation_signs_with_both_secrets_for_24_hours(
    client: httpx.AsyncClient,
    subscribed: Subscription,
    receiver: Receiver,
    make_deliverer: DelivererFactory,
) -> None:
    hook, owner = subscribed.hook, subscribed.owner
    rotated = await client.post(f"{subscribed.path}/rotate-secret", headers=owner.headers)
    new_secret = rotated.json()["secret"]
    clock = Clock()
    await subscribed.publish()
    await make_deliverer(clock=clock).run_once()
    [got] = receiver.at("/hook")
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    verify(new_secret, got)
    verify(hook["secret"], got)

    clock.advance(timedelta(hours=24, minutes=1))
    await subscribed.publish()
    await make_deliverer(clock=clock).run_once()
    later = receiver.at("/hook")[1]
    assert len(later.headers["webhook-signature"].split(" ")) == 1
    verify(new_secret, later)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        verify(hook["secret"], later)


async def test_ping_and_redeliver_send_the_same_event_id_again(
    client: httpx.AsyncClient,
    subscribe: Subscribe,
    receiver: Receiver,
    make_deliverer: DelivererFactory,
) -> None:
    subscribed = await subscribe(events=["task.created"])
    hook, owner, path = subscribed.hook, subscribed.owner, subscribed.path
    ping = (await client.post(path + "/ping", headers=owner.headers)).json()
    await make_deliverer().run_once()
    [got] = receiver.at("/hook")
    payload = verify(hook["secret"], got)
    assert payload["type"] == "webhook.ping"
    assert payload["id"] == ping["event_id"] == got.headers["webhook-id"]
    assert payload["data"] == {"webhook_id": hook["id"], "url": receiver.url()}

    again = await client.post(f"{path}/deliveries/{ping['id']}/redeliver", headers=owner.headers)
    assert again.status_code == 202
    await make_deliverer().run_once()
    second = receiver.at("/hook")[1]
    assert second.headers["webhook-id"] == got.headers["webhook-id"]
    assert second.body == got.body
    verify(hook["secret"], second)
    log = await subscribed.log()
    assert [d["status"] for d in log] == ["succeeded", "succeeded"]


async def test_an_outsider_receives_nothing_and_removal_stops_deliveries(
    client: httpx.AsyncClient,
    app: FastAPI,
    make_user: UserFactory,
    receiver: Receiver,
    make_deliverer: DelivererFactory,
) -> None:
    owner = await make_user()
    member = await make_user()
    outsider = await make_user()
    admin = await make_user(role="admin")
    project = await create_project(app, owner)
    await add_member(app, project, member, "editor")
    await create_webhook(client, outsider, receiver.url("/outsider"))
    await create_webhook(client, admin, receiver.url("/admin"))
    await create_webhook(client, member, receiver.url("/member"))
    await create_webhook(client, member, receiver.url("/member-project"), project_id=project)
    await create_webhook(client, admin, receiver.url("/admin-project"), project_id=project)

    await emit(app, project, data={"id": 1})
    await dispatch(app)
    await make_deliverer().run_once()
    assert len(receiver.at("/member")) == len(receiver.at("/member-project")) == 1
    assert len(receiver.at("/admin-project")) == 1  # an admin may see every project
    assert receiver.at("/outsider") == receiver.at("/admin") == []

    removed = await client.delete(
        f"/api/v1/projects/{project}/members/{member.id}", headers=owner.headers
    )
    assert removed.status_code == 204
    await emit(app, project, data={"id": 2})
    await dispatch(app)
    await make_deliverer().run_once()

    def types(path: str) -> list[str]:
        # In publication order: one round's deliveries run concurrently and may arrive in
        # any order (README, "Webhooks": the event id sorts in publication order).
        bodies = sorted((json.loads(r.body) for r in receiver.at(path)), key=lambda b: b["id"])
        return [body["type"] for body in bodies]

    # The removed member hears of its own removal (API.md §7), then nothing more.
    assert types("/member") == types("/member-project") == ["task.created", "member.removed"]
    assert receiver.at("/outsider") == []
    assert types("/admin-project") == ["task.created", "member.removed", "task.created"]


async def test_a_lease_keeps_an_attempt_from_being_sent_twice_until_it_runs_out(
    subscribed: Subscription, receiver: Receiver, make_deliverer: DelivererFactory
) -> None:
    """A deliverer that claimed an attempt and died: nobody else sends it until the lease
    runs out; then another does, and the dead one's late result is not recorded."""
    clock = Clock()
    first = make_deliverer(clock=clock, lease_seconds=30)
    second = make_deliverer(clock=clock, lease_seconds=30)
    await subscribed.publish()
    claim = await first.claim()  # ... and the process dies here
    assert len(claim.jobs) == 1
    assert await second.run_once() == 0
    clock.advance(timedelta(seconds=31))
    assert await second.run_once() == 1
    assert len(receiver.at("/hook")) == 1
    await first.deliver(claim.jobs[0], claim.token)  # a late result of the lost lease
    assert len(receiver.at("/hook")) == 2  # at-least-once: it was sent again
    log = await subscribed.log()
    assert [d["status"] for d in log] == ["succeeded"]
    body = orjson.loads(receiver.at("/hook")[0].body)
    assert body["id"] == log[0]["event_id"]


@contextmanager
def webhook_reads(app: FastAPI) -> Iterator[tuple[set[int], list[str]]]:
    """The ids of the webhooks loaded from the database, and the statements that read the
    ``webhooks`` table, while the block runs (the shared app runs no background loops, so
    everything seen is the test's own doing)."""
    loaded: set[int] = set()
    reads: list[str] = []
    database = app.state.database
    engines = {e.sync_engine for e in (database.write_engine, database.read_engine)}

    def on_load(target: Webhook, _context: Any) -> None:
        loaded.add(target.id)

    def on_statement(*args: Any) -> None:
        statement: str = args[2]
        if re.search(r"\bFROM webhooks\b", statement):
            reads.append(statement)

    event.listen(Webhook, "load", on_load)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", on_statement)
    try:
        yield loaded, reads
    finally:
        event.remove(Webhook, "load", on_load)
        for engine in engines:
            event.remove(engine, "before_cursor_execute", on_statement)


async def test_the_fan_out_reads_only_the_webhooks_of_the_events_projects_and_members(
    client: httpx.AsyncClient,
    app: FastAPI,
    make_user: UserFactory,
    receiver: Receiver,
    make_deliverer: DelivererFactory,
) -> None:
    owner = await make_user()
    stranger = await make_user()
    project = await create_project(app, owner)
    elsewhere = await create_project(app, stranger)
    bound = await create_webhook(client, owner, receiver.url("/bound"), project_id=project)
    everywhere = await create_webhook(client, owner, receiver.url("/everywhere"))
    unrelated = await create_webhook(
        client, stranger, receiver.url("/unrelated"), project_id=elsewhere
    )
    strangers = await create_webhook(client, stranger, receiver.url("/stranger"))

    await emit(app, project, data={"id": 1})
    with webhook_reads(app) as (loaded, reads):
        assert await dispatch(app) == 2
    assert loaded == {bound["id"], everywhere["id"]}  # neither of the stranger's was read
    assert len(reads) == 1  # one query for the round
    await make_deliverer().run_once()
    assert len(receiver.at("/bound")) == len(receiver.at("/everywhere")) == 1
    assert receiver.at("/unrelated") == receiver.at("/stranger") == []
    assert await deliveries(client, stranger, unrelated["id"]) == []
    assert await deliveries(client, stranger, strangers["id"]) == []


async def test_an_audience_larger_than_the_bind_parameter_limit_is_read_in_one_query(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory, receiver: Receiver
) -> None:
    owner = await make_user()
    project = await create_project(app, owner)
    hook = await create_webhook(client, owner, receiver.url())
    members = {owner.id, *range(10**6, 10**6 + 40_000)}  # over 32,767 placeholders
    async with app.state.database.snapshot() as session:
        found = await repository.subscriptions_for(
            session, event_types={"task.created"}, project_ids={project}, member_ids=members
        )
    assert [(webhook.id, is_admin) for webhook, is_admin in found] == [(hook["id"], False)]


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait for ``check`` to hold; the bound only turns a broken loop into a failure."""
    async with asyncio.timeout(30):
        while not await check():
            await asyncio.sleep(0.02)


async def test_a_hanging_receiver_does_not_hold_up_other_webhooks(
    subscribe: Subscribe, receiver: Receiver, make_deliverer: DelivererFactory
) -> None:
    """Deliveries flow through a pool: while one receiver hangs, another webhook's attempts
    are sent, recorded, and new ones claimed (issue 11: each round waited for its slowest
    attempt, so one tarpit delayed every tenant's webhooks)."""
    slow = await subscribe(url=receiver.url("/slow"))
    fast = await subscribe(url=receiver.url("/fast"))
    release = threading.Event()
    receiver.answers["/slow"] = Answer(hold=release)
    deliverer = make_deliverer(attempt_timeout=60, poll_seconds=0.05)
    await slow.publish()
    await fast.publish()

    async def statuses(subscription: Subscription) -> list[str]:
        return [row["status"] for row in await subscription.log()]

    async def fast_succeeded(count: int) -> bool:
        return await statuses(fast) == ["succeeded"] * count

    deliverer.start()
    try:
        await _until(lambda: fast_succeeded(1))
        # Sent and recorded while the hung attempt is still in flight...
        assert len(receiver.at("/slow")) == 1
        assert await statuses(slow) == ["pending"]
        # ...and a later delivery is claimed and completed meanwhile too.
        await fast.publish()
        deliverer.wake()
        await _until(lambda: fast_succeeded(2))
        assert await statuses(slow) == ["pending"]
        assert not release.is_set()
    finally:
        release.set()

    async def slow_succeeded() -> bool:
        return await statuses(slow) == ["succeeded"]

    await _until(slow_succeeded)
    assert len(receiver.at("/slow")) == 1  # the hung attempt completed, once
