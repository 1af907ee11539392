"""THE authorization matrix: every project, task and comment route x every kind of caller.

Each case runs on a fresh world (built straight in the database, so the matrix depends on
no API but the one under test) and asserts the exact status API.md §3/§4 give, with the
problem code for errors. A second group of tests seeds two users' projects with distinctive
titles and proves no list, search, export or comment list leaks a row the caller may not see.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from taskmanager.kit.identity import Scope
from taskmanager.kit.security import create_access_token, digest
from taskmanager.models.api_keys import ApiKey
from taskmanager.models.comments import Comment
from taskmanager.models.projects import Project, ProjectMember
from taskmanager.models.tasks import Task
from taskmanager.models.users import User
from taskmanager.projects.inbox import create_inbox
from tests.conftest import UserFactory, problem
from tests.projects_support import API, add_member, create_project

ROLES = ("owner", "editor", "viewer")
ALL_SCOPES = (Scope.TASKS_READ, Scope.TASKS_WRITE, Scope.PROJECTS_READ, Scope.PROJECTS_WRITE)


@dataclass
class World:
    """One project with an owner, editor, viewer and bystander (viewer), a task and comments.

    Around it: an outsider, an admin who is not a member, and a user who is nobody's member
    yet (the target for "add member"). API keys are minted per case for the needed scope.
    """

    ids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)


async def _build_world(app: FastAPI) -> World:
    world = World()
    signing_key = app.state.settings.signing_key
    async with app.state.database.side_transaction() as session:
        users: dict[str, User] = {}
        for name in ("owner", "editor", "viewer", "bystander", "outsider", "admin", "newbie"):
            user = User(
                email=f"{name}@example.com",
                username=name,
                password_hash="x",  # never logged in with: tokens are minted below
                role="admin" if name == "admin" else "user",
            )
            session.add(user)
            users[name] = user
        await session.flush()
        for user in users.values():
            await create_inbox(session, user.id)
        project = Project(name="Matrix", created_by=users["owner"].id)
        session.add(project)
        await session.flush()
        for name, role in (
            ("owner", "owner"),
            ("editor", "editor"),
            ("viewer", "viewer"),
            ("bystander", "viewer"),
        ):
            session.add(ProjectMember(project_id=project.id, user_id=users[name].id, role=role))
        task = Task(project_id=project.id, title="Matrix task", created_by=users["owner"].id)
        session.add(task)
        await session.flush()
        owner_comment = Comment(task_id=task.id, author_id=users["owner"].id, body="by owner")
        editor_comment = Comment(task_id=task.id, author_id=users["editor"].id, body="by editor")
        session.add_all([owner_comment, editor_comment])
        await session.flush()
        world.ids = {name: user.id for name, user in users.items()}
        world.ids |= {
            "project": project.id,
            "task": task.id,
            "owner_comment": owner_comment.id,
            "editor_comment": editor_comment.id,
        }
        await session.commit()
    for name, user_id in world.ids.items():
        if name in ("owner", "editor", "viewer", "outsider", "admin"):
            world.tokens[name] = create_access_token(user_id, signing_key, timedelta(minutes=5))
    return world


async def _api_key(app: FastAPI, user_id: int, scopes: list[str]) -> str:
    raw = f"tm_{secrets.token_urlsafe(24)}"
    async with app.state.database.side_transaction() as session:
        session.add(
            ApiKey(
                user_id=user_id, name="matrix", prefix=raw[:8], key_hash=digest(raw), scopes=scopes
            )
        )
        await session.commit()
    return raw


# --- the table ------------------------------------------------------------------------------

Body = Callable[[dict[str, int]], dict[str, Any]] | None


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str  # str.format'ed with the world's ids
    scope: Scope
    allowed: frozenset[str] = frozenset()  # project roles that may do it
    admin: bool = True  # does an admin (not a member) get through?
    collection: bool = False  # not about one project: every authenticated caller may call it
    body: Body = None

    @property
    def success(self) -> int:
        if self.method == "POST":
            return 201
        return 204 if self.method == "DELETE" else 200


VIEW = frozenset(ROLES)
EDIT = frozenset({"owner", "editor"})
MANAGE = frozenset({"owner"})
P = "/projects/{project}"
T = "/tasks/{task}"

ROUTES: list[Route] = [
    # projects
    Route("projects_list", "GET", "/projects", Scope.PROJECTS_READ, collection=True),
    Route(
        "projects_create",
        "POST",
        "/projects",
        Scope.PROJECTS_WRITE,
        collection=True,
        body=lambda ids: {"name": "New"},
    ),
    Route("projects_get", "GET", P, Scope.PROJECTS_READ, VIEW),
    Route(
        "projects_replace", "PUT", P, Scope.PROJECTS_WRITE, MANAGE, body=lambda ids: {"name": "R"}
    ),
    Route(
        "projects_update", "PATCH", P, Scope.PROJECTS_WRITE, MANAGE, body=lambda ids: {"name": "U"}
    ),
    Route("projects_delete", "DELETE", P, Scope.PROJECTS_WRITE, MANAGE),
    # members
    Route("project_members_list", "GET", P + "/members", Scope.PROJECTS_READ, VIEW),
    Route(
        "project_members_add",
        "POST",
        P + "/members",
        Scope.PROJECTS_WRITE,
        MANAGE,
        body=lambda ids: {"user_id": ids["newbie"], "role": "viewer"},
    ),
    Route("project_members_get", "GET", P + "/members/{bystander}", Scope.PROJECTS_READ, VIEW),
    Route(
        "project_members_update",
        "PATCH",
        P + "/members/{bystander}",
        Scope.PROJECTS_WRITE,
        MANAGE,
        body=lambda ids: {"role": "editor"},
    ),
    Route(
        "project_members_remove",
        "DELETE",
        P + "/members/{bystander}",
        Scope.PROJECTS_WRITE,
        MANAGE,
    ),
    # tasks
    Route("tasks_list", "GET", "/tasks", Scope.TASKS_READ, collection=True),
    Route("tasks_list_head", "HEAD", "/tasks", Scope.TASKS_READ, collection=True),
    Route("tasks_export", "GET", "/tasks/export?format=csv", Scope.TASKS_READ, collection=True),
    Route(
        "tasks_create",
        "POST",
        "/tasks",
        Scope.TASKS_WRITE,
        EDIT,
        body=lambda ids: {"title": "New task", "project_id": ids["project"]},
    ),
    Route("tasks_get", "GET", T, Scope.TASKS_READ, VIEW),
    Route("tasks_replace", "PUT", T, Scope.TASKS_WRITE, EDIT, body=lambda ids: {"title": "R"}),
    Route("tasks_update", "PATCH", T, Scope.TASKS_WRITE, EDIT, body=lambda ids: {"priority": 3}),
    Route("tasks_delete", "DELETE", T, Scope.TASKS_WRITE, EDIT),
    Route("tasks_list_for_project", "GET", P + "/tasks", Scope.TASKS_READ, VIEW),
    # comments
    Route("comments_list", "GET", T + "/comments", Scope.TASKS_READ, VIEW),
    Route(
        "comments_create",
        "POST",
        T + "/comments",
        Scope.TASKS_WRITE,
        EDIT,
        body=lambda ids: {"body": "hello"},
    ),
    Route("comments_get", "GET", T + "/comments/{owner_comment}", Scope.TASKS_READ, VIEW),
    # Only the author rewords a comment; not even an admin may put words in their mouth.
    Route(
        "comments_update_own_by_owner",
        "PATCH",
        T + "/comments/{owner_comment}",
        Scope.TASKS_WRITE,
        MANAGE,
        admin=False,
        body=lambda ids: {"body": "edited"},
    ),
    Route(
        "comments_update_by_editor",
        "PATCH",
        T + "/comments/{editor_comment}",
        Scope.TASKS_WRITE,
        frozenset({"editor"}),
        admin=False,
        body=lambda ids: {"body": "edited"},
    ),
    # The author or a project owner (or an admin) deletes.
    Route(
        "comments_delete_owners",
        "DELETE",
        T + "/comments/{owner_comment}",
        Scope.TASKS_WRITE,
        MANAGE,
    ),
    Route(
        "comments_delete_editors",
        "DELETE",
        T + "/comments/{editor_comment}",
        Scope.TASKS_WRITE,
        EDIT,
    ),
]

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


def expected(route: Route, caller: str) -> tuple[int, str | None]:
    acts_as = CALLERS[caller]
    if acts_as == "anonymous":
        return 401, "NOT_AUTHENTICATED"
    if acts_as == "no_scope":
        return 403, "FORBIDDEN"
    if route.collection:
        return route.success, None
    if acts_as == "admin":
        return (route.success, None) if route.admin else (403, "FORBIDDEN")
    if acts_as == "outsider":
        return 404, "RESOURCE_NOT_FOUND"
    if acts_as in route.allowed:
        return route.success, None
    return 403, "FORBIDDEN"


async def _headers(app: FastAPI, world: World, route: Route, caller: str) -> dict[str, str]:
    ids = world.ids
    if caller == "anonymous":
        return {}
    if caller in world.tokens:
        return {"Authorization": f"Bearer {world.tokens[caller]}"}
    needed = route.scope.value
    scopes = {
        "owner_key_with_scope": ("owner", [needed]),
        "viewer_key_with_scope": ("viewer", [needed]),
        "owner_key_without_scope": ("owner", [s.value for s in ALL_SCOPES if s != route.scope]),
        "admin_key_with_admin_scope": ("admin", [needed, Scope.ADMIN.value]),
        "admin_key_without_admin_scope": ("admin", [needed]),
    }
    user, key_scopes = scopes[caller]
    return {"X-API-Key": await _api_key(app, ids[user], key_scopes)}


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
async def test_authorization_matrix(
    client: httpx.AsyncClient, app: FastAPI, route: Route, caller: str
) -> None:
    world = await _build_world(app)
    headers = await _headers(app, world, route, caller)
    url = API + route.path.format(**world.ids)
    body = route.body(world.ids) if route.body else None
    response = await client.request(route.method, url, json=body, headers=headers)
    status, code = expected(route, caller)
    if code is None or route.method == "HEAD":
        assert response.status_code == status, (route.name, caller, response.text)
    else:
        problem(response, status, code)
    if status == 401:
        assert response.headers["www-authenticate"].lower().startswith("bearer")


async def test_every_project_task_and_comment_route_is_in_the_matrix(app: FastAPI) -> None:
    """A new route under these paths must be added to the table above."""
    covered = {r.name for r in ROUTES} | {"comments_update", "comments_delete"}  # per author
    missing = []
    for route in app.routes:
        path = getattr(route, "path", "")
        operation = getattr(route, "operation_id", None) or getattr(route, "name", "")
        if not path.startswith(API) or "OPTIONS" in getattr(route, "methods", set()):
            continue
        rest = path.removeprefix(API)
        if "/attachments" in rest:
            continue  # owned and tested with attachments
        if rest.startswith(("/projects", "/tasks")) and operation not in covered:
            missing.append((path, operation))
    assert missing == []


# --- no leaks -------------------------------------------------------------------------------


async def test_lists_search_and_export_never_leak(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    carol = await make_user("carol")
    bob_project = await create_project(client, bob, "ZEBRA-PROJECT")
    shared = await create_project(client, bob, "Shared")
    await add_member(client, bob, shared["id"], carol, "viewer")
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
