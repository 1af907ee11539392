"""Datasets for the bench, built through the stable interfaces only and cached between runs.

A dataset is built once per schema: an empty database is migrated by running
``taskmanager migrate``, a ``taskmanager serve`` on it registers the bench accounts and their
projects over HTTP (so whatever the app does on sign-up happens), then the tasks are
bulk-loaded with plain SQL — ``COPY`` on PostgreSQL, ``executemany`` in large transactions on
SQLite — and the result is kept as a cache (bench/databases.py). Each run works on a copy.
The cache key is a fingerprint of the migrated schema, so a new migration rebuilds it and
nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench import servers
from bench.databases import Backend

# 2: the folded search columns of migration 0004 are filled.
SEED_VERSION = 2
PASSWORD = "Quartz-Lantern-47"  # passes the strength rules, names no account
CACHE_KEEP = 3  # cached copies kept per dataset (other branches may have other schemas)

# What the large-table filters match: status in_progress 25 %, each tag ~3.8 % (0-3 of 40
# per task), the search word 1 % (README.md, Performance).
STATUSES = (("pending", 40), ("in_progress", 25), ("completed", 25), ("cancelled", 10))
TAGS = [
    *("home", "work", "errands", "health", "finance", "travel", "family", "garden", "car"),
    *("school", "urgent", "later", "reading", "music", "sport", "cooking", "shopping"),
    *("bills", "phone", "email", "meeting", "review", "design", "backend", "frontend", "docs"),
    *("ops", "security", "release", "bug", "feature", "idea", "blocked", "waiting", "client"),
    *("vendor", "legal", "hiring", "budget", "research"),
]
SEARCH_WORD = "invoice"
VERBS = ["buy", "call", "fix", "write", "plan", "book", "check", "clean", "send", "review"]
NOUNS = ["groceries", "report", "dentist", "roof", "slides", "tickets", "notes", "kitchen"]


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    email: str
    password: str = PASSWORD


READER = Account("bench_reader", "reader@bench.example.com")
WRITER = Account("bench_writer", "writer@bench.example.com")


@dataclass(frozen=True, slots=True)
class Dataset:
    """Tasks the reader sees (over its Inbox and ``projects`` more) and the writer's tasks."""

    name: str
    reader_tasks: int
    writer_tasks: int
    projects: int = 3


DATASETS = {
    "small": Dataset("small", reader_tasks=2_000, writer_tasks=1_000),
    "10k": Dataset("10k", reader_tasks=10_000, writer_tasks=0),
    "1m": Dataset("1m", reader_tasks=1_000_000, writer_tasks=0),
}


@dataclass(frozen=True, slots=True)
class Fixture:
    """A run's database and the ids the scenarios need."""

    backend: str
    dataset: str
    app_database_url: str
    baseline_dsn: str
    reader_id: int
    writer_id: int | None
    writer_project: int | None
    reader_task: int
    writer_tasks: tuple[int, int] | None
    reader_rows: int
    cursor_seek: tuple[str, int]  # (created_at as the baseline takes it, id) of row 20
    handle: str


def search_fold(text: str) -> str:
    """The app's text fold for search (its ``models.tasks.search_fold``: NFKC case folding,
    the dot of ``İ`` dropped), restated because the bench imports nothing from the app."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return folded.replace("i\u0307", "i")


def task_rows(
    count: int, project_ids: Sequence[int], user_id: int, first: datetime, step: timedelta
) -> Iterator[tuple[Any, ...]]:
    """Deterministic task rows in ``TASK_COLUMNS`` order, oldest first, spread over projects."""
    rng = random.Random(f"{SEED_VERSION}-{user_id}-{count}")
    statuses = [name for name, weight in STATUSES for _ in range(weight)]
    for i in range(count):
        title = f"{rng.choice(VERBS)} {rng.choice(NOUNS)} {i}"
        description = None if rng.random() < 0.5 else f"remember to {rng.choice(VERBS)} it"
        if rng.random() < 0.01:
            if description is None or rng.random() < 0.5:
                title = f"{SEARCH_WORD} {title}"
            else:
                description = f"{description} with the {SEARCH_WORD}"
        status = rng.choice(statuses)
        created = first + step * i
        due = created + timedelta(days=rng.randint(-30, 200)) if rng.random() < 0.6 else None
        tags = sorted(rng.sample(TAGS, rng.randint(0, 3)))
        yield (
            project_ids[i % len(project_ids)],
            title,
            description,
            status,
            rng.randint(1, 5),
            due,
            json.dumps(tags),
            user_id if rng.random() < 0.2 else None,
            user_id,
            created,
            created,
            created + timedelta(hours=1) if status == "completed" else None,
            1,
            search_fold(title),
            None if description is None else search_fold(description),
        )


def migrate(database_url: str, workdir: Path) -> None:
    """Run ``taskmanager migrate`` as a subprocess: the schema is the app's to define."""
    env = servers.app_environment(database_url, workdir)
    executable = Path(sys.executable).with_name("taskmanager")
    done = subprocess.run(
        [str(executable), "migrate"], env=env, cwd=workdir, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"taskmanager migrate failed:\n{done.stdout}\n{done.stderr}")


# ---- the HTTP side -------------------------------------------------------------------------


def register(client: httpx.Client, account: Account) -> int:
    """Sign the account up over HTTP; return its user id."""
    answer = client.post(
        "/api/v1/users",
        json={"email": account.email, "username": account.username, "password": account.password},
    )
    if answer.status_code != 201:
        raise RuntimeError(f"registering {account.username}: {answer.status_code} {answer.text}")
    return int(answer.json()["id"])


def login(client: httpx.Client, account: Account) -> str:
    answer = client.post(
        "/api/v1/auth/token", data={"username": account.username, "password": account.password}
    )
    if answer.status_code != 200:
        raise RuntimeError(f"login of {account.username}: {answer.status_code} {answer.text}")
    return str(answer.json()["access_token"])


def create_projects(client: httpx.Client, account: Account, count: int) -> list[int]:
    headers = {"Authorization": f"Bearer {login(client, account)}"}
    ids = []
    for n in range(count):
        answer = client.post("/api/v1/projects", json={"name": f"Bench {n + 1}"}, headers=headers)
        if answer.status_code != 201:
            raise RuntimeError(f"creating a project: {answer.status_code} {answer.text}")
        ids.append(int(answer.json()["id"]))
    return ids


@dataclass(frozen=True, slots=True)
class Accounts:
    reader_id: int
    reader_projects: list[int]
    writer_id: int | None


def sign_up(database_url: str, workdir: Path, dataset: Dataset) -> Accounts:
    """Start the app on the migrated database and create the accounts and projects."""
    spec = servers.app_spec(servers.app_environment(database_url, workdir), workdir, cpus=())
    with servers.running(spec) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        reader_id = register(client, READER)
        projects = create_projects(client, READER, dataset.projects)
        writer_id = register(client, WRITER) if dataset.writer_tasks else None
    return Accounts(reader_id, projects, writer_id)


# ---- datasets ------------------------------------------------------------------------------


def _fill(backend: Backend, handle: str, workdir: Path, dataset: Dataset) -> None:
    """Accounts over HTTP, then the tasks in bulk, oldest first over the last two years."""
    accounts = sign_up(backend.url(handle), workdir, dataset)
    total = dataset.reader_tasks + dataset.writer_tasks
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(days=730)
    step = timedelta(days=720) / max(total, 1)
    reader_projects = [inbox(backend, handle, accounts.reader_id), *accounts.reader_projects]
    backend.load_tasks(
        handle, task_rows(dataset.reader_tasks, reader_projects, accounts.reader_id, first, step)
    )
    if accounts.writer_id is not None:
        writer_inbox = inbox(backend, handle, accounts.writer_id)
        writer_first = first + step * dataset.reader_tasks
        backend.load_tasks(
            handle,
            task_rows(dataset.writer_tasks, [writer_inbox], accounts.writer_id, writer_first, step),
        )
    backend.finish(handle)


def inbox(backend: Backend, handle: str, user_id: int) -> int:
    """The Inbox the app made at sign-up (API.md §4)."""
    rows = backend.query(
        handle,
        "SELECT p.id FROM projects p JOIN project_members m ON m.project_id = p.id "
        f"WHERE m.user_id = {backend.placeholder(1)} AND p.is_inbox",
        user_id,
    )
    if len(rows) != 1:
        raise RuntimeError(f"user {user_id} has {len(rows)} Inbox projects, expected one")
    return int(rows[0][0])


def schema_key(backend: Backend, workdir: Path) -> str:
    """Fingerprint of the schema ``taskmanager migrate`` builds today."""
    probe = backend.scratch("probe")
    backend.create_empty(probe)
    try:
        migrate(backend.url(probe), workdir)
        return hashlib.sha256(backend.fingerprint(probe).encode()).hexdigest()[:12]
    finally:
        backend.drop(probe)


def prepare(
    backend: Backend,
    dataset: Dataset,
    schema: str,
    workdir: Path,
    log: Callable[[str], None],
    *,
    rebuild: bool = False,
) -> Fixture:
    """A private copy of the dataset for this run, building the cache first if needed."""
    key = hashlib.sha256(f"{schema}-{SEED_VERSION}-{dataset}".encode()).hexdigest()[:12]
    cache = backend.cache_handle(dataset.name, key)
    existing = backend.cached(dataset.name)
    if rebuild and cache in existing:
        backend.drop(cache)
        existing.remove(cache)
    if cache not in existing:
        rows = dataset.reader_tasks + dataset.writer_tasks
        log(f"{backend.name}: building the {dataset.name} dataset ({rows:,} tasks), cached after")
        started = time.monotonic()
        build = backend.build_handle(dataset.name)
        backend.create_empty(build)
        try:
            migrate(backend.url(build), workdir)
            _fill(backend, build, workdir, dataset)
            backend.promote(build, cache)
        except BaseException as exc:
            backend.drop(build)
            # Another bench process may have built the same cache first: then use theirs.
            if not isinstance(exc, Exception) or cache not in backend.cached(dataset.name):
                raise
        log(f"{backend.name}: {dataset.name} dataset built in {time.monotonic() - started:.0f} s")
        for stale in backend.cached(dataset.name)[:-CACHE_KEEP]:
            if stale != cache:
                backend.drop(stale)
    handle = backend.scratch(dataset.name)
    backend.copy(cache, handle)
    return _describe(backend, handle, dataset)


def _describe(backend: Backend, handle: str, dataset: Dataset) -> Fixture:
    """Look up the ids a run needs in its copy (ids depend on how the app signed users up)."""
    p = backend.placeholder

    def user_id(account: Account) -> int | None:
        rows = backend.query(
            handle, f"SELECT id FROM users WHERE username = {p(1)}", account.username
        )
        return int(rows[0][0]) if rows else None

    reader_id = user_id(READER)
    assert reader_id is not None
    visible = f"project_id IN (SELECT project_id FROM project_members WHERE user_id = {p(1)})"
    ((first_task, reader_rows),) = backend.query(
        handle, f"SELECT min(id), count(*) FROM tasks WHERE {visible}", reader_id
    )
    ((seek_time, seek_id),) = backend.query(
        handle,
        f"SELECT created_at, id FROM tasks WHERE {visible} "
        "ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET 19",
        reader_id,
    )
    writer_id = user_id(WRITER) if dataset.writer_tasks else None
    writer_project = writer_tasks = None
    if writer_id is not None:
        writer_project = inbox(backend, handle, writer_id)
        ((low, high, count),) = backend.query(
            handle,
            f"SELECT min(id), max(id), count(*) FROM tasks WHERE project_id = {p(1)}",
            writer_project,
        )
        if high - low + 1 != count:
            raise RuntimeError("the writer's seeded tasks do not have contiguous ids")
        writer_tasks = (int(low), int(high))
    return Fixture(
        backend=backend.name,
        dataset=dataset.name,
        app_database_url=backend.url(handle),
        baseline_dsn=backend.dsn(handle),
        reader_id=reader_id,
        writer_id=writer_id,
        writer_project=int(writer_project) if writer_project is not None else None,
        reader_task=int(first_task),
        writer_tasks=writer_tasks,
        reader_rows=int(reader_rows),
        cursor_seek=(backend.seek_value(seek_time), int(seek_id)),
        handle=handle,
    )


def drop(backend: Backend, fixture: Fixture) -> None:
    backend.drop(fixture.handle)
