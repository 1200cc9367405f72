"""pgqueuer 1.6 on asyncpg, through its public API.

Schema from `Queries.install()`. Workers: one `QueueManager` on its own asyncpg connection
(pgqueuer's default `apg` driver, as in its own benchmark), `run(batch_size=...,
max_concurrent_tasks=concurrency)`; it claims batches with SKIP LOCKED in one CTE and writes
completions back in buffered batches (DELETE the job row + INSERT a `pgqueuer_log` row). The
producer uses a second connection and `Queries.enqueue` (lists for a batch: one UNNEST
statement).
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import ClassVar

import asyncpg
from pgqueuer import Job, Queries, QueueManager

from .base import Adapter, cancel_task


class PgQueuerAdapter(Adapter):
    """pgqueuer QueueManager + Queries on asyncpg connections."""

    name: ClassVar[str] = "pgqueuer"
    counts: ClassVar[str] = (
        "count(*) of pgqueuer_log rows with status 'successful' (written in the same "
        "statement that deletes the finished job, after the buffered flush commits)"
    )

    def __init__(self) -> None:
        super().__init__()
        self.url = ""
        self.producer: asyncpg.Connection | None = None
        self.worker_conn: asyncpg.Connection | None = None
        self.monitor: asyncpg.Connection | None = None
        self.queries: Queries | None = None
        self.qm: QueueManager | None = None
        self.run_task: asyncio.Task[None] | None = None
        self.seq = 0

    async def setup(self, url: str) -> None:
        self.url = url
        self.producer = await asyncpg.connect(url)
        self.monitor = await asyncpg.connect(url)  # counts and resets, off the producer's lock
        self.queries = Queries.from_asyncpg_connection(self.producer)
        await self.queries.install()

    def _payload(self) -> bytes:
        self.seq += 1
        return json.dumps({"n": self.seq}).encode()

    async def enqueue_one(self) -> None:
        assert self.queries is not None
        await self.queries.enqueue("noop", self._payload())

    async def enqueue_batch(self, n: int) -> None:
        assert self.queries is not None
        await self.queries.enqueue(["noop"] * n, [self._payload() for _ in range(n)], [0] * n)

    async def start_workers(self, concurrency: int, batch_size: int) -> None:
        self.worker_conn = await asyncpg.connect(self.url)
        qm = QueueManager(Queries.from_asyncpg_connection(self.worker_conn))

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            self.started()
            json.loads(job.payload or b"{}")

        self.qm = qm
        self.notes.append(
            f"1 QueueManager on 1 asyncpg connection, batch_size={batch_size}, "
            f"max_concurrent_tasks={concurrency}, dequeue_timeout 5 s"
        )
        self.run_task = asyncio.create_task(
            qm.run(
                batch_size=batch_size,
                max_concurrent_tasks=concurrency,
                dequeue_timeout=timedelta(seconds=5),
            )
        )
        await asyncio.sleep(0.2)  # let it verify the schema and LISTEN
        if self.run_task.done():
            self.run_task.result()  # raise its error here

    async def completed_count(self) -> int:
        assert self.monitor is not None
        return int(
            await self.monitor.fetchval(
                "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
            )
        )

    async def reset(self) -> None:
        assert self.monitor is not None
        await self.monitor.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")

    async def stop(self) -> None:
        if self.qm is not None:
            self.qm.shutdown.set()
        if self.run_task is not None:
            await asyncio.wait({self.run_task}, timeout=10)
            await cancel_task(self.run_task)
        for conn in (self.worker_conn, self.producer, self.monitor):
            if conn is not None:
                await conn.close(timeout=2)
