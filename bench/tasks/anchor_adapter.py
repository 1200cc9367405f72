"""Anchor's task engine, imported from the template without rendering it.

The template package (`template/<<package>>`, relative imports only) is symlinked as
`anchorpkg` in a temporary directory, as tests/conftest.py does. Schema: the engine's
framework migrations (`anchor/tasks/sql`) applied with `Migrator(..., table=
"anchor_framework_migrations")`. Workers: one `Worker(pool, {"noop": TaskDefinition(...)},
concurrency=..., batch_size=...)` with its defaults otherwise (LISTEN on, 1 s poll fallback,
30 s lease, completions of executors that never query buffered and flushed in batches).
The producer uses `TaskStore.enqueue` and `TaskStore.enqueue_many` on its own small pool.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import inspect
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import asyncpg

from .base import Adapter, EngineNotReady

TEMPLATE_PACKAGE = Path(__file__).resolve().parents[2] / "template" / "<<package>>"
ALIAS = "anchorpkg"

#: What this adapter needs from the engine; printed when it is missing or broken.
NEEDED_API = (
    "anchor.tasks: TaskStore(pool) with async enqueue(name, params) and "
    "enqueue_many([TaskRequest(name, params)]); TaskDefinition(name, TaskOptions(), execute) "
    "with execute(ctx, tx, params); Worker(pool, {name: definition}, concurrency=, batch_size=) "
    "with async start() and stop(grace); MIGRATIONS_DIR and MIGRATIONS_TABLE; "
    "anchor.migrations.Migrator(dir, table=).up(conn); table anchor_tasks with "
    "state 'completed'"
)


def import_engine() -> tuple[ModuleType, ModuleType]:
    """`anchorpkg.anchor.tasks` and `anchorpkg.anchor.migrations`, via a symlink."""
    if ALIAS not in sys.modules:
        link_dir = Path(tempfile.mkdtemp(prefix="anchor-bench-pkg-"))
        (link_dir / ALIAS).symlink_to(TEMPLATE_PACKAGE, target_is_directory=True)
        atexit.register(shutil.rmtree, link_dir, True)  # removes the link, not the template
        sys.path.insert(0, str(link_dir))
        importlib.invalidate_caches()
    try:
        tasks = importlib.import_module(f"{ALIAS}.anchor.tasks")
        migrations = importlib.import_module(f"{ALIAS}.anchor.migrations")
    except Exception as exc:
        raise EngineNotReady(
            f"import failed ({type(exc).__name__}: {exc}); needs {NEEDED_API}"
        ) from exc
    missing = [
        name
        for name in (
            "TaskStore",
            "TaskRequest",
            "TaskDefinition",
            "TaskOptions",
            "Worker",
            "MIGRATIONS_DIR",
            "MIGRATIONS_TABLE",
        )
        if not hasattr(tasks, name)
    ]
    if not hasattr(migrations, "Migrator"):
        missing.append("migrations.Migrator")
    worker_params = inspect.signature(tasks.Worker).parameters if hasattr(tasks, "Worker") else {}
    missing += [f"Worker({p}=)" for p in ("concurrency", "batch_size") if p not in worker_params]
    if missing:
        raise EngineNotReady(f"missing {', '.join(missing)}; needs {NEEDED_API}")
    return tasks, migrations


class AnchorAdapter(Adapter):
    """Anchor `TaskStore` + `Worker` on asyncpg pools."""

    name: ClassVar[str] = "anchor"
    counts: ClassVar[str] = (
        "count(*) of anchor_tasks rows with state 'completed' (fenced UPDATE, committed; "
        "rows are kept)"
    )

    def __init__(self) -> None:
        super().__init__()
        self.tasks, self.migrations = import_engine()
        self.url = ""
        self.pool: asyncpg.Pool | None = None
        self.worker_pool: asyncpg.Pool | None = None
        self.store: Any = None
        self.worker: Any = None
        self.seq = 0

    async def setup(self, url: str) -> None:
        self.url = url
        self.pool = await asyncpg.create_pool(url, min_size=2, max_size=4)
        migrator = self.migrations.Migrator(
            self.tasks.MIGRATIONS_DIR, table=self.tasks.MIGRATIONS_TABLE
        )
        async with self.pool.acquire() as conn:
            await migrator.up(conn)
        self.store = self.tasks.TaskStore(self.pool)

    def _params(self) -> dict[str, int]:
        self.seq += 1
        return {"n": self.seq}

    async def enqueue_one(self) -> None:
        await self.store.enqueue("noop", self._params())

    async def enqueue_batch(self, n: int) -> None:
        request = self.tasks.TaskRequest
        await self.store.enqueue_many([request("noop", self._params()) for _ in range(n)])

    async def start_workers(self, concurrency: int, batch_size: int) -> None:
        # Room for `concurrency` executor transactions plus the worker's own connections,
        # as Worker's docstring asks; a no-op executor never takes one.
        self.worker_pool = await asyncpg.create_pool(self.url, min_size=2, max_size=concurrency + 5)

        async def noop(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
            self.started()

        definition = self.tasks.TaskDefinition("noop", self.tasks.TaskOptions(), noop)
        self.worker = self.tasks.Worker(
            self.worker_pool, {"noop": definition}, concurrency=concurrency, batch_size=batch_size
        )
        self.notes.append(
            f"1 Worker, concurrency={concurrency}, batch_size={batch_size}, "
            f"poll_interval {getattr(self.worker, 'poll_interval', '?')} s, "
            f"LISTEN {getattr(self.worker, 'listen', '?')}"
        )
        await self.worker.start()

    async def completed_count(self) -> int:
        assert self.pool is not None
        return int(
            await self.pool.fetchval("SELECT count(*) FROM anchor_tasks WHERE state = 'completed'")
        )

    async def reset(self) -> None:
        assert self.pool is not None
        await self.pool.execute("TRUNCATE anchor_tasks CASCADE")

    async def stop(self) -> None:
        if self.worker is not None:
            await asyncio.wait_for(self.worker.stop(5), 15)
        for pool in (self.worker_pool, self.pool):
            if pool is not None:
                await asyncio.wait_for(pool.close(), 5)
