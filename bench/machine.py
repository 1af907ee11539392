"""What the numbers were measured on: they mean nothing without it."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.servers import ROOT

PACKAGES = (
    "taskmanager",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "pwdlib",
    "argon2-cffi",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def describe(postgres_version: str | None, wrk_version: str, pinning: str) -> dict[str, object]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": postgres_version or "not used",
        "sqlite": sqlite3.sqlite_version,
        "wrk": wrk_version,
        "pinning": pinning,
        "commit": _git("rev-parse", "--short", "HEAD")
        + (" (uncommitted changes)" if _git("status", "--porcelain", "--", "src") else ""),
        "packages": versions,
    }


def summary(machine: dict[str, object]) -> str:
    """One line for the top of a report."""
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}, "
        f"PostgreSQL {machine['postgresql']}, SQLite {machine['sqlite']}, {machine['wrk']}; "
        f"{machine['pinning']}; commit {machine['commit']}, {machine['date']}"
    )
