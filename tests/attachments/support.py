"""Helpers shared by the attachment tests."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from taskmanager.kit.storage import LocalStorage
from taskmanager.models.attachments import Attachment
from tests.conftest import TestUser, UserFactory
from tests.factories import API, api_add_member, api_create_project, create_task


async def team(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> tuple[dict[str, TestUser], int, int]:
    """owner, editor, viewer and an outsider around one task; (users, project id, task id)."""
    users = {name: await make_user(name) for name in ("owner", "editor", "viewer", "outsider")}
    project = await api_create_project(client, users["owner"])
    await api_add_member(client, users["owner"], project["id"], users["editor"], "editor")
    await api_add_member(client, users["owner"], project["id"], users["viewer"], "viewer")
    task_id = await create_task(app, project["id"], users["owner"].id)
    return users, project["id"], task_id


def url(task_id: int, *rest: str | int) -> str:
    return f"{API}/tasks/{task_id}/attachments" + "".join(f"/{part}" for part in rest)


def multipart(
    content: bytes,
    *,
    disposition: str = 'form-data; name="file"; filename="a.bin"',
    content_type: str | None = "application/octet-stream",
    boundary: str = "----taskmanager-test-boundary",
) -> tuple[bytes, dict[str, str]]:
    """A hand-built multipart body (exact bytes: httpx would escape odd file names)."""
    head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    body = head.encode() + b"\r\n" + content + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def upload(
    client: httpx.AsyncClient,
    user: TestUser,
    task_id: int,
    content: bytes = b"hello",
    filename: str = "notes.txt",
    content_type: str = "text/plain",
) -> httpx.Response:
    return await client.post(
        url(task_id),
        files={"file": (filename, content, content_type)},
        headers=user.headers,
    )


async def storage_keys(app: FastAPI) -> set[str]:
    """Every storage key the attachments table references."""
    async with app.state.database.snapshot() as session:
        return set((await session.scalars(select(Attachment.storage_key))).all())


def object_path(app: FastAPI, key: str) -> Path:
    storage = app.state.storage
    assert isinstance(storage, LocalStorage)
    return storage.root / key[:2] / key


def stored_files(app: FastAPI) -> set[str]:
    """Names of the finished objects on disk (temporary files excluded)."""
    storage = app.state.storage
    assert isinstance(storage, LocalStorage)
    if not storage.root.exists():
        return set()
    return {
        path.name
        for path in storage.root.glob("*/*")
        if path.is_file() and not path.name.startswith(".")
    }


def temporary_files(app: FastAPI) -> list[Path]:
    storage = app.state.storage
    assert isinstance(storage, LocalStorage)
    return list(storage.root.glob("*/.*.part")) if storage.root.exists() else []
