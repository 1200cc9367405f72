"""The baseline: the counter read written by hand in idiomatic FastAPI + asyncpg, no Anchor.

Same query, same response model, same pool size and the same uvicorn settings as the generated app.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from pydantic import BaseModel


class Counter(BaseModel):
    count: int


pool: asyncpg.Pool | None = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=2, max_size=10)
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.get("/api/v1/counter", response_model=Counter)
async def get_counter() -> Counter:
    assert pool is not None
    value = await pool.fetchval("SELECT value FROM counter LIMIT 1")
    return Counter(count=value or 0)
