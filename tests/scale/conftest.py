"""The scale-out cluster: three ``taskmanager serve`` processes on PostgreSQL and Redis.

One cluster per module (starting processes is the slow part); a test that kills or stops a
process leaves it to ``cluster.ensure_running()``, which the ``cluster`` fixture calls
before every test. Settings are production's (``TASKMANAGER_ENV=production``), so the
production profile is shown to accept a real multi-process deployment.

To add a scenario that needs more of the deployment, extend ``scale_out_settings`` (e.g.
``TASKMANAGER_STORAGE_URL`` and the ``AWS_*`` variables of a local S3-compatible server) or
start long-running commands with ``cluster.start_process("worker")`` in the fixture.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    _create_pg_database,
    _drop_pg_database,
    require_service,
)
from tests.faults.services import PrivateRedis
from tests.scale.cluster import Cluster, running

SIZE = 3
SECRET = "scale-out-secret-key-0123456789abcdefghijklmnop"
METRICS_TOKEN = "scale-out-metrics-token-0123456789abcdef"
# Registration, login and refresh per client address, shared by every process.
AUTH_RATE = 6


def _in_thread(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on a loop of its own (the session's loop belongs to pytest-asyncio)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def scale_out_database() -> Iterator[str]:
    """A new, empty PostgreSQL database; its URL. Migrated by the cluster fixture."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    name = f"taskmanager_scale_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    _in_thread(_create_pg_database(name))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _in_thread(_drop_pg_database(name))


@pytest.fixture(scope="module")
def scale_out_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``redis-server`` of this module's own (no other test's counters); its URL."""
    with PrivateRedis(tmp_path_factory.mktemp("scale-redis")).running() as server:
        yield server.url


@pytest.fixture(scope="module")
def scale_out_settings(
    tmp_path_factory: pytest.TempPathFactory, scale_out_database: str, scale_out_redis: str
) -> dict[str, str]:
    """The settings every process of the cluster gets: one database, Redis and data dir."""
    return {
        "TASKMANAGER_ENV": "production",
        "TASKMANAGER_SECRET_KEY": SECRET,
        "TASKMANAGER_METRICS_TOKEN": METRICS_TOKEN,
        "TASKMANAGER_ALLOWED_ORIGINS": "[]",
        "TASKMANAGER_DATABASE_URL": scale_out_database,
        "TASKMANAGER_REDIS_URL": scale_out_redis,
        "TASKMANAGER_DATA_DIR": str(tmp_path_factory.mktemp("scale-data")),
        "TASKMANAGER_RATE_LIMIT_DEFAULT": "100000/minute",
        "TASKMANAGER_RATE_LIMIT_AUTH": f"{AUTH_RATE}/minute",
        # A short drain keeps the rolling restart quick; the balancer stops sending within
        # its poll interval of /ready turning 503, long before the listener closes.
        "TASKMANAGER_DRAIN_SECONDS": "1",
        "TASKMANAGER_SHUTDOWN_TIMEOUT_SECONDS": "10",
        # A loaded two-core machine: bounded waits generous enough not to shed test load.
        "TASKMANAGER_DB_POOL_TIMEOUT_SECONDS": "10",
        "TASKMANAGER_DB_STATEMENT_TIMEOUT_SECONDS": "10",
        "TASKMANAGER_REDIS_TIMEOUT_SECONDS": "2",
        "TASKMANAGER_LOG_LEVEL": "WARNING",
    }


@pytest.fixture(scope="module")
def scale_out_cluster(
    tmp_path_factory: pytest.TempPathFactory, scale_out_settings: dict[str, str]
) -> Iterator[Cluster]:
    cwd: Path = tmp_path_factory.mktemp("scale-cwd")
    cluster = Cluster(cwd, scale_out_settings, SIZE)
    cluster.run("migrate")  # once, before any process serves (the compose "migrate" service)
    # The separate worker of the compose file (event dispatch, webhook delivery), beside
    # the servers' own background loops: any number of them may run.
    cluster.start_process("worker")
    with running(cluster):
        yield cluster


@pytest.fixture
def cluster(scale_out_cluster: Cluster) -> Cluster:
    """The module's cluster with every process running and ready."""
    scale_out_cluster.ensure_running()
    return scale_out_cluster
