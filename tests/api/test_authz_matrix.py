"""THE authorization matrix: every project, task and comment route x every kind of caller.

The routes are the rows of tests/route_table.py whose rule is a project permission, plus
the signed-in collection routes an API-key scope guards. Each case runs on a fresh world
(``seed_world``: built straight in the database, so the matrix depends on no API but the one
under test) and asserts the exact status API.md §3/§4 give, with the problem code for
errors. A second group of tests seeds two users' projects with distinctive titles and
proves no list, search, export or comment list leaks a row the caller may not see.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from taskmanager.kit.identity import Scope
from taskmanager.kit.security import digest
from taskmanager.models.api_keys import ApiKey
from tests.conftest import UserFactory, problem
from tests.factories import API, api_add_member, api_create_project
from tests.route_table import (
    HTTP_ROUTES,
    PROJECT_RULES,
    ROLES_WITH,
    Row,
    Rule,
    Seed,
    seed_world,
)

ALL_SCOPES = (Scope.TASKS_READ, Scope.TASKS_WRITE, Scope.PROJECTS_READ, Scope.PROJECTS_WRITE)


@dataclass(frozen=True)
class Case:
    """A row, and for the comment rows whose rule is about the author, whose comment."""

    row: Row
    author: str | None = None  # "owner" or "editor": the comment acted on is theirs

    @property
    def name(self) -> str:
        by = f"[{self.author}s_comment]" if self.author else ""
        return f"{self.row.method} {self.row.operation_id}{by}"

    @property
    def allowed(self) -> frozenset[str]:
        """The project roles that get through."""
        if self.row.rule is Rule.AUTHOR:
            return frozenset({str(self.author)})
        if self.row.rule is Rule.AUTHOR_OR_MANAGE:
            return frozenset({str(self.author)}) | ROLES_WITH[Rule.MANAGE]
        return ROLES_WITH.get(self.row.rule, frozenset())

    @property
    def admin(self) -> bool:
        """Does an administrator who is not a member get through?"""
        # Only the author rewords a comment; not even an admin may put words in their mouth.
        return self.row.rule is not Rule.AUTHOR


def _cases() -> list[Case]:
    cases = []
    for row in HTTP_ROUTES:
        if row.rule in (Rule.AUTHOR, Rule.AUTHOR_OR_MANAGE):
            cases += [Case(row, "owner"), Case(row, "editor")]
        elif row.rule in PROJECT_RULES or (row.rule is Rule.CALLER and row.scope in ALL_SCOPES):
            cases.append(Case(row))
    return cases


CASES = _cases()

# Who calls, and as whom they count: a key acts with its owner's rights, an admin's key
# without the admin scope is an ordinary (non-member) user.
CALLERS: dict[str, str] = {
    "owner": "owner",
    "editor": "editor",
    "viewer": "viewer",
    "outsider": "outsider",
    "admin": "admin",
    "owner_key_with_scope": "owner",
    "viewer_key_with_scope": "viewer",
    "owner_key_without_scope": "no_scope",
    "admin_key_with_admin_scope": "admin",
    "admin_key_without_admin_scope": "outsider",
    "anonymous": "anonymous",
}


def expected(case: Case, caller: str) -> tuple[int, str | None]:
    acts_as = CALLERS[caller]
    success = case.row.success
    if acts_as == "anonymous":
        return 401, "NOT_AUTHENTICATED"
    if acts_as == "no_scope":
        return 403, "FORBIDDEN"
    if case.row.rule is Rule.CALLER:  # not about one project: every signed-in caller may
        return success, None
    if acts_as == "admin":
        return (success, None) if case.admin else (403, "FORBIDDEN")
    if acts_as == "outsider":
        return 404, "RESOURCE_NOT_FOUND"
    if acts_as in case.allowed:
        return success, None
    return 403, "FORBIDDEN"


async def _api_key(app: FastAPI, user_id: int, scopes: list[str]) -> str:
    raw = f"tm_{secrets.token_urlsafe(24)}"
    async with app.state.database.side_transaction() as session:
        session.add(
            ApiKey(
                user_id=user_id, name="matrix", prefix=raw[:8], key_hash=digest(raw), scopes=scopes
            )
        )
    return raw


async def _headers(app: FastAPI, world: Seed, row: Row, caller: str) -> dict[str, str]:
    if caller == "anonymous":
        return {}
    if caller in world.tokens:
        return world.headers(caller)
    assert row.scope is not None
    needed = row.scope.value
    scopes = {
        "owner_key_with_scope": ("owner", [needed]),
        "viewer_key_with_scope": ("viewer", [needed]),
        "owner_key_without_scope": ("owner", [s.value for s in ALL_SCOPES if s != row.scope]),
        "admin_key_with_admin_scope": ("admin", [needed, Scope.ADMIN.value]),
        "admin_key_without_admin_scope": ("admin", [needed]),
    }
    user, key_scopes = scopes[caller]
    return {"X-API-Key": await _api_key(app, world.ids[user], key_scopes)}


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_authorization_matrix(
    client: httpx.AsyncClient, app: FastAPI, case: Case, caller: str
) -> None:
    world = await seed_world(app)
    if case.author:
        world.ids["comment"] = world.ids[f"{case.author}_comment"]
    headers = await _headers(app, world, case.row, caller)
    call = case.row.call(world)
    response = await client.request(
        case.row.method, case.row.url(call), headers=headers, **case.row.request_kwargs(call)
    )
    status, code = expected(case, caller)
    if code is None or case.row.method == "HEAD":
        assert response.status_code == status, (case.name, caller, response.text)
    else:
        problem(response, status, code)
    if status == 401:
        assert response.headers["www-authenticate"].lower().startswith("bearer")


def test_the_matrix_covers_every_route_under_a_project_or_a_task() -> None:
    """A route whose path names a project or a task acts on that project's data, so it is
    in the matrix (a row given a non-project rule by mistake would otherwise escape it)."""
    in_matrix = {case.row.operation_id for case in CASES}
    left_out = [
        row.operation_id
        for row in HTTP_ROUTES
        if ("{project_id}" in row.path or "{task_id}" in row.path)
        and row.method != "OPTIONS"  # the CORS preflight reveals nothing (tests/edge)
        and row.operation_id not in in_matrix
    ]
    assert left_out == []
    # ... and the walk did find them (a renamed path parameter must not empty it).
    assert {"tasks_get", "comments_list", "attachments_create", "projects_members_add"} <= in_matrix


# --- no leaks -------------------------------------------------------------------------------


async def test_lists_search_and_export_never_leak(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    carol = await make_user("carol")
    bob_project = await api_create_project(client, bob, "ZEBRA-PROJECT")
    shared = await api_create_project(client, bob, "Shared")
    await api_add_member(client, bob, shared["id"], carol, "viewer")
    for project_id, title in (
        (alice.inbox_id, "ALPHA-secret alpha-needle"),
        (bob.inbox_id, "BRAVO-secret needle"),
        (bob_project["id"], "ZEBRA-secret needle"),
        (shared["id"], "SHARED-visible needle"),
    ):
        owner = alice if project_id == alice.inbox_id else bob
        response = await client.post(
            f"{API}/tasks",
            json={"title": title, "description": "needle in a haystack", "project_id": project_id},
            headers=owner.headers,
        )
        assert response.status_code == 201, response.text

    visible = {alice.id: {"ALPHA"}, bob.id: {"BRAVO", "ZEBRA", "SHARED"}, carol.id: {"SHARED"}}
    markers = {"ALPHA", "BRAVO", "ZEBRA", "SHARED"}
    for user in (alice, bob, carol):
        responses = [
            await client.get(f"{API}/tasks", params={"limit": 100}, headers=user.headers),
            await client.get(f"{API}/tasks", params={"q": "needle"}, headers=user.headers),
            await client.get(f"{API}/tasks", params={"q": "SECRET"}, headers=user.headers),
            await client.get(f"{API}/tasks/export", params={"format": "csv"}, headers=user.headers),
            await client.get(
                f"{API}/tasks/export", params={"format": "csv", "q": "needle"}, headers=user.headers
            ),
        ]
        for response in responses:
            assert response.status_code == 200, response.text
            for marker in markers - visible[user.id]:
                assert marker not in response.text, (user.username, response.url, marker)
        listed = responses[0].json()
        assert {t["title"].split("-")[0] for t in listed["items"]} == visible[user.id]
        assert listed["total"] == len(visible[user.id])
        assert {t["title"].split("-")[0] for t in responses[1].json()["items"]} == visible[user.id]
        assert sum(m in responses[3].text for m in markers) == len(visible[user.id])

        projects = (await client.get(f"{API}/projects", headers=user.headers)).text
        assert ("ZEBRA-PROJECT" in projects) == (user is bob)

    # Filtering by a foreign project leaks nothing either.
    for params in ({"project_id": bob_project["id"]}, {"project_id": bob.inbox_id}):
        response = await client.get(f"{API}/tasks", params=params, headers=alice.headers)
        assert response.status_code in (200, 404)
        assert "ZEBRA" not in response.text
        assert "BRAVO" not in response.text
        export = await client.get(
            f"{API}/tasks/export", params={"format": "csv", **params}, headers=alice.headers
        )
        assert "ZEBRA" not in export.text
        assert "BRAVO" not in export.text


async def test_comment_lists_never_leak(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    alice_task = (
        await client.post(f"{API}/tasks", json={"title": "a"}, headers=alice.headers)
    ).json()
    bob_task = (await client.post(f"{API}/tasks", json={"title": "b"}, headers=bob.headers)).json()
    await client.post(
        f"{API}/tasks/{alice_task['id']}/comments",
        json={"body": "ALICE-ONLY"},
        headers=alice.headers,
    )
    await client.post(
        f"{API}/tasks/{bob_task['id']}/comments", json={"body": "BOB-ONLY"}, headers=bob.headers
    )
    mine = await client.get(f"{API}/tasks/{alice_task['id']}/comments", headers=alice.headers)
    assert "ALICE-ONLY" in mine.text
    assert "BOB-ONLY" not in mine.text
    foreign = await client.get(f"{API}/tasks/{bob_task['id']}/comments", headers=alice.headers)
    problem(foreign, 404, "RESOURCE_NOT_FOUND")
    assert "BOB-ONLY" not in foreign.text
