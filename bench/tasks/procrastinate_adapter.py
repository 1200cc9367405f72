"""procrastinate 3.10 with its psycopg 3 connector.

Schema from `app.schema_manager.apply_schema_async()`. Workers: one
`app.run_worker_async(concurrency=...)` (LISTEN/NOTIFY on, 5 s polling fallback, jobs kept
after completion: `delete_jobs` never, the default). procrastinate has no claim batch: each
sub-worker fetches one job per round trip (`procrastinate_fetch_job_v2`) and finishes it
with one call, so `batch_size` does not apply. Enqueue: `defer_async` and
`batch_defer_async` (one `procrastinate_defer_jobs_v1` call with an array).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import procrastinate

from .base import Adapter, cancel_task


class ProcrastinateAdapter(Adapter):
    """procrastinate App + PsycopgConnector; one worker with `concurrency` sub-workers."""

    name: ClassVar[str] = "procrastinate"
    counts: ClassVar[str] = (
        "count(*) of procrastinate_jobs rows with status 'succeeded' (set by "
        "procrastinate_finish_job, committed)"
    )

    def __init__(self) -> None:
        super().__init__()
        self.app: procrastinate.App | None = None
        self.task: Any = None
        self.worker_task: asyncio.Task[None] | None = None
        self.seq = 0

    async def setup(self, url: str) -> None:
        # Pool big enough for every sub-worker, the producer and the count query.
        connector = procrastinate.PsycopgConnector(conninfo=url, min_size=4, max_size=48)
        app = procrastinate.App(connector=connector)

        @app.task(name="noop")
        async def noop(n: int) -> None:
            self.started()

        self.app, self.task = app, noop
        await app.open_async()
        await app.schema_manager.apply_schema_async()

    def _args(self) -> dict[str, int]:
        self.seq += 1
        return {"n": self.seq}

    async def enqueue_one(self) -> None:
        await self.task.defer_async(**self._args())

    async def enqueue_batch(self, n: int) -> None:
        await self.task.batch_defer_async(*[self._args() for _ in range(n)])

    async def start_workers(self, concurrency: int, batch_size: int) -> None:
        assert self.app is not None
        self.notes.append(
            f"1 worker, concurrency={concurrency}, psycopg pool; claims 1 job per fetch "
            "(no batch option)"
        )
        self.worker_task = asyncio.create_task(
            self.app.run_worker_async(
                concurrency=concurrency,
                wait=True,
                install_signal_handlers=False,
                listen_notify=True,
                shutdown_graceful_timeout=5,
            )
        )
        await asyncio.sleep(0.2)
        if self.worker_task.done():
            self.worker_task.result()

    async def completed_count(self) -> int:
        assert self.app is not None
        row = await self.app.connector.execute_query_one_async(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'succeeded'"
        )
        return int(row["n"])

    async def reset(self) -> None:
        assert self.app is not None
        await self.app.connector.execute_query_async("TRUNCATE procrastinate_jobs CASCADE")

    async def stop(self) -> None:
        await cancel_task(self.worker_task, timeout=10)
        if self.app is not None:
            await asyncio.wait_for(self.app.close_async(), 10)
