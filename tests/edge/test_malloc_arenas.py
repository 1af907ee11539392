"""A serving process keeps glibc's malloc arenas at two (issue 13: RSS < 120 MB per worker).

Threads that allocate at once get arenas of their own from glibc, up to eight per core, and
each keeps what it once held. ``taskmanager serve`` and ``taskmanager worker`` cap them
(``cli._limit_malloc_arenas``). Shown in a child process: eight threads allocate together,
then glibc's own ``malloc_stats()`` lists the arenas ("Arena N:" lines on stderr).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from taskmanager import cli

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's (this is not glibc)"
)

_PROBE = """
import ctypes, sys, threading
from taskmanager import cli
if sys.argv[1] == "limit":
    cli._limit_malloc_arenas()
together = threading.Barrier(8)
def allocate():
    together.wait()
    held = [bytearray(200_000) for _ in range(20)]  # past Python's allocator: malloc's
    together.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(__import__("os").environ.get("MALLOC_ARENA_MAX"))
sys.stdout.flush()
ctypes.CDLL(None).malloc_stats()
"""


def _arenas(mode: str, tmp_path: Path, **env: str) -> tuple[int, str]:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    arenas = sum(1 for line in probe.stderr.splitlines() if line.startswith("Arena "))
    return arenas, probe.stdout.strip()


def test_threads_allocating_together_share_two_arenas(tmp_path: Path) -> None:
    unlimited, _ = _arenas("none", tmp_path)
    limited, variable = _arenas("limit", tmp_path)
    assert unlimited > cli.MALLOC_ARENAS  # the probe does make arenas
    assert limited <= cli.MALLOC_ARENAS
    assert variable == str(cli.MALLOC_ARENAS)  # inherited by --workers children


def test_an_operators_setting_is_kept(tmp_path: Path) -> None:
    arenas, variable = _arenas("limit", tmp_path, MALLOC_ARENA_MAX="4")
    assert variable == "4"
    assert cli.MALLOC_ARENAS < arenas <= 4
