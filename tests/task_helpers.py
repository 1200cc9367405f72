"""Shared pieces of the task-engine tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any

import asyncpg

Executor = Callable[[Any, Any, Mapping[str, Any]], Awaitable[Any]]


async def setup_pool(url: str, tasks: ModuleType, max_size: int = 10) -> asyncpg.Pool:
    """A pool on a migrated database, with an `executions` table executors may write to."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size)
    async with pool.acquire() as conn:
        await tasks.migrate(conn)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS executions (task_id bigint, note text,"
            " at timestamptz DEFAULT clock_timestamp())"
        )
    return pool
