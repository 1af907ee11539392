"""THE route table: one row per route the app serves, read by every test that walks routes.

Each ``Row`` names a route as the app exposes it (method, path template as in the OpenAPI
document, operation id), who may call it (``Rule`` and the API-key ``Scope``), how to build
a valid request for it from a seeded world (``seed_world``), and the status that request
gets. The authorization matrix, the Schemathesis run, the mass-assignment and the
blank-text tests take their routes from here, and ``tests/api/test_route_table.py`` fails
while the app has a route without a row, or a row names a route the app does not have.

Adding a route: add its row next to its siblings, with the rule API.md §3/§4 gives it; a
GET route also answers HEAD (one row each); a WebSocket route is ``method="WEBSOCKET"``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from taskmanager.kit.http import API_PREFIX
from taskmanager.kit.identity import Scope
from taskmanager.kit.security import create_access_token, digest
from taskmanager.models.api_keys import ApiKey
from taskmanager.models.attachments import Attachment
from taskmanager.models.auth import PasswordResetToken, RefreshToken
from taskmanager.models.comments import Comment
from taskmanager.models.projects import Project, ProjectMember
from taskmanager.models.tasks import Task
from taskmanager.models.users import User
from taskmanager.models.webhooks import Webhook, WebhookDelivery
from taskmanager.projects.inbox import create_inbox
from taskmanager.webhooks.crypto import SecretBox, generate_secret
from tests.factories import STRONG_PASSWORD, TEST_PASSWORD, test_password_hash

API = API_PREFIX
WEBSOCKET = "WEBSOCKET"  # the "method" of a WebSocket route's row
MOUNT = "MOUNT"  # the "method" of a mounted application's row (it answers for a whole prefix)


class Rule(StrEnum):
    """Who may call a route (API.md §3 authentication, §4 project roles)."""

    PUBLIC = "public"  # no credentials
    CALLER = "caller"  # any signed-in caller (login token, or API key with the row's scope)
    LOGIN = "login"  # a login token only: API keys are refused
    ADMIN = "admin"  # administrators only
    # Project permissions (projects/policy.py): outsiders get 404, members without it 403,
    # administrators get through.
    VIEW = "view"
    EDIT_TASKS = "edit_tasks"
    MANAGE = "manage"
    AUTHOR = "author"  # a comment's author only: not even an administrator
    AUTHOR_OR_MANAGE = "author_or_manage"  # the author, a project owner or an administrator


# The project roles each permission admits (API.md §4), written out rather than read from
# the policy module the matrix checks.
ROLES_WITH: dict[Rule, frozenset[str]] = {
    Rule.VIEW: frozenset({"owner", "editor", "viewer"}),
    Rule.EDIT_TASKS: frozenset({"owner", "editor"}),
    Rule.MANAGE: frozenset({"owner"}),
}
PROJECT_RULES = frozenset(
    {Rule.VIEW, Rule.EDIT_TASKS, Rule.MANAGE, Rule.AUTHOR, Rule.AUTHOR_OR_MANAGE}
)


@dataclass(frozen=True)
class Seed:
    """What a row's request is built from: ids, secrets and access tokens of one world.

    ``ids``: users by name (owner, editor, viewer, bystander, outsider, admin, newbie),
    ``project``, ``task``, ``owner_comment``, ``editor_comment``, ``comment`` (the one the
    comment rows act on; the owner's unless a test points it elsewhere), ``key`` (an API key
    of the owner). ``secrets``: the owner's ``refresh_token`` and ``reset_token``.
    ``tokens``: a 30-minute access token per user name.
    """

    ids: dict[str, int]
    secrets: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}


@dataclass(frozen=True)
class Call:
    """A request's variable parts: path parameters, query, and a JSON or form body."""

    path: dict[str, int | str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None  # a multipart body


def _nothing(seed: Seed) -> Call:
    return Call()


@dataclass(frozen=True)
class Row:
    """One route. ``path`` is the template the OpenAPI document uses (no converters)."""

    method: str
    path: str
    operation_id: str  # the OpenAPI operationId; the route's name for routes not documented
    rule: Rule
    scope: Scope | None  # the scope an API key needs (None: keys need none, or are refused)
    success: int  # the status of the valid request ``build`` makes
    build: Callable[[Seed], Call] = _nothing
    caller: str | None = None  # who sends the valid request (default: by ``rule``)
    writes: str | None = None  # the resource a JSON body sets fields of (mass assignment)
    text_fields: tuple[str, ...] = ()  # body fields of required text (blank is refused)
    fuzz: bool = True  # False: Schemathesis must not call it (says why where it is set)

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path

    @property
    def sent_by(self) -> str | None:
        """The seeded user who sends the valid request (None: nobody signs in)."""
        if self.caller is not None:
            return self.caller
        if self.rule is Rule.PUBLIC:
            return None
        return "admin" if self.rule is Rule.ADMIN else "owner"

    def call(self, seed: Seed) -> Call:
        return self.build(seed)

    def url(self, call: Call) -> str:
        return self.path.format(**call.path)

    def request_kwargs(self, call: Call) -> dict[str, Any]:
        """Keyword arguments for ``httpx.AsyncClient.request`` (method and URL apart)."""
        kwargs: dict[str, Any] = {}
        if call.params:
            kwargs["params"] = call.params
        if call.json is not None:
            kwargs["json"] = call.json
        if call.data is not None:
            kwargs["data"] = call.data
        if call.files is not None:
            kwargs["files"] = call.files
        return kwargs


def _get(
    path: str,
    operation_id: str,
    rule: Rule,
    scope: Scope | None,
    build: Callable[[Seed], Call] = _nothing,
    **extra: Any,
) -> list[Row]:
    """A GET route and the HEAD the app answers on it (operation id ``<id>_head``)."""
    get = Row("GET", path, operation_id, rule, scope, 200, build, **extra)
    return [get, replace(get, method="HEAD", operation_id=f"{operation_id}_head")]


def _task(seed: Seed, **call: Any) -> Call:
    return Call(path={"task_id": seed.ids["task"]}, **call)


def _attachment(seed: Seed, **call: Any) -> Call:
    return Call(path={"task_id": seed.ids["task"], "attachment_id": seed.ids["attachment"]}, **call)


def _webhook(seed: Seed, **call: Any) -> Call:
    return Call(path={"webhook_id": seed.ids["webhook"]}, **call)


def _project(seed: Seed, **call: Any) -> Call:
    return Call(path={"project_id": seed.ids["project"]}, **call)


def _member(seed: Seed, **call: Any) -> Call:
    return Call(path={"project_id": seed.ids["project"], "user_id": seed.ids["bystander"]}, **call)


def _comment(seed: Seed, **call: Any) -> Call:
    return Call(path={"task_id": seed.ids["task"], "comment_id": seed.ids["comment"]}, **call)


def _new_password(**body: Any) -> dict[str, Any]:
    return {"new_password": "Violet-Tractor-88", "confirm_password": "Violet-Tractor-88", **body}


TR, TW = Scope.TASKS_READ, Scope.TASKS_WRITE
PR, PW = Scope.PROJECTS_READ, Scope.PROJECTS_WRITE
TASK = f"{API}/tasks/{{task_id}}"
PROJECT = f"{API}/projects/{{project_id}}"
MEMBER = f"{PROJECT}/members/{{user_id}}"
COMMENT = f"{TASK}/comments/{{comment_id}}"

ROUTES: list[Row] = [
    # operations and documentation (outside the API prefix)
    *_get("/health", "operations_health", Rule.PUBLIC, None),
    *_get("/ready", "operations_ready", Rule.PUBLIC, None),
    *_get("/metrics", "metrics", Rule.PUBLIC, None),  # TASKMANAGER_METRICS_TOKEN unset
    *_get("/openapi.json", "openapi", Rule.PUBLIC, None),
    *_get("/docs", "swagger_ui", Rule.PUBLIC, None),
    *_get("/docs/oauth2-redirect", "swagger_ui_redirect", Rule.PUBLIC, None),
    *_get("/redoc", "redoc_ui", Rule.PUBLIC, None),
    *_get("/docs/static/redoc.offline.js", "redoc_bundle", Rule.PUBLIC, None),
    Row(
        MOUNT,
        "/docs/static/{path}",
        "docs-static",
        Rule.PUBLIC,
        None,
        200,
        lambda seed: Call(path={"path": "redoc.offline.js"}),
    ),
    # tasks
    *_get(f"{API}/tasks", "tasks_list", Rule.CALLER, TR),
    Row("OPTIONS", f"{API}/tasks", "tasks_options", Rule.PUBLIC, None, 204),
    Row(
        "POST",
        f"{API}/tasks",
        "tasks_create",
        Rule.EDIT_TASKS,
        TW,
        201,
        lambda seed: Call(json={"title": "New task", "project_id": seed.ids["project"]}),
        writes="task",
        text_fields=("title", "tags"),
    ),
    *_get(
        f"{API}/tasks/export",
        "tasks_export",
        Rule.CALLER,
        TR,
        lambda seed: Call(params={"format": "csv"}),
    ),
    *_get(TASK, "tasks_get", Rule.VIEW, TR, _task),
    Row(
        "PUT",
        TASK,
        "tasks_replace",
        Rule.EDIT_TASKS,
        TW,
        200,
        lambda seed: _task(seed, json={"title": "R"}),
        writes="task",
        text_fields=("title", "tags"),
    ),
    Row(
        "PATCH",
        TASK,
        "tasks_update",
        Rule.EDIT_TASKS,
        TW,
        200,
        lambda seed: _task(seed, json={"priority": 3}),
        writes="task",
        text_fields=("title", "tags"),
    ),
    Row("DELETE", TASK, "tasks_delete", Rule.EDIT_TASKS, TW, 204, _task),
    Row("OPTIONS", TASK, "tasks_item_options", Rule.PUBLIC, None, 204, _task),
    *_get(f"{PROJECT}/tasks", "tasks_list_for_project", Rule.VIEW, TR, _project),
    # projects
    *_get(f"{API}/projects", "projects_list", Rule.CALLER, PR),
    Row(
        "POST",
        f"{API}/projects",
        "projects_create",
        Rule.CALLER,
        PW,
        201,
        lambda seed: Call(json={"name": "New"}),
        writes="project",
        text_fields=("name",),
    ),
    *_get(PROJECT, "projects_get", Rule.VIEW, PR, _project),
    Row(
        "PUT",
        PROJECT,
        "projects_replace",
        Rule.MANAGE,
        PW,
        200,
        lambda seed: _project(seed, json={"name": "R"}),
        writes="project",
        text_fields=("name",),
    ),
    Row(
        "PATCH",
        PROJECT,
        "projects_update",
        Rule.MANAGE,
        PW,
        200,
        lambda seed: _project(seed, json={"name": "U"}),
        writes="project",
        text_fields=("name",),
    ),
    Row("DELETE", PROJECT, "projects_delete", Rule.MANAGE, PW, 204, _project),
    # members
    *_get(f"{PROJECT}/members", "projects_members_list", Rule.VIEW, PR, _project),
    Row(
        "POST",
        f"{PROJECT}/members",
        "projects_members_add",
        Rule.MANAGE,
        PW,
        201,
        lambda seed: _project(seed, json={"user_id": seed.ids["newbie"], "role": "viewer"}),
        writes="member",
    ),
    *_get(MEMBER, "projects_members_get", Rule.VIEW, PR, _member),
    Row(
        "PATCH",
        MEMBER,
        "projects_members_update",
        Rule.MANAGE,
        PW,
        200,
        lambda seed: _member(seed, json={"role": "editor"}),
        writes="member",
    ),
    Row("DELETE", MEMBER, "projects_members_remove", Rule.MANAGE, PW, 204, _member),
    # comments
    *_get(f"{TASK}/comments", "comments_list", Rule.VIEW, TR, _task),
    Row(
        "POST",
        f"{TASK}/comments",
        "comments_create",
        Rule.EDIT_TASKS,
        TW,
        201,
        lambda seed: _task(seed, json={"body": "hello"}),
        writes="comment",
        text_fields=("body",),
    ),
    *_get(COMMENT, "comments_get", Rule.VIEW, TR, _comment),
    Row(
        "PATCH",
        COMMENT,
        "comments_update",
        Rule.AUTHOR,
        TW,
        200,
        lambda seed: _comment(seed, json={"body": "edited"}),
        writes="comment",
        text_fields=("body",),
    ),
    Row("DELETE", COMMENT, "comments_delete", Rule.AUTHOR_OR_MANAGE, TW, 204, _comment),
    # auth
    Row(
        "POST",
        f"{API}/auth/token",
        "auth_token",
        Rule.PUBLIC,
        None,
        200,
        lambda seed: Call(data={"username": "owner", "password": TEST_PASSWORD}),
    ),
    Row(
        "POST",
        f"{API}/auth/refresh",
        "auth_refresh",
        Rule.PUBLIC,
        None,
        200,
        lambda seed: Call(json={"refresh_token": seed.secrets["refresh_token"]}),
    ),
    Row(
        "POST",
        f"{API}/auth/logout",
        "auth_logout",
        Rule.PUBLIC,
        None,
        204,
        lambda seed: Call(json={"refresh_token": seed.secrets["refresh_token"]}),
    ),
    # Ends every session of the caller at once (no password needed): under fuzzing, every
    # later request would be a 401 and hide real findings. Covered by the auth tests.
    Row("POST", f"{API}/auth/logout-all", "auth_logout_all", Rule.LOGIN, None, 204, fuzz=False),
    Row(
        "POST",
        f"{API}/auth/password-reset",
        "auth_password_reset",
        Rule.PUBLIC,
        None,
        202,
        lambda seed: Call(json={"email": "owner@example.com"}),
    ),
    Row(
        "POST",
        f"{API}/auth/password-reset/confirm",
        "auth_password_reset_confirm",
        Rule.PUBLIC,
        None,
        204,
        lambda seed: Call(json=_new_password(token=seed.secrets["reset_token"])),
    ),
    # users
    Row(
        "POST",
        f"{API}/users",
        "users_create",
        Rule.PUBLIC,
        None,
        201,
        lambda seed: Call(
            json={"email": "new@example.com", "username": "newcomer", "password": STRONG_PASSWORD}
        ),
        writes="user",
    ),
    *_get(f"{API}/users", "users_list", Rule.ADMIN, None),
    *_get(f"{API}/users/me", "users_get_me", Rule.CALLER, None),
    Row(
        "PATCH",
        f"{API}/users/me",
        "users_update_me",
        Rule.LOGIN,
        None,
        200,
        lambda seed: Call(json={"username": "renamed", "current_password": TEST_PASSWORD}),
        writes="user",
    ),
    # The newcomer: the owner is the last owner of a project with other members (409).
    Row(
        "DELETE",
        f"{API}/users/me",
        "users_delete_me",
        Rule.LOGIN,
        None,
        204,
        lambda seed: Call(json={"current_password": TEST_PASSWORD}),
        caller="newbie",
    ),
    Row(
        "POST",
        f"{API}/users/me/password",
        "users_change_password",
        Rule.LOGIN,
        None,
        204,
        lambda seed: Call(json=_new_password(current_password=TEST_PASSWORD)),
    ),
    *_get(
        f"{API}/users/{{user_id}}",
        "users_get",
        Rule.CALLER,
        None,
        lambda seed: Call(path={"user_id": seed.ids["owner"]}),
    ),
    Row(
        "PATCH",
        f"{API}/users/{{user_id}}",
        "users_update",
        Rule.ADMIN,
        None,
        200,
        lambda seed: Call(path={"user_id": seed.ids["bystander"]}, json={"role": "admin"}),
        writes="user",
    ),
    # API keys
    Row(
        "POST",
        f"{API}/api-keys",
        "api_keys_create",
        Rule.LOGIN,
        None,
        201,
        lambda seed: Call(
            json={"name": "script", "scopes": ["tasks:read"], "current_password": TEST_PASSWORD}
        ),
        writes="api_key",
        text_fields=("name",),
    ),
    *_get(f"{API}/api-keys", "api_keys_list", Rule.LOGIN, None),
    *_get(
        f"{API}/api-keys/{{key_id}}",
        "api_keys_get",
        Rule.LOGIN,
        None,
        lambda seed: Call(path={"key_id": seed.ids["key"]}),
    ),
    Row(
        "DELETE",
        f"{API}/api-keys/{{key_id}}",
        "api_keys_delete",
        Rule.LOGIN,
        None,
        204,
        lambda seed: Call(path={"key_id": seed.ids["key"]}),
    ),
    # the event stream (tests/events/ prove its behaviour; HTTP tools cannot speak to it)
    Row(WEBSOCKET, f"{API}/ws", "stream", Rule.CALLER, TR, 101, fuzz=False),
    # Attachments (multipart upload; tests/attachments/ prove streaming and limits)
    Row(
        "POST",
        f"{API}/tasks/{{task_id}}/attachments",
        "attachments_create",
        Rule.EDIT_TASKS,
        TW,
        201,
        lambda seed: _task(seed, files={"file": ("notes.txt", b"hello", "text/plain")}),
    ),
    *_get(f"{API}/tasks/{{task_id}}/attachments", "attachments_list", Rule.VIEW, TR, _task),
    *_get(
        f"{API}/tasks/{{task_id}}/attachments/{{attachment_id}}",
        "attachments_get",
        Rule.VIEW,
        TR,
        _attachment,
    ),
    *_get(
        f"{API}/tasks/{{task_id}}/attachments/{{attachment_id}}/content",
        "attachments_content",
        Rule.VIEW,
        TR,
        _attachment,
    ),
    Row(
        "DELETE",
        f"{API}/tasks/{{task_id}}/attachments/{{attachment_id}}",
        "attachments_delete",
        Rule.EDIT_TASKS,
        TW,
        204,
        _attachment,
    ),
    # Webhooks (a login token only; each user's own)
    Row(
        "POST",
        f"{API}/webhooks",
        "webhooks_create",
        Rule.LOGIN,
        None,
        201,
        lambda seed: Call(json={"url": "http://127.0.0.1:9/hook", "events": ["task.created"]}),
    ),
    *_get(f"{API}/webhooks", "webhooks_list", Rule.LOGIN, None),
    *_get(f"{API}/webhooks/{{webhook_id}}", "webhooks_get", Rule.LOGIN, None, _webhook),
    Row(
        "PATCH",
        f"{API}/webhooks/{{webhook_id}}",
        "webhooks_update",
        Rule.LOGIN,
        None,
        200,
        lambda seed: _webhook(seed, json={"description": "renamed"}),
    ),
    Row(
        "DELETE",
        f"{API}/webhooks/{{webhook_id}}",
        "webhooks_delete",
        Rule.LOGIN,
        None,
        204,
        _webhook,
    ),
    Row(
        "POST",
        f"{API}/webhooks/{{webhook_id}}/rotate-secret",
        "webhooks_rotate_secret",
        Rule.LOGIN,
        None,
        200,
        _webhook,
    ),
    Row(
        "POST",
        f"{API}/webhooks/{{webhook_id}}/ping",
        "webhooks_ping",
        Rule.LOGIN,
        None,
        202,
        _webhook,
    ),
    *_get(
        f"{API}/webhooks/{{webhook_id}}/deliveries",
        "webhooks_list_deliveries",
        Rule.LOGIN,
        None,
        _webhook,
    ),
    Row(
        "POST",
        f"{API}/webhooks/{{webhook_id}}/deliveries/{{delivery_id}}/redeliver",
        "webhooks_redeliver",
        Rule.LOGIN,
        None,
        202,
        lambda seed: Call(
            path={"webhook_id": seed.ids["webhook"], "delivery_id": seed.ids["delivery"]}
        ),
    ),
]
# Every route an HTTP request reaches; the WebSocket's callers (each close code, who
# receives what) are tested through a WebSocket client in tests/events/test_websocket.py.
HTTP_ROUTES: list[Row] = [r for r in ROUTES if r.method != WEBSOCKET]

ROWS_BY_ID: dict[str, Row] = {row.operation_id: row for row in ROUTES}


def row(operation_id: str) -> Row:
    """The row of this operation (KeyError names it when there is none)."""
    return ROWS_BY_ID[operation_id]


# ---- the walk -------------------------------------------------------------------------------


def _route_keys(route: BaseRoute, path: str, methods: set[str] | None) -> Iterator[tuple[str, str]]:
    if isinstance(route, WebSocketRoute):  # FastAPI's APIWebSocketRoute is one too
        yield WEBSOCKET, path
    elif isinstance(route, Route):  # FastAPI's APIRoute is one too
        if methods is None:
            raise TypeError(f"{path}: a route without methods answers every method")
        for method in sorted(methods):
            yield method, path
    elif isinstance(route, Mount):  # its template is "<prefix>/{path}"
        if isinstance(route.app, StaticFiles) or not route.routes:
            yield MOUNT, path
        else:
            for method, subpath in walk(route.routes):
                yield method, path.removesuffix("/{path}") + subpath
    else:
        raise TypeError(f"{path}: a route of unknown kind {type(route).__name__}")


def walk(routes: Sequence[BaseRoute]) -> list[tuple[str, str]]:
    """Every (method, path template) the routes answer, included routers expanded.

    HEAD and OPTIONS appear where the app declares them (a GET route declares HEAD); a
    WebSocket route appears as ``WEBSOCKET``, a mounted application as ``MOUNT`` over its
    prefix. A route of a kind this does not know raises ``TypeError``: it must not slip by.
    """
    keys: list[tuple[str, str]] = []
    for context in iter_route_contexts(routes):
        path = context.path_format or context.path or ""
        keys.extend(_route_keys(context.original_route, path, context.methods))
    return keys


def operation_ids(app: FastAPI) -> dict[tuple[str, str], str]:
    """(METHOD, path) → operationId, from the app's OpenAPI document."""
    return {
        (method.upper(), path): operation["operationId"]
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    }


def route_names(app: FastAPI) -> dict[tuple[str, str], str]:
    """(METHOD, path) → route name, for the routes the OpenAPI document leaves out."""
    names: dict[tuple[str, str], str] = {}
    for context in iter_route_contexts(app.routes):
        path = context.path_format or context.path or ""
        for key in _route_keys(context.original_route, path, context.methods):
            names[key] = context.name or ""
    return names


def differences(app_keys: Sequence[tuple[str, str]], rows: Sequence[Row]) -> list[str]:
    """What keeps the table and the app apart, one line each (empty: they agree)."""
    row_keys = [r.key for r in rows]
    problems = [f"no row for {m} {p}" for m, p in sorted(set(app_keys) - set(row_keys))]
    problems += [
        f"row for a route the app lacks: {m} {p}" for m, p in sorted(set(row_keys) - set(app_keys))
    ]
    problems += [
        f"two rows for {m} {p}" for m, p in sorted({k for k in row_keys if row_keys.count(k) > 1})
    ]
    ids = [r.operation_id for r in rows]
    problems += [
        f"operation id {i} on two rows" for i in sorted({i for i in ids if ids.count(i) > 1})
    ]
    return problems


# ---- the seeded world -----------------------------------------------------------------------

USERS = ("owner", "editor", "viewer", "bystander", "outsider", "admin", "newbie")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def seed_world(app: FastAPI) -> Seed:
    """One project with an owner, editor, viewer and bystander (viewer), a task and comments.

    Around it: an outsider, an administrator who is not a member, and a newcomer who is
    nobody's member yet (the target of "add member"). Users have ``TEST_PASSWORD`` and an
    Inbox; the owner has an API key (every project and task scope), a refresh token and a
    password-reset token. Built straight in the database, in one transaction, so a test of a
    route depends on no other route.
    """
    password_hash = await test_password_hash()
    now = datetime.now(UTC)
    refresh_token, reset_token = secrets.token_urlsafe(48), secrets.token_urlsafe(32)
    raw_key = f"tm_{secrets.token_urlsafe(24)}"
    async with app.state.database.side_transaction() as session:
        users = {
            name: User(
                email=f"{name}@example.com",
                username=name,
                password_hash=password_hash,
                role="admin" if name == "admin" else "user",
            )
            for name in USERS
        }
        session.add_all(users.values())
        await session.flush()
        for user in users.values():
            await create_inbox(session, user.id)
        owner = users["owner"].id
        project = Project(name="World", created_by=owner)
        session.add(project)
        await session.flush()
        for name, role in (
            ("owner", "owner"),
            ("editor", "editor"),
            ("viewer", "viewer"),
            ("bystander", "viewer"),
        ):
            session.add(ProjectMember(project_id=project.id, user_id=users[name].id, role=role))
        task = Task(project_id=project.id, title="World task", created_by=owner)
        session.add(task)
        await session.flush()
        owner_comment = Comment(task_id=task.id, author_id=owner, body="by owner")
        editor_comment = Comment(task_id=task.id, author_id=users["editor"].id, body="by editor")
        key = ApiKey(
            user_id=owner,
            name="world",
            prefix=raw_key[:8],
            key_hash=digest(raw_key),
            scopes=[s.value for s in (TR, TW, PR, PW)],
        )
        webhook = Webhook(
            owner_id=owner,
            url="http://127.0.0.1:9/hook",
            events=["task.created"],
            secret_encrypted=SecretBox(app.state.settings.signing_key).seal(generate_secret()),
        )
        session.add_all([owner_comment, editor_comment, key, webhook])
        await session.flush()
        delivery = WebhookDelivery(
            webhook_id=webhook.id,
            event_id="evt_0000000000000001",
            event_type="task.created",
            payload="{}",
            status="succeeded",
        )
        session.add(delivery)
        stored = await app.state.storage.put(_chunks(b"seeded attachment"))
        attachment = Attachment(
            task_id=task.id,
            filename="seed.txt",
            content_type="text/plain",
            size=stored.size,
            sha256=stored.sha256,
            storage_key=stored.key,
        )
        session.add(attachment)
        session.add(
            RefreshToken(
                user_id=owner,
                family_id=secrets.token_hex(16),
                token_hash=digest(refresh_token),
                expires_at=now + timedelta(days=1),
                family_expires_at=now + timedelta(days=1),
            )
        )
        session.add(
            PasswordResetToken(
                user_id=owner,
                token_hash=digest(reset_token),
                expires_at=now + timedelta(minutes=30),
            )
        )
        await session.flush()
        ids = {name: user.id for name, user in users.items()}
        ids |= {
            "project": project.id,
            "task": task.id,
            "owner_comment": owner_comment.id,
            "editor_comment": editor_comment.id,
            "comment": owner_comment.id,
            "key": key.id,
            "webhook": webhook.id,
            "delivery": delivery.id,
            "attachment": attachment.id,
        }
    signing_key = app.state.settings.signing_key
    tokens = {
        name: create_access_token(ids[name], signing_key, timedelta(minutes=30)) for name in USERS
    }
    return Seed(
        ids,
        {"refresh_token": refresh_token, "reset_token": reset_token, "api_key": raw_key},
        tokens,
    )
