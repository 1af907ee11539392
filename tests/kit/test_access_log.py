"""The access log's fast path writes exactly the line structlog's logger would write."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
import structlog

from taskmanager.kit.config import Settings
from taskmanager.kit.logging import AccessLog, configure_logging, log_formatter

FIELDS: dict[str, Any] = {
    "method": "GET",
    "path": "/api/v1/tasks/7",
    "query": "token=[REDACTED]",
    "route": "/api/v1/tasks/{task_id}",
    "status": 200,
    "duration_ms": 1.25,
    "user_id": 3,
    "caller": None,
    "client": "127.0.0.1",
    # Not an access field: shows that redaction runs on the fast path too.
    "password": "hunter2",
}


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = log_formatter()
    assert formatter is not None
    return [formatter.format(record) for record in caplog.records]


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_fast_line_equals_the_structlog_line(
    caplog: pytest.LogCaptureFixture, log_format: str
) -> None:
    configure_logging(Settings(log_level="INFO", log_format=log_format))
    caplog.set_level(logging.INFO)
    tokens = structlog.contextvars.bind_contextvars(request_id="req-fast")
    try:
        structlog.get_logger("taskmanager.access").info("request", **FIELDS)
        access = AccessLog("taskmanager.access", "request")
        assert access.enabled()
        access.emit(dict(FIELDS))
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    slow, fast = _lines(caplog)
    if log_format == "json":
        slow_line, fast_line = orjson.loads(slow), orjson.loads(fast)
        assert slow_line.pop("timestamp").endswith("Z")
        assert fast_line.pop("timestamp").endswith("Z")
        assert list(fast_line.items()) == list(slow_line.items())  # same fields, same order
        assert fast_line["password"] == "[REDACTED]"
        assert fast_line["request_id"] == "req-fast"
    else:
        # Console lines start with the timestamp; the rest is the same text.
        assert fast.split(" ", 1)[1] == slow.split(" ", 1)[1]
        assert "hunter2" not in fast


def test_no_line_below_the_configured_level(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging(Settings(log_level="WARNING"))
    caplog.set_level(logging.DEBUG)  # the capture would take it: the app's level decides
    assert not AccessLog("taskmanager.access", "request").enabled()
    configure_logging(Settings(log_level="INFO"))
    assert AccessLog("taskmanager.access", "request").enabled()
