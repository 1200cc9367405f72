"""The ceiling: a minimal table and bare claim-and-complete loops, no framework.

Each loop owns one connection and repeats: claim up to `batch_size` rows with one
`FOR UPDATE SKIP LOCKED` CTE that marks them running, run the no-op for each (inline, no
asyncio task per job), then mark the whole batch done with one UPDATE. There are
`concurrency // batch_size` loops, so at most `concurrency` tasks are claimed at once, as
in the engines. Idle loops wait on a LISTEN wake-up fired by a statement-level trigger
(with a 1 s poll fallback), so pickup latency is measured on the same terms.
"""

from __future__ import annotations

import asyncio
import json
from typing import ClassVar

import asyncpg

from .base import Adapter, cancel_task

SCHEMA = """
CREATE TABLE bare_tasks (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    params jsonb NOT NULL,
    state text NOT NULL DEFAULT 'queued',
    priority int NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX bare_tasks_queued ON bare_tasks (priority DESC, id) WHERE state = 'queued';
CREATE FUNCTION bare_tasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('bare_tasks', ''); RETURN NULL; END $$;
CREATE TRIGGER bare_tasks_inserted AFTER INSERT ON bare_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION bare_tasks_notify();
"""

INSERT_ONE = "INSERT INTO bare_tasks (name, params) VALUES ('noop', $1::jsonb)"
INSERT_MANY = "INSERT INTO bare_tasks (name, params) SELECT 'noop', p FROM unnest($1::jsonb[]) AS p"
CLAIM = """
WITH c AS (
    SELECT id FROM bare_tasks WHERE state = 'queued'
    ORDER BY priority DESC, id
    FOR UPDATE SKIP LOCKED LIMIT $1
)
UPDATE bare_tasks t SET state = 'running', started_at = now()
FROM c WHERE t.id = c.id
RETURNING t.id, t.name, t.params
"""
COMPLETE = (
    "UPDATE bare_tasks SET state = 'done', finished_at = now() "
    "WHERE id = ANY($1::bigint[]) AND state = 'running'"
)


class BareSql(Adapter):
    """Bare SQL claim-and-complete loops on asyncpg."""

    name: ClassVar[str] = "bare-sql"
    counts: ClassVar[str] = "count(*) of bare_tasks rows with state 'done' (committed UPDATE)"

    def __init__(self) -> None:
        super().__init__()
        self.pool: asyncpg.Pool | None = None
        self.listener: asyncpg.Connection | None = None
        self.wake = asyncio.Event()
        self.loops: list[asyncio.Task[None]] = []
        self.seq = 0
        self.url = ""

    async def setup(self, url: str) -> None:
        self.url = url
        self.pool = await asyncpg.create_pool(url, min_size=2, max_size=4)
        await self.pool.execute(SCHEMA)

    def _params(self) -> str:
        self.seq += 1
        return json.dumps({"n": self.seq})

    async def enqueue_one(self) -> None:
        assert self.pool is not None
        await self.pool.execute(INSERT_ONE, self._params())

    async def enqueue_batch(self, n: int) -> None:
        assert self.pool is not None
        await self.pool.execute(INSERT_MANY, [self._params() for _ in range(n)])

    async def start_workers(self, concurrency: int, batch_size: int) -> None:
        self.listener = await self._connect()
        await self.listener.add_listener("bare_tasks", lambda *_: self.wake.set())
        loops = max(1, concurrency // batch_size)
        self.notes.append(f"{loops} claim loops x batch {batch_size}")
        for _ in range(loops):
            conn = await self._connect()
            self.loops.append(asyncio.create_task(self._loop(conn, batch_size)))

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url)

    async def _loop(self, conn: asyncpg.Connection, batch_size: int) -> None:
        try:
            while True:
                rows = await conn.fetch(CLAIM, batch_size)
                if not rows:
                    # Clear, then look again, then sleep: no wake-up is lost in between.
                    self.wake.clear()
                    rows = await conn.fetch(CLAIM, batch_size)
                if not rows:
                    try:
                        await asyncio.wait_for(self.wake.wait(), 1.0)
                    except TimeoutError:
                        pass
                    continue
                for row in rows:
                    self.started()
                    json.loads(row["params"])
                await conn.execute(COMPLETE, [row["id"] for row in rows])
        finally:
            await conn.close(timeout=2)

    async def completed_count(self) -> int:
        assert self.pool is not None
        return int(await self.pool.fetchval("SELECT count(*) FROM bare_tasks WHERE state = 'done'"))

    async def reset(self) -> None:
        assert self.pool is not None
        await self.pool.execute("TRUNCATE bare_tasks")

    async def stop(self) -> None:
        for task in self.loops:
            await cancel_task(task)
        if self.listener is not None:
            await self.listener.close(timeout=2)
        if self.pool is not None:
            await asyncio.wait_for(self.pool.close(), 5)
