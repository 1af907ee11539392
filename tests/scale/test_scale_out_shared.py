"""What one process does, the others see: events through Redis, files through the store.

The module's cluster (``tests/scale/conftest.py``): three ``taskmanager serve`` processes and
one ``taskmanager worker`` on one PostgreSQL database, one Redis and one data dir.
"""

from __future__ import annotations

import json
import secrets
import uuid

import httpx
import pytest
from websockets.sync.client import connect

from tests.scale.cluster import Cluster, client_address, sign_up

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_a_websocket_client_on_one_process_sees_a_change_made_on_another(
    cluster: Cluster,
) -> None:
    auth = sign_up(cluster.url(0), client_address())
    token = auth["Authorization"].removeprefix("Bearer ")
    title = f"seen-{uuid.uuid4().hex[:8]}"
    with connect(cluster.ws_url(0, f"/api/v1/ws?token={token}"), open_timeout=30) as socket:
        created = httpx.post(
            cluster.url(2, "/api/v1/tasks"), json={"title": title}, headers=auth, timeout=60
        )
        assert created.status_code == 201, created.text
        event = json.loads(socket.recv(timeout=30))
    assert event["type"] == "task.created"
    assert event["data"]["id"] == created.json()["id"]
    assert event["data"]["title"] == title
    assert event["id"].startswith("evt_")


def test_an_attachment_uploaded_through_one_process_downloads_through_another(
    cluster: Cluster,
) -> None:
    auth = sign_up(cluster.url(0), client_address())
    task = httpx.post(
        cluster.url(0, "/api/v1/tasks"), json={"title": "with a file"}, headers=auth, timeout=60
    )
    assert task.status_code == 201, task.text
    content = secrets.token_bytes(256 * 1024)
    uploaded = httpx.post(
        cluster.url(0, f"/api/v1/tasks/{task.json()['id']}/attachments"),
        files={"file": ("data.bin", content, "application/octet-stream")},
        headers=auth,
        timeout=60,
    )
    assert uploaded.status_code == 201, uploaded.text
    attachment = uploaded.json()
    download = httpx.get(
        cluster.url(1, f"/api/v1/tasks/{task.json()['id']}/attachments/{attachment['id']}/content"),
        headers=auth,
        timeout=60,
    )
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["etag"] == f'"{attachment["sha256"]}"'
