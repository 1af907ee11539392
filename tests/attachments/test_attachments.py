"""Attachments through HTTP on both databases: upload, list, metadata, download, delete,
authorization, safe names and types, conditional downloads, limits, cascades, the sweep and
storage failures."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from taskmanager.attachments.sweep import sweep
from taskmanager.kit.storage import LocalStorage
from taskmanager.models.attachments import Attachment
from taskmanager.models.events import Event
from tests.attachments.support import (
    multipart,
    object_path,
    storage_keys,
    stored_files,
    team,
    temporary_files,
    upload,
    url,
)
from tests.conftest import AppFactory, UserFactory, problem
from tests.factories import (
    API,
    TEST_PASSWORD,
    api_create_project,
    count_rows,
    create_api_key,
    create_task,
)

FIELDS = {"id", "task_id", "filename", "content_type", "size", "sha256", "created_at"}


async def _events(app: FastAPI, type_: str) -> list[Event]:
    async with app.state.database.snapshot() as session:
        rows = await session.scalars(select(Event).where(Event.type == type_).order_by(Event.id))
        return list(rows.all())


async def test_upload_list_get_download_delete(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, project_id, task_id = await team(client, make_user, app)
    content = b"Minutes of the meeting\n" * 100
    created = await upload(client, users["editor"], task_id, content, "minutes.txt", "text/plain")
    assert created.status_code == 201, created.text
    attachment = created.json()
    assert set(attachment) == FIELDS
    assert attachment["task_id"] == task_id
    assert attachment["filename"] == "minutes.txt"
    assert attachment["content_type"] == "text/plain"
    assert attachment["size"] == len(content)
    assert attachment["sha256"] == hashlib.sha256(content).hexdigest()
    assert created.headers["location"] == url(task_id, attachment["id"])

    # Stored under a generated key, not the client's name.
    (key,) = await storage_keys(app)
    assert len(key) == 32
    assert key != "minutes.txt"
    assert object_path(app, key).read_bytes() == content

    viewer = users["viewer"].headers
    fetched = await client.get(created.headers["location"], headers=viewer)
    assert fetched.status_code == 200
    assert fetched.json() == attachment
    assert fetched.headers["etag"]
    listed = await client.get(url(task_id), headers=viewer)
    assert listed.status_code == 200
    assert listed.json() == {
        "items": [attachment],
        "total": 1,
        "skip": 0,
        "limit": 20,
        "next_cursor": None,
    }
    assert listed.headers["x-total-count"] == "1"

    download = await client.get(url(task_id, attachment["id"], "content"), headers=viewer)
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-type"] == "text/plain"
    assert download.headers["content-length"] == str(len(content))
    assert download.headers["content-disposition"] == (
        "attachment; filename=\"minutes.txt\"; filename*=UTF-8''minutes.txt"
    )
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["etag"] == f'"{attachment["sha256"]}"'

    head = await client.head(url(task_id, attachment["id"], "content"), headers=viewer)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == download.headers["etag"]

    # The outbox has the created event with the API representation.
    (event,) = await _events(app, "attachment.created")
    assert event.data == attachment
    assert event.project_id == project_id
    assert event.actor_id == users["editor"].id

    deleted = await client.delete(url(task_id, attachment["id"]), headers=users["editor"].headers)
    assert deleted.status_code == 204
    assert not object_path(app, key).exists()
    problem(
        await client.get(url(task_id, attachment["id"]), headers=viewer), 404, "RESOURCE_NOT_FOUND"
    )
    problem(
        await client.get(url(task_id, attachment["id"], "content"), headers=viewer),
        404,
        "RESOURCE_NOT_FOUND",
    )
    (gone,) = await _events(app, "attachment.deleted")
    assert gone.data == attachment


async def test_if_none_match_gives_304(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, _, task_id = await team(client, make_user, app)
    attachment = (await upload(client, users["owner"], task_id, b"abc")).json()
    target = url(task_id, attachment["id"], "content")
    etag = f'"{hashlib.sha256(b"abc").hexdigest()}"'
    cached = await client.get(target, headers={**users["owner"].headers, "If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    other = await client.get(target, headers={**users["owner"].headers, "If-None-Match": '"x"'})
    assert other.status_code == 200
    assert other.content == b"abc"


async def test_authorization(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, _, task_id = await team(client, make_user, app)
    attachment = (await upload(client, users["owner"], task_id)).json()
    one = url(task_id, attachment["id"])
    reads = [url(task_id), one, one + "/content"]

    # An outsider sees nothing, not even that the task exists.
    outsider = users["outsider"].headers
    for target in reads:
        problem(await client.get(target, headers=outsider), 404, "RESOURCE_NOT_FOUND")
    problem(await upload(client, users["outsider"], task_id), 404, "RESOURCE_NOT_FOUND")
    problem(await client.delete(one, headers=outsider), 404, "RESOURCE_NOT_FOUND")

    # A viewer reads but neither uploads nor deletes.
    viewer = users["viewer"].headers
    for target in reads:
        assert (await client.get(target, headers=viewer)).status_code == 200
    problem(await upload(client, users["viewer"], task_id), 403, "FORBIDDEN")
    problem(await client.delete(one, headers=viewer), 403, "FORBIDDEN")

    # Anonymous: 401; an API key needs tasks:write to upload.
    problem(await client.post(url(task_id), files={"file": ("a", b"a")}), 401, "NOT_AUTHENTICATED")
    read_only = await create_api_key(app, users["owner"], ["tasks:read"])
    problem(
        await client.post(url(task_id), files={"file": ("a", b"a")}, headers=read_only),
        403,
        "FORBIDDEN",
    )
    assert (await client.get(one + "/content", headers=read_only)).status_code == 200
    writer = await create_api_key(app, users["editor"], ["tasks:write"])
    assert (
        await client.post(url(task_id), files={"file": ("a", b"a")}, headers=writer)
    ).status_code == 201
    assert await count_rows(app, Attachment) == 2

    # The editor may delete the owner's upload; the file goes too.
    assert (await client.delete(one, headers=users["editor"].headers)).status_code == 204
    assert await count_rows(app, Attachment) == 1


async def test_path_in_filename_is_stored_under_a_generated_key(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, _, task_id = await team(client, make_user, app)
    body, headers = multipart(
        b"root:x:0:0", disposition='form-data; name="file"; filename="../../etc/passwd"'
    )
    created = await client.post(
        url(task_id), content=body, headers={**users["owner"].headers, **headers}
    )
    assert created.status_code == 201, created.text
    attachment = created.json()
    assert attachment["filename"] == "passwd"
    (key,) = await storage_keys(app)
    assert object_path(app, key).read_bytes() == b"root:x:0:0"
    storage = app.state.storage
    assert isinstance(storage, LocalStorage)
    assert not (storage.root.parent / "etc").exists()
    download = await client.get(
        url(task_id, attachment["id"], "content"), headers=users["owner"].headers
    )
    assert download.headers["content-disposition"] == (
        "attachment; filename=\"passwd\"; filename*=UTF-8''passwd"
    )


async def test_hostile_filename_is_served_with_a_safe_disposition(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, _, task_id = await team(client, make_user, app)
    # Quote, backslash path, semicolon, percent, a bidi override; CR/LF cannot reach a
    # header at all (the multipart header would end), so they are tested on the name alone.
    raw = 'C:\\Users\\eve\\in"voice;%0d\u202etxt.exe'
    body, headers = multipart(
        b"x", disposition=f'form-data; name="file"; filename="{raw.replace(chr(34), "%22")}"'
    )
    created = await client.post(
        url(task_id), content=body, headers={**users["owner"].headers, **headers}
    )
    assert created.status_code == 201, created.text
    name = created.json()["filename"]
    for unsafe in ("\\", "/", "\u202e"):
        assert unsafe not in name
    download = await client.get(
        url(task_id, created.json()["id"], "content"), headers=users["owner"].headers
    )
    disposition = download.headers["content-disposition"]
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert all(32 <= ord(ch) < 127 and ch not in '"\\/;%' for ch in fallback)
    assert disposition.count('"') == 2
    assert "\r" not in disposition
    assert "\n" not in disposition


async def test_non_ascii_filename_gets_filename_star(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, _, task_id = await team(client, make_user, app)
    created = await upload(
        client, users["owner"], task_id, b"%PDF", "Résumé 2026 \u2013 日本.pdf", "application/pdf"
    )
    assert created.status_code == 201, created.text
    assert created.json()["filename"] == "Résumé 2026 \u2013 日本.pdf"
    download = await client.get(
        url(task_id, created.json()["id"], "content"), headers=users["owner"].headers
    )
    assert download.headers["content-disposition"] == (
        'attachment; filename="Resume 2026 _ __.pdf"; '
        "filename*=UTF-8''R%C3%A9sum%C3%A9%202026%20%E2%80%93%20%E6%97%A5%E6%9C%AC.pdf"
    )
    assert download.headers["content-type"] == "application/pdf"


async def test_content_type_is_normalised_and_never_served_inline(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, _, task_id = await team(client, make_user, app)
    page = b"<script>alert(1)</script>"
    html = await upload(client, users["owner"], task_id, page, "x.html", "Text/HTML; charset=utf-8")
    assert html.json()["content_type"] == "text/html"
    download = await client.get(
        url(task_id, html.json()["id"], "content"), headers=users["owner"].headers
    )
    assert download.headers["content-type"] == "text/html"
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in download.headers["content-security-policy"]

    for sent in ("not a type", "text/", "a/b/c", ""):
        body, headers = multipart(b"x", content_type=sent)
        created = await client.post(
            url(task_id), content=body, headers={**users["owner"].headers, **headers}
        )
        assert created.json()["content_type"] == "application/octet-stream", sent
    body, headers = multipart(b"x", content_type=None)
    created = await client.post(
        url(task_id), content=body, headers={**users["owner"].headers, **headers}
    )
    assert created.json()["content_type"] == "application/octet-stream"


async def test_bad_uploads_are_refused_and_leave_nothing(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, _, task_id = await team(client, make_user, app)
    owner = users["owner"].headers
    before = stored_files(app)
    problem(
        await client.post(url(task_id), json={"file": "x"}, headers=owner),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    wrong_field = await client.post(url(task_id), files={"document": ("a", b"a")}, headers=owner)
    assert problem(wrong_field, 422, "VALIDATION_ERROR")["errors"][0]["loc"] == ["body", "file"]
    problem(
        await client.post(
            url(task_id), content=b"", headers={**owner, "Content-Type": "multipart/form-data"}
        ),
        400,
        "MALFORMED_REQUEST",
    )
    body, headers = multipart(b"cut short")
    problem(
        await client.post(url(task_id), content=body[:-20], headers={**owner, **headers}),
        400,
        "MALFORMED_REQUEST",
    )
    problem(await upload(client, users["owner"], 999_999), 404, "RESOURCE_NOT_FOUND")
    assert await count_rows(app, Attachment) == 0
    assert stored_files(app) == before
    assert temporary_files(app) == []


async def test_every_multipart_parser_error_is_a_400_problem(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    """Whatever python-multipart refuses, in its constructor or while fed, is 400
    MALFORMED_REQUEST problem+json (issue 11: a boundary over 256 characters was a 500)."""
    users, _, task_id = await team(client, make_user, app)
    owner = users["owner"].headers
    before = stored_files(app)
    long_boundary = "b" * 257
    body, headers = multipart(b"data", boundary=long_boundary)
    refused = [
        # The parser's constructor: a boundary over its 256-byte maximum.
        await client.post(url(task_id), content=body, headers={**owner, **headers}),
        # Fed: one part header over the parser's per-header maximum (a 10 KB file name).
        await client.post(
            url(task_id),
            content=multipart(
                b"data", disposition=f'form-data; name="file"; filename="{"n" * 10_000}.txt"'
            )[0],
            headers={**owner, **multipart(b"")[1]},
        ),
        # Fed: bytes that are not multipart framing at all.
        await client.post(
            url(task_id),
            content=b"not a multipart body\r\n" * 10,
            headers={**owner, "Content-Type": "multipart/form-data; boundary=xyz"},
        ),
    ]
    for response in refused:
        problem(response, 400, "MALFORMED_REQUEST")
    assert await count_rows(app, Attachment) == 0
    assert stored_files(app) == before
    assert temporary_files(app) == []


async def test_two_file_parts_are_422_and_store_nothing(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    """A body with two ``file`` parts is refused, and the first, already streamed to the
    store, is removed (issue 11: it was stored and the second silently dropped, 201)."""
    users, _, task_id = await team(client, make_user, app)
    before = stored_files(app)
    response = await client.post(
        url(task_id),
        files=[("file", ("one.txt", b"first", "text/plain")), ("file", ("two.txt", b"second"))],
        data={"note": "other fields are still ignored"},
        headers=users["owner"].headers,
    )
    body = problem(response, 422, "VALIDATION_ERROR")
    assert body["errors"][0]["loc"] == ["body", "file"]
    assert "exactly one file" in body["errors"][0]["msg"]
    assert await count_rows(app, Attachment) == 0
    assert stored_files(app) == before
    assert temporary_files(app) == []
    # One file among other fields is still fine.
    one = await client.post(
        url(task_id),
        files=[("file", ("one.txt", b"first", "text/plain"))],
        data={"note": "ignored"},
        headers=users["owner"].headers,
    )
    assert one.status_code == 201, one.text
    assert len(stored_files(app) - before) == 1


async def test_over_the_limit_is_413_and_leaves_nothing(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    app, client = await make_app(max_upload_bytes=64 * 1024)
    users, _, task_id = await team(client, make_user, app)
    owner = users["owner"].headers
    # A declared length over the limit and its framing allowance: refused before anything
    # is read.
    body, headers = multipart(b"a" * (200 * 1024))
    problem(
        await client.post(url(task_id), content=body, headers={**owner, **headers}),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    # Chunked: cut once the bytes pass the limit, the rest never read.
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        head, _ = multipart(b"")
        yield head[: head.index(b"\r\n\r\n") + 4]
        for _ in range(100):
            sent += 1
            yield b"a" * 4096

    problem(
        await client.post(url(task_id), content=chunks(), headers={**owner, **headers}),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    assert sent < 100
    assert await count_rows(app, Attachment) == 0
    assert stored_files(app) == set()
    assert temporary_files(app) == []
    # Just under the limit passes.
    assert (await upload(client, users["owner"], task_id, b"a" * (60 * 1024))).status_code == 201


async def test_a_file_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    """The limit is the file's size; the multipart framing around it does not count against
    it (issue 11: a file of exactly TASKMANAGER_MAX_UPLOAD_BYTES was 413)."""
    limit = 64 * 1024
    app, client = await make_app(max_upload_bytes=limit)
    users, _, task_id = await team(client, make_user, app)
    owner = users["owner"].headers
    body, headers = multipart(b"a" * (limit + 1))

    async def chunked() -> AsyncIterator[bytes]:
        yield body

    for over in (body, chunked()):  # with a declared Content-Length, and without one
        problem(
            await client.post(url(task_id), content=over, headers={**owner, **headers}),
            413,
            "PAYLOAD_TOO_LARGE",
        )
    assert await count_rows(app, Attachment) == 0
    assert stored_files(app) == set()
    assert temporary_files(app) == []
    at_limit = await upload(client, users["owner"], task_id, b"a" * limit)
    assert at_limit.status_code == 201, at_limit.text
    assert at_limit.json()["size"] == limit
    body, headers = multipart(b"b" * limit)

    async def chunked_at_limit() -> AsyncIterator[bytes]:
        yield body

    again = await client.post(
        url(task_id), content=chunked_at_limit(), headers={**owner, **headers}
    )
    assert again.status_code == 201, again.text
    assert again.json()["size"] == limit


async def test_a_keyed_upload_holds_no_database_connection_while_it_streams(
    make_app: AppFactory, make_user: UserFactory
) -> None:
    """With a one-connection pool, another request's write goes through while a keyed upload
    is still streaming: the Idempotency-Key's lock is taken by the upload's transaction, which
    opens only once the file is stored, never while the client is still sending it."""
    app, client = await make_app(
        db_pool_size=1, db_pool_timeout_seconds=1, background_in_serve=False
    )
    users, _, task_id = await team(client, make_user, app)
    body, headers = multipart(b"a" * 4096)
    streaming, resume = asyncio.Event(), asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield body[:200]
        streaming.set()  # the server has read the first chunk and asks for more
        await resume.wait()
        yield body[200:]

    keyed = {**users["owner"].headers, **headers, "Idempotency-Key": "upload-1"}
    sending = asyncio.create_task(client.post(url(task_id), content=slowly(), headers=keyed))
    waiting = asyncio.create_task(streaming.wait())
    await asyncio.wait({sending, waiting}, return_when=asyncio.FIRST_COMPLETED)
    # Not answered before the body was read (as it was when the lock's connection, held from
    # the start, left none for the upload's own access check).
    assert not sending.done(), sending.result().text
    meanwhile = await client.post(
        f"{API}/projects", json={"name": "Meanwhile"}, headers=users["editor"].headers
    )
    resume.set()
    first = await sending
    assert meanwhile.status_code == 201, meanwhile.text
    assert first.status_code == 201, first.text
    again = await client.post(url(task_id), content=body, headers=keyed)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert await count_rows(app, Attachment) == 1


async def test_deleting_task_project_or_account_removes_files(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, project_id, task_id = await team(client, make_user, app)
    owner = users["owner"]
    await upload(client, owner, task_id, b"task file")
    other_task = await create_task(app, project_id, owner.id)
    await upload(client, owner, other_task, b"project file")
    keys = await storage_keys(app)
    assert len(keys) == 2

    # The task: its file goes, the other task's stays.
    (task_key,) = [k for k in keys if object_path(app, k).read_bytes() == b"task file"]
    assert (await client.delete(f"{API}/tasks/{task_id}", headers=owner.headers)).status_code == 204
    assert not object_path(app, task_key).exists()
    (project_key,) = keys - {task_key}
    assert object_path(app, project_key).exists()

    # The project: every task's files.
    response = await client.delete(f"{API}/projects/{project_id}", headers=owner.headers)
    assert response.status_code == 204
    assert not object_path(app, project_key).exists()

    # The account: its Inbox (and projects only it belongs to) with their files.
    loner = await make_user("loner")
    inbox_task = await create_task(app, loner.inbox_id, loner.id)
    solo = await api_create_project(client, loner, "Solo")
    solo_task = await create_task(app, solo["id"], loner.id)
    await upload(client, loner, inbox_task, b"inbox file")
    await upload(client, loner, solo_task, b"solo file")
    loner_keys = await storage_keys(app)
    assert len(loner_keys) == 2
    response = await client.request(
        "DELETE",
        f"{API}/users/me",
        json={"current_password": TEST_PASSWORD},
        headers=loner.headers,
    )
    assert response.status_code == 204, response.text
    assert all(not object_path(app, key).exists() for key in loner_keys)
    assert await storage_keys(app) == set()


async def test_a_refused_delete_keeps_the_files(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    """Keys collected for a delete that then fails (412) are not removed: no commit."""
    users, _, task_id = await team(client, make_user, app)
    await upload(client, users["owner"], task_id)
    (key,) = await storage_keys(app)
    response = await client.delete(
        f"{API}/tasks/{task_id}", headers={**users["owner"].headers, "If-Match": '"1-99"'}
    )
    problem(response, 412, "PRECONDITION_FAILED")
    assert object_path(app, key).exists()


async def test_sweep_removes_old_unreferenced_objects_only(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, _, task_id = await team(client, make_user, app)
    await upload(client, users["owner"], task_id, b"kept")
    (referenced,) = await storage_keys(app)
    storage = app.state.storage

    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    old_orphan = (await storage.put(one(b"crashed before commit"))).key
    new_orphan = (await storage.put(one(b"upload in flight"))).key
    # An unfinished write left by a crash.
    stale_part = object_path(app, old_orphan).parent / f".{old_orphan}.x.part"
    stale_part.write_bytes(b"partial")
    long_ago = time.time() - 3 * 3600
    for path in (object_path(app, old_orphan), object_path(app, referenced), stale_part):
        os.utime(path, (long_ago, long_ago))

    removed = await sweep(app.state.database, storage, grace=timedelta(hours=1))
    assert removed >= 1
    assert not object_path(app, old_orphan).exists()
    assert not stale_part.exists()
    assert object_path(app, referenced).exists()  # old, but a row references it
    assert object_path(app, new_orphan).exists()  # unreferenced, but within the grace period
    download = await client.get(url(task_id, 1, "content"), headers=users["owner"].headers)
    assert download.content == b"kept"


async def test_storage_failure_is_503(
    make_app: AppFactory, make_user: UserFactory, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    app, client = await make_app(storage_url=(blocker / "attachments").as_uri())
    users, _, task_id = await team(client, make_user, app)
    response = await upload(client, users["owner"], task_id)
    body = problem(response, 503, "SERVICE_UNAVAILABLE")
    assert "store" in body["detail"]
    assert response.headers["retry-after"] == "5"
    assert await count_rows(app, Attachment) == 0


async def test_missing_object_is_503_not_500(
    client: httpx.AsyncClient, make_user: UserFactory, app: FastAPI
) -> None:
    users, _, task_id = await team(client, make_user, app)
    attachment = (await upload(client, users["owner"], task_id)).json()
    (key,) = await storage_keys(app)
    object_path(app, key).unlink()
    response = await client.get(
        url(task_id, attachment["id"], "content"), headers=users["owner"].headers
    )
    problem(response, 503, "SERVICE_UNAVAILABLE")
    assert response.headers["retry-after"]
