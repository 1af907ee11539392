"""The events tests run against an app with its background loops (the dispatcher): the
shared app of the other tests has none, so nothing publishes behind their back. Module
scope: the loops stop when the module ends, before other tests run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.conftest import TestDatabase, make_settings


@pytest.fixture(scope="module")
async def base_app(database: TestDatabase, run_dir: Path) -> AsyncIterator[FastAPI]:
    from taskmanager.main import create_app

    app = create_app(make_settings(database, run_dir / f"data-events-{database.backend}"))
    async with LifespanManager(app):
        yield app
