"""Three ``taskmanager serve`` processes behave as one service (issue 12, "What it must show").

PostgreSQL and Redis are shared; each process is a real ``taskmanager serve`` with
production settings. A client goes through ``Balancer`` (the load balancer's part: ready
backends only, connection errors retried on the next one) or straight to one process.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest

from tests.scale.cluster import Balancer, Cluster, client_address, sign_up
from tests.scale.conftest import AUTH_RATE

pytestmark = [pytest.mark.slow, pytest.mark.redis]

# Writes acknowledged before and after each disruption: enough that load is in flight
# when it happens and that every process takes part afterwards.
WRITES_PER_PHASE = 20
PHASE_TIMEOUT = 180


def test_the_rate_limit_is_global_across_processes(cluster: Cluster) -> None:
    """AUTH_RATE registrations from one address succeed in total, spread over three
    processes; the next one, on any process, is refused (429) — not AUTH_RATE per process."""
    forwarded = {"X-Forwarded-For": client_address()}
    statuses, remaining = [], []
    for attempt in range(AUTH_RATE + 2):
        name = f"limit{uuid.uuid4().hex[:10]}"
        response = httpx.post(
            cluster.url(attempt % cluster.size, "/api/v1/users"),
            json={"email": f"{name}@example.com", "username": name, "password": "Rate-l1mit-x"},
            headers=forwarded,
            timeout=60,
        )
        statuses.append(response.status_code)
        remaining.append(response.headers.get("ratelimit-remaining"))
    assert statuses == [201] * AUTH_RATE + [429, 429], statuses
    assert remaining == [str(n) for n in range(AUTH_RATE - 1, -1, -1)] + ["0", "0"]
    assert int(response.headers["retry-after"]) >= 1


def test_an_idempotent_retry_on_another_process_replays(cluster: Cluster) -> None:
    auth = sign_up(cluster.url(0), client_address())
    title = f"once-{uuid.uuid4().hex[:8]}"
    keyed = {**auth, "Idempotency-Key": uuid.uuid4().hex}
    first = httpx.post(
        cluster.url(0, "/api/v1/tasks"), json={"title": title}, headers=keyed, timeout=60
    )
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    for index in (1, 2):
        retry = httpx.post(
            cluster.url(index, "/api/v1/tasks"), json={"title": title}, headers=keyed, timeout=60
        )
        assert retry.status_code == 201, retry.text
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.content == first.content
        assert retry.headers["location"] == first.headers["location"]
        assert retry.headers["etag"] == first.headers["etag"]
    listed = httpx.get(
        cluster.url(2, "/api/v1/tasks"), params={"q": title}, headers=auth, timeout=60
    )
    assert listed.status_code == 200, listed.text
    assert [task["id"] for task in listed.json()["items"]] == [first.json()["id"]]


@dataclass
class Writer:
    """A client creating tasks without pause through the balancer, each with an
    ``Idempotency-Key`` so that a retry after a lost connection cannot create it twice;
    with ``read_back`` it also reads every created task back (likely from another
    process). Every answer other than 201/200 — and every 409 "still running" — is kept."""

    balancer: Balancer
    read_back: bool = False
    acknowledged: dict[int, str] = field(default_factory=dict)  # task id -> title
    unexpected: list[str] = field(default_factory=list)
    in_progress_retries: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self._write_until_stopped()
        except Exception as exc:  # reported by wait_for and the test, not lost with the thread
            self.unexpected.append(f"{type(exc).__name__}: {exc}")

    def _write_until_stopped(self) -> None:
        while not self.stop.is_set():
            title = f"load-{uuid.uuid4().hex[:12]}"
            key = uuid.uuid4().hex
            while True:
                created = self.balancer.request(
                    "POST", "/api/v1/tasks", json={"title": title}, headers={"Idempotency-Key": key}
                )
                if created.status_code == 409 and "retry-after" in created.headers:
                    # The first attempt is still running (or its process just died holding
                    # the key): the contract says retry after Retry-After.
                    self.in_progress_retries += 1
                    time.sleep(float(created.headers["retry-after"]))
                    continue
                break
            if created.status_code != 201:
                self.unexpected.append(f"POST {created.status_code} {created.text[:200]}")
                continue
            task_id = created.json()["id"]
            self.acknowledged[task_id] = title
            if self.read_back:
                read = self.balancer.request("GET", f"/api/v1/tasks/{task_id}")
                if read.status_code != 200 or read.json()["title"] != title:
                    self.unexpected.append(f"GET {read.status_code} {read.text[:200]}")

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT
        while len(self.acknowledged) < count:
            assert not self.unexpected, self.unexpected
            assert time.monotonic() < deadline, f"{len(self.acknowledged)} of {count} writes"
            time.sleep(0.05)


def _all_readable(cluster: Cluster, auth: dict[str, str], writer: Writer) -> None:
    """Every acknowledged task is there, unchanged, on every running process; and nothing
    else is (a retried write created nothing twice)."""
    for index, process in enumerate(cluster.processes):
        if process is None or process.poll() is not None:
            continue
        with httpx.Client(base_url=cluster.url(index), headers=auth, timeout=60) as client:
            for task_id, title in writer.acknowledged.items():
                read = client.get(f"/api/v1/tasks/{task_id}")
                assert read.status_code == 200, (task_id, read.text)
                assert read.json()["title"] == title
            total = client.head("/api/v1/tasks").headers["x-total-count"]
            assert int(total) == len(writer.acknowledged)


def test_kill_9_mid_load_loses_no_acknowledged_write(cluster: Cluster) -> None:
    auth = sign_up(cluster.url(0), client_address())
    victim = 1
    with Balancer(cluster, auth) as balancer:
        writer = Writer(balancer)
        thread = threading.Thread(target=writer.run)
        thread.start()
        try:
            writer.wait_for(WRITES_PER_PHASE)
            assert balancer.served[victim] > 0  # the victim was taking its share
            cluster.kill(victim)  # mid-load: no drain, its connections are reset
            writer.wait_for(len(writer.acknowledged) + WRITES_PER_PHASE)
        finally:
            writer.stop.set()
            thread.join()
    assert writer.unexpected == []
    _all_readable(cluster, auth, writer)


def test_a_rolling_restart_costs_a_retrying_client_nothing(cluster: Cluster) -> None:
    """SIGTERM one process at a time, restart it, wait until it is ready; a client that
    retries connection errors (and only those) sees no failed request at all."""
    auth = sign_up(cluster.url(0), client_address())
    with Balancer(cluster, auth) as balancer:
        writer = Writer(balancer, read_back=True)
        thread = threading.Thread(target=writer.run)
        thread.start()
        try:
            writer.wait_for(WRITES_PER_PHASE)
            for index in range(cluster.size):
                assert cluster.terminate(index) == 0  # drained, then a clean exit
                cluster.start(index)
                cluster.wait_ready(index)
                before = balancer.served[index]
                # Load flows again through the restarted process before the next one stops.
                writer.wait_for(len(writer.acknowledged) + WRITES_PER_PHASE)
                deadline = time.monotonic() + PHASE_TIMEOUT
                while balancer.served[index] == before:
                    assert time.monotonic() < deadline, f"process {index} got no traffic"
                    time.sleep(0.05)
        finally:
            writer.stop.set()
            thread.join()
    assert writer.unexpected == []
    assert writer.in_progress_retries == 0  # nothing was cut off mid-request
    _all_readable(cluster, auth, writer)
