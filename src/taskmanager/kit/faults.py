"""Test-only fault injection: a request can ask the server to die at a chosen point.

Enabled only by ``TASKMANAGER_FAULT_INJECTION=true``, which production settings refuse. A
request carrying ``X-Taskmanager-Fault: kill-after-commit`` makes the process ``SIGKILL``
itself right after its transaction commits and before any byte of the answer is sent —
exactly the moment a crash must not let a keyed retry run twice (API.md §6);
``kill-before-commit`` does so just before the commit. A signal, not an exception: nothing
in the process gets to clean up, as with ``kill -9``.
"""

from __future__ import annotations

import os
import signal

from starlette.types import Scope

FAULT_HEADER = b"x-taskmanager-fault"
KILL_BEFORE_COMMIT = b"kill-before-commit"
KILL_AFTER_COMMIT = b"kill-after-commit"


def requested(scope: Scope, point: bytes) -> bool:
    settings = scope["app"].state.settings
    if not settings.fault_injection:
        return False
    return any(name == FAULT_HEADER and value == point for name, value in scope["headers"])


def die_if_requested(scope: Scope, point: bytes) -> None:
    if requested(scope, point):
        os.kill(os.getpid(), signal.SIGKILL)


def armed(scope: Scope) -> bool:
    """Whether this request asks to die at some point (the writes on the driver, which
    have no such points, then leave it to the ``Session`` path that has them)."""
    if not scope["app"].state.settings.fault_injection:
        return False
    return any(name == FAULT_HEADER for name, _ in scope["headers"])
