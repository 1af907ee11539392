"""The S3 backend against a local S3-compatible server (moto in server mode on loopback,
started by the test): the same upload, download and delete flow with
``TASKMANAGER_STORAGE_URL=s3://bucket/prefix``, multipart uploads for large files, aborted
uploads on 413, the sweep, and 503 when the endpoint is down."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from taskmanager.attachments.sweep import sweep
from taskmanager.kit.storage import S3_PART_BYTES, S3Storage
from taskmanager.models.attachments import Attachment
from tests.attachments.support import storage_keys, team, upload, url
from tests.conftest import AppFactory, UserFactory, problem
from tests.factories import API, count_rows
from tests.serve_support import die_with_parent, free_port

MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")
BUCKET = "taskmanager-test"
PREFIX = "attachments/v1"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, for this module."""
    port = free_port()
    process = subprocess.Popen(
        [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(endpoint, timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError("moto_server did not start") from None
            time.sleep(0.1)
    try:
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An empty bucket, with the AWS_* variables the app reads pointing at it."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield client
    listed = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    if listed:
        client.delete_objects(
            Bucket=BUCKET, Delete={"Objects": [{"Key": item["Key"]} for item in listed]}
        )
    for pending in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
        client.abort_multipart_upload(
            Bucket=BUCKET, Key=pending["Key"], UploadId=pending["UploadId"]
        )
    client.delete_bucket(Bucket=BUCKET)


def _objects(s3: Any) -> dict[str, dict[str, Any]]:
    return {item["Key"]: item for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


async def test_upload_download_delete_on_s3(
    s3: Any, make_app: AppFactory, make_user: UserFactory
) -> None:
    app, client = await make_app(background_in_serve=False, storage_url=f"s3://{BUCKET}/{PREFIX}")
    assert isinstance(app.state.storage, S3Storage)
    users, _, task_id = await team(client, make_user, app)
    content = b"stored in a bucket\n" * 1000
    created = await upload(client, users["editor"], task_id, content, "bucket.txt", "text/plain")
    assert created.status_code == 201, created.text
    attachment = created.json()
    assert attachment["sha256"] == hashlib.sha256(content).hexdigest()
    (key,) = await storage_keys(app)
    assert set(_objects(s3)) == {f"{PREFIX}/{key}"}
    stored = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")["Body"].read()
    assert stored == content

    download = await client.get(
        url(task_id, attachment["id"], "content"), headers=users["viewer"].headers
    )
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["etag"] == f'"{attachment["sha256"]}"'
    assert download.headers["content-disposition"].startswith('attachment; filename="bucket.txt"')

    deleted = await client.delete(url(task_id, attachment["id"]), headers=users["editor"].headers)
    assert deleted.status_code == 204
    assert _objects(s3) == {}

    # Deleting the task removes its objects too.
    await upload(client, users["owner"], task_id, b"one")
    await upload(client, users["owner"], task_id, b"two")
    assert len(_objects(s3)) == 2
    response = await client.delete(f"{API}/tasks/{task_id}", headers=users["owner"].headers)
    assert response.status_code == 204
    assert _objects(s3) == {}


async def test_large_upload_is_a_streamed_multipart_upload(
    s3: Any, make_app: AppFactory, make_user: UserFactory
) -> None:
    app, client = await make_app(
        background_in_serve=False, storage_url=f"s3://{BUCKET}/{PREFIX}", max_upload_bytes=32 * MiB
    )
    users, _, task_id = await team(client, make_user, app)
    size = 2 * S3_PART_BYTES + 3 * MiB  # three parts: 8 MiB, 8 MiB, 3 MiB
    block = bytes(range(256)) * 256
    expected = hashlib.sha256()
    blocks = size // len(block)
    for _ in range(blocks):
        expected.update(block)
    boundary = "----s3-multipart"

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"'
            "\r\n\r\n"
        ).encode()
        for _ in range(blocks):
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    created = await client.post(
        url(task_id),
        content=body(),
        headers={
            **users["owner"].headers,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["size"] == size
    assert created.json()["sha256"] == expected.hexdigest()
    (key,) = await storage_keys(app)
    # S3 gives a multipart object the ETag "<md5 of the part md5s>-<number of parts>".
    head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", PartNumber=1)
    assert head["PartsCount"] == 3
    assert head["ContentLength"] == S3_PART_BYTES
    assert s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")["ETag"].endswith('-3"')

    received = hashlib.sha256()
    async with client.stream(
        "GET", url(task_id, created.json()["id"], "content"), headers=users["owner"].headers
    ) as response:
        assert response.status_code == 200
        async for data in response.aiter_bytes():
            received.update(data)
    assert received.hexdigest() == expected.hexdigest()


async def test_over_the_limit_aborts_the_multipart_upload(
    s3: Any, make_app: AppFactory, make_user: UserFactory
) -> None:
    app, client = await make_app(
        background_in_serve=False, storage_url=f"s3://{BUCKET}/{PREFIX}", max_upload_bytes=10 * MiB
    )
    users, _, task_id = await team(client, make_user, app)
    boundary = "----s3-too-large"

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
        ).encode()
        for _ in range(11 * 16):  # 11 MiB: one 8 MiB part is uploaded before the cut
            yield b"x" * (64 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = await client.post(
        url(task_id),
        content=body(),
        headers={
            **users["owner"].headers,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    problem(response, 413, "PAYLOAD_TOO_LARGE")
    assert _objects(s3) == {}
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert await count_rows(app, Attachment) == 0


async def test_sweep_on_s3(s3: Any, make_app: AppFactory, make_user: UserFactory) -> None:
    app, client = await make_app(background_in_serve=False, storage_url=f"s3://{BUCKET}/{PREFIX}")
    users, _, task_id = await team(client, make_user, app)
    await upload(client, users["owner"], task_id, b"kept")
    (kept,) = await storage_keys(app)
    storage = app.state.storage

    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    orphan = (await storage.put(one(b"orphan"))).key
    s3.create_multipart_upload(Bucket=BUCKET, Key=f"{PREFIX}/{'0' * 32}")
    # S3 sets modification times itself: a grace period "in the future" makes every object
    # old enough, so only the references decide.
    removed = await sweep(app.state.database, storage, grace=timedelta(minutes=-1))
    assert removed == 1
    assert set(_objects(s3)) == {f"{PREFIX}/{kept}"}
    assert f"{PREFIX}/{orphan}" not in _objects(s3)
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


async def test_unreachable_s3_is_503(
    s3: Any, make_app: AppFactory, make_user: UserFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    app, client = await make_app(background_in_serve=False, storage_url=f"s3://{BUCKET}/{PREFIX}")
    users, _, task_id = await team(client, make_user, app)
    response = await upload(client, users["owner"], task_id)
    problem(response, 503, "SERVICE_UNAVAILABLE")
    assert response.headers["retry-after"] == "5"
    assert await count_rows(app, Attachment) == 0
