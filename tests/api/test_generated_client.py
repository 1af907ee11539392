"""A client generated from the served document (openapi-python-client) works unchanged.

The document is fetched from the running app, a client package is generated into a temporary
directory and imported, and a whole session runs through it: register, log in, the Inbox
from ``/users/me``, a project, tasks with tags and dates, a list with repeated filters
followed by ``next_cursor`` alone, HEAD, ``If-Match`` and a 412, an API key, and problems
parsed into the generated ``Problem`` model. Runs on SQLite (the HTTP contract does not
depend on the backend); generating needs no network.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from taskmanager import migrate
from tests.conftest import TestDatabase, make_settings

PACKAGE = "tm_generated_client"
GENERATOR = str(Path(sys.executable).parent / "openapi-python-client")


@pytest.fixture(scope="module")
async def sqlite_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FastAPI]:
    from taskmanager.main import create_app

    root = tmp_path_factory.mktemp("generated-client")
    database = TestDatabase("sqlite", f"sqlite+aiosqlite:///{root / 'client.db'}")
    await migrate.upgrade_async(database.url)
    app = create_app(make_settings(database, root / "data"))
    async with LifespanManager(app):
        yield app


def _transport(app: FastAPI) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=app)


@pytest.fixture(scope="module")
async def generated(
    sqlite_app: FastAPI, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Any]:
    root = tmp_path_factory.mktemp("client-package")
    # The document as served, byte for byte.
    async with httpx.AsyncClient(
        transport=_transport(sqlite_app), base_url="http://testserver"
    ) as http:
        served = await http.get("/openapi.json")
    assert served.status_code == 200
    document = root / "openapi.json"
    document.write_bytes(served.content)
    bin_dir = str(Path(sys.executable).parent)
    result = subprocess.run(
        [
            GENERATOR,
            "generate",
            *("--path", str(document)),
            *("--output-path", str(root / PACKAGE)),
            *("--meta", "none"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": bin_dir + ":/usr/bin:/bin", "HOME": str(root)},
        cwd=root,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    sys.path.insert(0, str(root))
    try:
        yield _Generated(importlib.import_module(PACKAGE))
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        shutil.rmtree(root, ignore_errors=True)


class _Generated:
    """The generated package: ``g.api("tasks.tasks_list")``, ``g.models.TaskCreate``."""

    def __init__(self, package: ModuleType) -> None:
        self.package = package
        self.models = importlib.import_module(f"{PACKAGE}.models")
        self.types = importlib.import_module(f"{PACKAGE}.types")

    def api(self, name: str) -> Any:
        return importlib.import_module(f"{PACKAGE}.api.{name}")

    def client(self, app: FastAPI, **auth: str) -> Any:
        # The client's own httpx settings, pointed at the app in process.
        options = {"base_url": "http://testserver", "httpx_args": {"transport": _transport(app)}}
        if auth:
            return self.package.AuthenticatedClient(**options, **auth)
        return self.package.Client(**options)


async def test_a_generated_client_runs_the_whole_flow(sqlite_app: FastAPI, generated: Any) -> None:
    g, m = generated, generated.models
    anonymous = g.client(sqlite_app)

    # Register and log in (the OAuth2 form is a generated model too).
    registered = await g.api("users.users_create").asyncio_detailed(
        client=anonymous,
        body=m.UserCreate(email="client@example.com", username="gen_user", password="Gener8ted-pw"),
    )
    assert registered.status_code == 201, registered.content
    assert registered.headers["location"] == f"/api/v1/users/{registered.parsed.id}"
    tokens = await g.api("auth.auth_token").asyncio(
        client=anonymous, body=m.LoginForm(username="CLIENT@example.com", password="Gener8ted-pw")
    )
    assert isinstance(tokens, m.TokenPair), tokens
    user = g.client(sqlite_app, token=tokens.access_token)

    # The Inbox from /users/me.
    me = await g.api("users.users_get_me").asyncio(client=user)
    assert isinstance(me, m.CurrentUserOut)
    inbox = me.inbox_project_id
    assert isinstance(inbox, int)

    # A project, and tasks with tags and dates, in the Inbox and in the project.
    project = await g.api("projects.projects_create").asyncio(
        client=user, body=m.ProjectCreate(name="Generated")
    )
    assert isinstance(project, m.ProjectOut)
    due = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
    created = []
    for i in range(7):
        body = m.TaskCreate(
            title=f"Task {i}",
            tags=["gen", "odd" if i % 2 else "even"],
            due_date=due,
            priority=1 + i % 3,
            project_id=project.id if i % 2 else g.types.UNSET,
        )
        response = await g.api("tasks.tasks_create").asyncio_detailed(client=user, body=body)
        assert response.status_code == 201, response.content
        assert response.parsed.due_date == due
        assert response.headers["etag"] == f'"{response.parsed.id}-1"'
        created.append(response.parsed)
    assert {task.project_id for task in created} == {inbox, project.id}

    # Repeated filters, then next_cursor alone until the end.
    tasks_list = g.api("tasks.tasks_list")
    first = await tasks_list.asyncio_detailed(
        client=user,
        tag=["gen", "even"],
        priority=[1, 2],
        status=[m.TaskStatus.PENDING, m.TaskStatus.IN_PROGRESS],
        sort_by=m.SortBy.TITLE,
        order=m.SortOrder.ASC,
        limit=2,
    )
    assert first.status_code == 200, first.content
    expected = [t.title for t in created if "even" in t.tags and t.priority in (1, 2)]
    titles = [t.title for t in first.parsed.items]
    assert int(first.headers["x-total-count"]) == len(expected)
    cursor = first.parsed.next_cursor
    while isinstance(cursor, str):
        page = await tasks_list.asyncio(client=user, cursor=cursor)
        assert isinstance(page, m.TaskPage), page
        assert len(page.items) <= 2  # the cursor's page size, not a default
        titles += [t.title for t in page.items]
        cursor = page.next_cursor
    assert titles == sorted(expected)

    # HEAD: the headers, no body, and a generated call that does not choke on it.
    task = created[0]
    head = await g.api("tasks.tasks_get_head").asyncio_detailed(task.id, client=user)
    assert head.status_code == 200
    assert head.content == b""
    etag = head.headers["etag"]
    listed_head = await g.api("tasks.tasks_list_head").asyncio_detailed(client=user)
    assert listed_head.headers["x-total-count"] == "7"

    # If-Match: the current ETag wins once; the stale one is a 412 Problem.
    patch = g.api("tasks.tasks_update")
    updated = await patch.asyncio_detailed(
        task.id, client=user, body=m.TaskPatch(status=m.TaskStatus.COMPLETED), if_match=etag
    )
    assert updated.status_code == 200, updated.content
    assert updated.parsed.completed_at is not None
    stale = await patch.asyncio_detailed(
        task.id, client=user, body=m.TaskPatch(priority=5), if_match=etag
    )
    assert stale.status_code == 412
    assert isinstance(stale.parsed, m.Problem)
    assert stale.parsed.code == "PRECONDITION_FAILED"
    not_modified = await g.api("tasks.tasks_get").asyncio_detailed(
        task.id, client=user, if_none_match=updated.headers["etag"]
    )
    assert not_modified.status_code == 304

    # An API key, used through the client's header settings.
    key = await g.api("api_keys.api_keys_create").asyncio(
        client=user,
        body=m.ApiKeyCreate(
            name="generated", scopes=[m.Scope.TASKSREAD], current_password="Gener8ted-pw"
        ),
    )
    assert isinstance(key, m.ApiKeyCreated), key
    scripted = g.client(sqlite_app, token=key.key, prefix="", auth_header_name="X-API-Key")
    via_key = await tasks_list.asyncio(client=scripted, q="TASK 3")
    assert [t.title for t in via_key.items] == ["Task 3"]
    refused = await g.api("tasks.tasks_create").asyncio_detailed(
        client=scripted, body=m.TaskCreate(title="not allowed")
    )
    assert refused.status_code == 403
    assert refused.parsed.code == "FORBIDDEN"

    # A validation problem, with its errors, parsed into the generated models.
    invalid = await g.api("tasks.tasks_create").asyncio_detailed(
        client=user, body=m.TaskCreate(title="\u200b")
    )
    assert invalid.status_code == 422
    problem = invalid.parsed
    assert isinstance(problem, m.Problem)
    assert problem.code == "VALIDATION_ERROR"
    assert problem.error_count == 1
    assert problem.errors[0].loc == ["body", "title"]
    assert problem.errors[0].msg == "must not be blank"
