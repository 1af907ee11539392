"""``GET /api/v1/ws`` through the real ASGI app and middleware stack (API.md §7).

"Receives nothing" is shown without waiting: after the change the subscriber must not see,
a change it must see is made; the next message it gets has to be that one.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect
from sqlalchemy import update

from taskmanager.kit.security import create_access_token
from taskmanager.models.users import User
from tests.conftest import TEST_PASSWORD, AppFactory, TestUser, UserFactory
from tests.events.ws_support import (
    RECEIVE_TIMEOUT,
    WS,
    close_code,
    connect,
    messages_until_closed,
    next_event,
    ws_client,
)
from tests.factories import (
    API,
    TASKS,
    api_add_member,
    api_create_key,
    api_create_project,
    api_create_task,
    create_api_key,
    db_execute,
)


def _token(user: TestUser) -> str:
    return f"{WS}?token={user.token}"


async def test_a_member_receives_each_change_as_the_api_shows_it(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    # Polling far slower than the receive bound: delivery rides the in-process doorbells.
    app, client = await make_app(event_poll_seconds=60)
    user = await make_user()
    async with ws_client(app) as wsc, connect(_token(user), wsc) as ws:
        task = await api_create_task(client, user, title="Live")
        created = await next_event(ws)
        patched = await client.patch(
            f"{TASKS}/{task['id']}", json={"status": "completed"}, headers=user.headers
        )
        updated = await next_event(ws)
    assert created["type"] == "task.created"
    assert created["data"] == task
    assert created["project_id"] == user.inbox_id
    assert created["actor_id"] == user.id
    assert created["id"].startswith("evt_")
    assert "changed" not in created
    assert updated["type"] == "task.updated"
    assert updated["data"] == patched.json()
    assert updated["changed"] == ["status", "completed_at"]
    assert updated["id"] > created["id"]


async def test_an_outsider_receives_nothing_of_a_project_it_is_not_in(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, outsider = await make_user(), await make_user()
    async with ws_client(app) as wsc, connect(_token(outsider), wsc) as ws:
        await api_create_task(client, owner, title="Secret")
        mine = await api_create_task(client, outsider, title="Mine")
        first = await next_event(ws)
    assert (first["type"], first["data"]["id"]) == ("task.created", mine["id"])


async def test_removal_stops_events_and_joining_starts_them(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    owner, member = await make_user(), await make_user()
    pid = (await api_create_project(client, owner, "Team"))["id"]
    async with ws_client(app) as wsc, connect(_token(member), wsc) as ws:
        await api_create_task(client, owner, project_id=pid, title="Before joining")
        await api_add_member(client, owner, pid, member, "viewer")
        joined = await next_event(ws)
        inside = await api_create_task(client, owner, project_id=pid, title="While a member")
        seen = await next_event(ws)
        removed = await client.delete(
            f"{API}/projects/{pid}/members/{member.id}", headers=owner.headers
        )
        assert removed.status_code == 204
        left = await next_event(ws)
        await api_create_task(client, owner, project_id=pid, title="After leaving")
        mine = await api_create_task(client, member, title="Mine")
        after = await next_event(ws)
    assert (joined["type"], joined["data"]["user_id"]) == ("member.added", member.id)
    assert (seen["type"], seen["data"]["id"]) == ("task.created", inside["id"])
    assert (left["type"], left["data"]["user_id"]) == ("member.removed", member.id)
    assert (after["type"], after["data"]["id"]) == ("task.created", mine["id"])


async def test_an_admin_receives_every_project(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    admin, user = await make_user(role="admin"), await make_user()
    async with ws_client(app) as wsc, connect(_token(admin), wsc) as ws:
        task = await api_create_task(client, user)
        event = await next_event(ws)
    assert (event["type"], event["data"]["id"]) == ("task.created", task["id"])


async def test_project_id_narrows_the_stream(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    pid = (await api_create_project(client, user, "Narrow"))["id"]
    async with ws_client(app) as wsc, connect(f"{_token(user)}&project_id={pid}", wsc) as ws:
        await api_create_task(client, user, title="In the Inbox")
        wanted = await api_create_task(client, user, project_id=pid, title="In the project")
        event = await next_event(ws)
    assert (event["project_id"], event["data"]["id"]) == (pid, wanted["id"])


async def test_since_replays_exactly_what_was_missed_then_goes_live(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    async with ws_client(app) as wsc:
        async with connect(_token(user), wsc) as ws:
            await api_create_task(client, user, title="Seen")
            last_seen = (await next_event(ws))["id"]
        missed = [
            (await api_create_task(client, user, title=f"Missed {n}"))["id"] for n in range(100)
        ]
        async with connect(f"{_token(user)}&since={last_seen}", wsc) as ws:
            replayed = [await next_event(ws) for _ in missed]
            live = await api_create_task(client, user, title="Live")
            following = await next_event(ws)
    assert [e["data"]["id"] for e in replayed] == missed
    ids = [e["id"] for e in replayed]
    assert ids == sorted(ids)
    assert len(set(ids)) == 100
    assert ids[0] > last_seen
    assert (following["data"]["id"], following["id"] > ids[-1]) == (live["id"], True)


async def test_since_ahead_of_the_stream_is_refused_and_the_newest_id_goes_live(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """A ``since`` past the newest event is 4422 at the handshake (issue 11: it was accepted
    and muted the socket, every live event counting as already seen); ``since`` = the newest
    id replays nothing and goes live."""
    user = await make_user()
    await api_create_task(client, user, title="Before")
    async with ws_client(app) as wsc:
        async with connect(f"{_token(user)}&since=evt_9999999999999999", wsc) as ws:
            with pytest.raises(WebSocketDisconnect) as refused:
                await ws.receive_text(timeout=RECEIVE_TIMEOUT)
        assert refused.value.code == 4422
        assert "ahead of the event stream" in (refused.value.reason or "")
        async with connect(_token(user), wsc) as ws:
            task = await api_create_task(client, user, title="Newest")
            newest = (await _until_task(ws, task["id"]))["id"]
        async with connect(f"{_token(user)}&since={newest}", wsc) as ws:
            live = await api_create_task(client, user, title="Live")
            event = await next_event(ws)
    assert event["data"]["id"] == live["id"]
    assert event["id"] > newest


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", 4401),
        ("?token=not-a-token", 4401),
        ("?token={token}&since=yesterday", 4422),
        ("?token={token}&project_id=abc", 4422),
        ("?token={token}&project_id={foreign}", 4404),
        ("?token={token}&project_id=999999", 4404),
    ],
)
async def test_refusals_close_with_their_code(
    app: FastAPI, make_user: UserFactory, query: str, code: int
) -> None:
    user, other = await make_user(), await make_user()
    url = WS + query.format(token=user.token, foreign=other.inbox_id)
    async with ws_client(app) as wsc, connect(url, wsc) as ws:
        assert await close_code(ws) == code


async def test_no_credential_a_browser_sends_by_itself_opens_a_socket(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    """Cross-site WebSocket hijacking needs an ambient credential: one a browser attaches to a
    page's request on its own (cookies, cached HTTP authentication). None authenticates here,
    from any Origin; only a credential the page itself holds and sends does (README)."""
    user = await make_user()
    cross_site = {"Origin": "https://attacker.example"}
    ambient = [
        {"Cookie": f"token={user.token}; access_token={user.token}; session={user.token}"},
        {
            "Authorization": "Basic "
            + base64.b64encode(f"{user.username}:{TEST_PASSWORD}".encode()).decode()
        },
    ]
    async with ws_client(app) as wsc:
        for credential in ambient:
            async with connect(WS, wsc, headers={**cross_site, **credential}) as ws:
                assert await close_code(ws) == 4401
        # A token the page was given is not ambient: whoever holds it may use it, from any
        # origin, as with the HTTP API's Authorization header.
        async with connect(_token(user), wsc, headers=cross_site) as ws:
            task = await api_create_task(client, user)
            assert (await next_event(ws))["data"]["id"] == task["id"]


async def test_api_keys_authenticate_by_header_and_need_tasks_read(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    reader = await create_api_key(app, user, ["tasks:read"])
    writer_only = await create_api_key(app, user, ["tasks:write"])
    async with ws_client(app) as wsc:
        async with connect(WS, wsc, headers=writer_only) as ws:
            assert await close_code(ws) == 4403
        async with connect(WS, wsc, headers=reader) as ws:
            task = await api_create_task(client, user)
            event = await next_event(ws)
        async with connect(WS, wsc, headers=user.headers) as ws:
            other = await api_create_task(client, user)
            by_header = await next_event(ws)
    assert event["data"]["id"] == task["id"]
    assert by_header["data"]["id"] == other["id"]


async def test_the_socket_closes_when_the_access_token_expires(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    token = create_access_token(user.id, app.state.settings.signing_key, timedelta(seconds=3))
    async with ws_client(app) as wsc, connect(f"{WS}?token={token}", wsc) as ws:
        code = await close_code(ws)
    assert code == 4401


async def test_the_socket_closes_when_the_user_is_deactivated(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, client = await make_app(ws_recheck_seconds=0.2)
    user = await make_user()
    async with ws_client(app) as wsc, connect(_token(user), wsc) as ws:
        task = await api_create_task(client, user)
        assert (await next_event(ws))["data"]["id"] == task["id"]
        await db_execute(app, update(User).where(User.id == user.id).values(is_active=False))
        code = await close_code(ws)
    assert code == 4403


async def test_signing_out_everywhere_closes_the_socket(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, client = await make_app(ws_recheck_seconds=0.2)
    user = await make_user()
    async with ws_client(app) as wsc, connect(_token(user), wsc) as ws:
        response = await client.post(f"{API}/auth/logout-all", headers=user.headers)
        assert response.status_code == 204
        code = await close_code(ws)
    assert code == 4401


async def _shared_project(
    client: httpx.AsyncClient, make_user: UserFactory
) -> tuple[TestUser, TestUser, int]:
    """(a member, its project's owner, the project id): the owner keeps publishing events
    the member is in the audience of."""
    owner, member = await make_user(), await make_user()
    project = await api_create_project(client, owner)
    await api_add_member(client, owner, project["id"], member, "editor")
    return member, owner, project["id"]


async def _until_task(ws: AsyncWebSocketSession, task_id: int) -> dict[str, Any]:
    """Read up to the creation of this task; earlier events (e.g. ``member.added``, or a task
    created before the connection but numbered after it) may come first."""
    while True:
        event = await next_event(ws)
        if event["type"] == "task.created" and event["data"]["id"] == task_id:
            return event


@pytest.mark.parametrize("ending", ["deactivation", "logout-all", "account deletion"])
async def test_ending_a_users_credentials_closes_their_sockets_at_once(
    make_app: AppFactory, make_user: UserFactory, ending: str
) -> None:
    """Once the request that ends the credentials returns, the socket gets nothing more and
    is closed — not at the next periodic recheck, here an hour away (issue 11: up to 30 s
    of events after a deactivation, a sign-out everywhere or a deleted account)."""
    app, client = await make_app(ws_recheck_seconds=3600)
    member, owner, project_id = await _shared_project(client, make_user)
    admin = await make_user(role="admin")
    async with ws_client(app) as wsc, connect(_token(member), wsc) as ws:
        seen = await api_create_task(client, owner, project_id=project_id, title="Seen")
        await _until_task(ws, seen["id"])
        if ending == "deactivation":
            response = await client.patch(
                f"{API}/users/{member.id}", json={"is_active": False}, headers=admin.headers
            )
            expected = 4403
        elif ending == "logout-all":
            response = await client.post(f"{API}/auth/logout-all", headers=member.headers)
            expected = 4401
        else:
            response = await client.request(
                "DELETE",
                f"{API}/users/me",
                json={"current_password": TEST_PASSWORD},
                headers=member.headers,
            )
            expected = 4401
        assert response.status_code in (200, 204), response.text
        await api_create_task(client, owner, project_id=project_id, title="After")
        messages, code = await messages_until_closed(ws)
    assert (messages, code) == ([], expected)


async def test_a_demoted_administrator_stops_seeing_other_projects_at_once(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    """An administrator sees every project's events; once another administrator makes them
    a user, the open socket carries only their own projects' events (no reconnect, and
    not at the next periodic recheck, here an hour away)."""
    app, client = await make_app(ws_recheck_seconds=3600)
    owner, admin, other_admin = (
        await make_user(),
        await make_user(role="admin"),
        await make_user(role="admin"),
    )
    project = await api_create_project(client, owner, "Not the admin's")
    async with ws_client(app) as wsc, connect(_token(admin), wsc) as ws:
        seen = await api_create_task(client, owner, project_id=project["id"], title="Seen")
        await _until_task(ws, seen["id"])  # as an administrator: every project
        demoted = await client.patch(
            f"{API}/users/{admin.id}", json={"role": "user"}, headers=other_admin.headers
        )
        assert demoted.status_code == 200, demoted.text
        hidden = await api_create_task(client, owner, project_id=project["id"], title="Hidden")
        mine = await api_create_task(client, admin, title="Mine")  # their Inbox
        created: list[int] = []
        while not created or created[-1] != mine["id"]:
            event = await next_event(ws)
            if event["type"] == "task.created":
                created.append(event["data"]["id"])
    assert hidden["id"] not in created


async def test_revoking_an_api_key_closes_its_sockets_at_once(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, client = await make_app(ws_recheck_seconds=3600)
    member, owner, project_id = await _shared_project(client, make_user)
    key = await api_create_key(client, member.headers, ["tasks:read"])
    async with (
        ws_client(app) as wsc,
        connect(WS, wsc, headers={"X-API-Key": key["key"]}) as by_key,
        connect(_token(member), wsc) as by_token,
    ):
        seen = await api_create_task(client, owner, project_id=project_id, title="Seen")
        await _until_task(by_key, seen["id"])
        await _until_task(by_token, seen["id"])
        response = await client.delete(f"{API}/api-keys/{key['id']}", headers=member.headers)
        assert response.status_code == 204, response.text
        after = await api_create_task(client, owner, project_id=project_id, title="After")
        messages, code = await messages_until_closed(by_key)
        # The same user's token connection was checked too, and keeps going.
        assert (await next_event(by_token))["data"]["id"] == after["id"]
    assert (messages, code) == ([], 4401)


async def test_connections_beyond_the_per_user_limit_are_refused(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, client = await make_app(ws_max_connections_per_user=2)
    user, other = await make_user(), await make_user()
    async with (
        ws_client(app) as wsc,
        connect(_token(user), wsc) as first,
        connect(_token(user), wsc) as second,
    ):
        # Both hold their slot once they receive (slots are taken after authentication).
        task = await api_create_task(client, user)
        events: list[dict[str, Any]] = [await next_event(first), await next_event(second)]
        async with connect(_token(user), wsc) as third:
            assert await close_code(third) == 4429
        async with connect(_token(other), wsc) as someone_else:
            mine = await api_create_task(client, other)
            assert (await next_event(someone_else))["data"]["id"] == mine["id"]
    assert [e["data"]["id"] for e in events] == [task["id"], task["id"]]


async def test_draining_closes_sockets_with_going_away(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, _ = await make_app()
    user = await make_user()
    async with ws_client(app) as wsc, connect(_token(user), wsc) as ws:
        app.state.draining = True  # what the SIGTERM handler sets (serving.DrainingServer)
        code = await close_code(ws)
    assert code == 1001
