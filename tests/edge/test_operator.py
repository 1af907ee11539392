"""Operators are users too: migrate says what it did, logs carry no terminal colour codes
into files, and the docs pages make no request to anyone but this service."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from taskmanager.kit.config import load_settings
from taskmanager.kit.logging import configure_logging

TASKMANAGER = str(Path(sys.executable).parent / "taskmanager")


def _migrate(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKMANAGER_")},
        "TASKMANAGER_DATA_DIR": str(tmp_path / "data"),
    }
    return subprocess.run(
        [TASKMANAGER, "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_migrate_says_what_it_applied_then_that_it_was_current(tmp_path: Path) -> None:
    first = _migrate(tmp_path)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("applied 0001: Initial schema")
    assert any(line.startswith("applied 0004_inputs: ") for line in lines)
    assert lines[-1].startswith("database is now at revision ")
    second = _migrate(tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("database was already current (")
    assert "applied" not in second.stdout


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_no_colour_codes_when_the_stream_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, log_format: str
) -> None:
    stream = io.StringIO()  # a file or a pipe: isatty() is False
    monkeypatch.setattr(sys, "stdout", stream)
    configure_logging(load_settings(data_dir=tmp_path, log_format=log_format, log_level="INFO"))
    try:
        logging.getLogger("taskmanager.test").warning("something happened")
        import structlog

        structlog.get_logger("taskmanager.test").warning("structured", count=3)
    finally:
        configure_logging(load_settings(data_dir=tmp_path, log_level="WARNING"))
    output = stream.getvalue()
    assert "something happened" in output
    assert "structured" in output
    assert "\x1b[" not in output


async def test_redoc_makes_no_outside_request(client: httpx.AsyncClient) -> None:
    page = await client.get("/redoc")
    assert page.status_code == 200
    scripts = [
        line.split('src="', 1)[1].split('"', 1)[0]
        for line in page.text.splitlines()
        if 'src="' in line
    ]
    assert scripts
    for src in scripts:
        assert src.startswith("/"), src
        bundle = await client.get(src)
        assert bundle.status_code == 200
        assert b"https://cdn." not in bundle.content, src
        assert b"cdn.redoc.ly" not in bundle.content, src
