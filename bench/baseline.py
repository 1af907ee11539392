"""The yardstick: a bare FastAPI route doing one asyncpg ``fetchrow``.

Served by the same uvicorn as the real app, so the ratio measures our stack, not the server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI

DSN = os.environ["BENCH_PG_DSN"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(DSN, min_size=4, max_size=10)
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/tasks/{task_id}")
async def get_task(task_id: int) -> dict[str, Any]:
    row = await app.state.pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
    return dict(row) if row else {}
