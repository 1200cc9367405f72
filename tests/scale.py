"""Scale harness: two API processes and N worker processes of a generated project on one
PostgreSQL; clients enqueue tasks through the HTTP API, and the runs table shows what ran.

The project is the chaos project (`tests/chaos.py`) plus an operation `POST /api/v1/runs`
(`{first, count}`: enqueue recordRun tasks n = first .. first + count - 1 in one transaction).
Its recordRun executor sleeps RECORD_RUN_SLEEP seconds (an I/O call to another service: with
it, throughput is bound by concurrency, not by the machine's CPU), then records `(n, worker
pid, started_at, finished_at)` in `runs` *outside* the task's transaction, committed at once:
a second run of a task is recorded even if its completion were fenced off, so a duplicate or
an overlapping run could not hide.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import yaml

from .chaos import Workers, append_to_class, build_chaos_project

SCALE_EXECUTOR = """

    async def execute_record_run(
        self, ctx: TaskContext, tx: Transaction, params: RecordRunParameters
    ) -> None:
        started = datetime.datetime.now(datetime.timezone.utc)
        await asyncio.sleep(float(os.environ.get("RECORD_RUN_SLEEP", "0.02")))  # another service
        # Not in `tx`: committed now, so a second run of this task could not hide.
        await self.queries.record_timed_run(n=params.n, worker=os.getpid(), started_at=started)
"""

ENQUEUE_HANDLER = """

    async def enqueue_runs(self, *, body: RunBatch) -> RunsEnqueued:
        from .gen.tasks.models import RecordRunParameters

        async with self.db.transaction() as tx:
            for n in range(body.first, body.first + body.count):
                await self.tasks.run_record_run(RecordRunParameters(n=n), tx=tx)
        return RunsEnqueued(enqueued=body.count)
"""

ENQUEUE_OPERATION: dict[str, Any] = {
    "post": {
        "operationId": "enqueueRuns",
        "summary": "Enqueue recordRun tasks n = first .. first + count - 1 (scale tests)",
        "security": [],  # public, whatever the spec's default security says
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunBatch"}}},
        },
        "responses": {
            "202": {
                "description": "Enqueued, in one transaction",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/RunsEnqueued"}}
                },
            }
        },
    }
}

ENQUEUE_SCHEMAS: dict[str, Any] = {
    "RunBatch": {
        "type": "object",
        "required": ["first", "count"],
        "properties": {
            "first": {"type": "integer", "minimum": 0},
            "count": {"type": "integer", "minimum": 1, "maximum": 10000},
        },
    },
    "RunsEnqueued": {
        "type": "object",
        "required": ["enqueued"],
        "properties": {"enqueued": {"type": "integer"}},
    },
}


def add_enqueue_api(project: Path) -> None:
    """Add `POST /api/v1/runs` (operationId enqueueRuns) to the spec and its handler method."""
    spec_path = project / "api" / "v1.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["paths"] = {**(spec.get("paths") or {}), "/api/v1/runs": ENQUEUE_OPERATION}
    components = spec["components"] = spec.get("components") or {}
    components["schemas"] = {**(components.get("schemas") or {}), **ENQUEUE_SCHEMAS}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))

    handlers = project / "chaos_app" / "handlers.py"
    source = handlers.read_text()
    future = "from __future__ import annotations\n"
    models = "from .gen.api.models import RunBatch, RunsEnqueued\n"
    if future in source:
        source = source.replace(future, future + "\n" + models, 1)
    else:
        source = models + source
    handlers.write_text(append_to_class(source, "Handlers", ENQUEUE_HANDLER))


def build_scale_project(template: Path, dst: Path, **data: Any) -> Path:
    """The chaos project with the scale executor and `POST /api/v1/runs`."""
    return build_chaos_project(
        template, dst, executor=SCALE_EXECUTOR, customize=add_enqueue_api, **data
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ScaleRun:
    """One run: `tasks` enqueued through the APIs while `workers` worker processes ran."""

    workers: int
    io_sleep: float
    concurrency: int
    tasks: int
    seconds: float = 0.0  # first run's start to last run's finish (runs table)
    per_s: float = 0.0  # tasks / seconds
    enqueue_s: float = 0.0  # wall time of the clients' POSTs
    enqueue_per_s: float = 0.0
    p50_ms: float = 0.0  # task created_at (enqueue) to finished_at (completion)
    p99_ms: float = 0.0
    runs: int = 0  # rows in `runs`
    lost: int = 0  # n in [0, tasks) that never ran
    duplicates: int = 0  # runs beyond the first of each n
    overlaps: int = 0  # pairs of runs of the same n that overlap in time
    out_of_range: int = 0
    task_rows: int = 0  # recordRun rows in anchor_tasks
    completed: int = 0  # of those, completed
    retried: int = 0  # of those, with more than one attempt
    per_worker: list[int] = field(default_factory=list)  # runs per worker process, descending
    per_api: list[int] = field(default_factory=list)  # batches accepted per API process
    errors: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Everything that breaks "each task ran exactly once, none twice at a time"."""
        found = list(self.errors)
        for name in ("lost", "duplicates", "overlaps", "out_of_range", "retried"):
            if getattr(self, name):
                found.append(f"{name}: {getattr(self, name)}")
        if self.task_rows != self.tasks or self.completed != self.tasks:
            found.append(
                f"tasks table: {self.completed}/{self.task_rows} completed of {self.tasks}"
            )
        return found


class ScaleCluster:
    """Two (or more) API processes of a scale project, and worker processes started per run."""

    def __init__(self, project: Path, url: str, *, apis: int = 2, lease: float = 5.0) -> None:
        self.project = project
        self.url = url
        env = {"WORKER_LEASE": f"{lease:g}", "WORKER_ENABLED": "false", "HOST": "127.0.0.1"}
        # With DATABASE_URL set the app is not in development: it needs a strong AUTH_SECRET,
        # the same in every process (the tests' conftest sets one).
        env["AUTH_SECRET"] = os.environ.get("AUTH_SECRET") or secrets.token_urlsafe(48)
        self.servers = Workers(project, url, **env)
        self.workers = Workers(project, url, **{**env, "LOG_LEVEL": "info"})
        self.servers.run("-m", "chaos_app", "migrate")
        self.ports = [free_port() for _ in range(apis)]
        try:
            for port in self.ports:
                self.servers.start("serve", PORT=str(port))
            for port, process in zip(self.ports, self.servers.processes, strict=True):
                self.wait_ready(port, process)
        except BaseException:
            self.close()
            raise

    def wait_ready(self, port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"API on port {port} exited:\n{self.servers.log_tail(process)}")
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"API on port {port} not ready:\n{self.servers.log_tail(process)}")

    def start_workers(self, count: int, timeout: float = 60, **env: str) -> None:
        """Start `count` workers and wait until each has logged that its task worker started."""
        started = [self.workers.start("worker", **env) for _ in range(count)]
        deadline = time.monotonic() + timeout
        for process in started:
            log = self.workers.log_of[process.pid]
            while "task worker" not in log.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = self.workers.log_tail(process)
                    raise RuntimeError(f"worker {process.pid} did not start:\n{tail}")
                time.sleep(0.05)

    def run(
        self,
        *,
        workers: int,
        tasks: int,
        io_sleep: float = 0.02,
        concurrency: int = 8,
        batch: int = 100,
        clients: int = 4,
        timeout: float = 120,
    ) -> ScaleRun:
        """Start `workers` workers on an empty queue, enqueue `tasks` tasks through the APIs
        (batches of `batch`, `clients` concurrent clients, alternating APIs), wait until all
        completed, stop the workers and check the runs."""
        result = ScaleRun(workers=workers, io_sleep=io_sleep, concurrency=concurrency, tasks=tasks)
        asyncio.run(reset(self.url))
        try:
            self.start_workers(
                workers, WORKER_CONCURRENCY=str(concurrency), RECORD_RUN_SLEEP=f"{io_sleep:g}"
            )
            started = time.perf_counter()
            result.per_api = asyncio.run(enqueue(self.ports, tasks, batch, clients))
            result.enqueue_s = time.perf_counter() - started
            result.enqueue_per_s = tasks / result.enqueue_s
            if not wait_completed(self.url, tasks, timeout):
                result.errors.append(f"not all {tasks} tasks completed within {timeout:g} s")
            dead = [p for p in self.workers.processes if p.poll() is not None]
            result.errors += [f"a worker died:\n{self.workers.log_tail(p)}" for p in dead]
        finally:
            result.errors += [f"unclean stop:\n{tail}" for tail in self.workers.stop_all()]
        asyncio.run(analyse(self.url, result))
        return result

    def close(self) -> list[str]:
        return self.servers.stop_all() + self.workers.stop_all()


async def reset(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE runs, anchor_tasks, anchor_task_attempts")
    finally:
        await conn.close()


async def enqueue(ports: list[int], total: int, batch: int, clients: int) -> list[int]:
    """POST batches of n to the APIs in turn, from `clients` concurrent clients; batches per API."""
    batches = [(first, min(batch, total - first)) for first in range(0, total, batch)]
    per_api = [0] * len(ports)
    queue = iter(enumerate(batches))
    limits = httpx2.Limits(max_connections=clients * len(ports))

    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:

        async def post_batches() -> None:
            for i, (first, count) in queue:
                api = i % len(ports)
                response = await client.post(
                    f"http://127.0.0.1:{ports[api]}/api/v1/runs",
                    json={"first": first, "count": count},
                )
                if response.status_code not in (200, 202):
                    raise RuntimeError(f"POST /api/v1/runs: {response.status_code} {response.text}")
                if response.json() != {"enqueued": count}:
                    raise RuntimeError(f"POST /api/v1/runs answered {response.text}")
                per_api[api] += 1

        await asyncio.gather(*(post_batches() for _ in range(clients)))
    return per_api


def wait_completed(url: str, total: int, timeout: float) -> bool:
    async def poll() -> bool:
        conn = await asyncpg.connect(url)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                done = await conn.fetchval(
                    "SELECT count(*) FROM anchor_tasks"
                    " WHERE name = 'recordRun' AND state = 'completed'"
                )
                if done >= total:
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            await conn.close()

    return asyncio.run(poll())


async def analyse(url: str, result: ScaleRun) -> None:
    conn = await asyncpg.connect(url)
    try:
        total = result.tasks
        row = await conn.fetchrow(
            """
            SELECT count(*) AS runs,
                   count(DISTINCT n) AS distinct_n,
                   count(DISTINCT n) FILTER (WHERE n >= 0 AND n < $1) AS in_range,
                   count(*) FILTER (WHERE n < 0 OR n >= $1) AS out_of_range,
                   extract(epoch FROM max(finished_at) - min(started_at))::float8 AS seconds
            FROM runs
            """,
            total,
        )
        result.runs = row["runs"]
        result.lost = total - row["in_range"]
        result.duplicates = row["runs"] - row["distinct_n"]
        result.out_of_range = row["out_of_range"]
        result.seconds = row["seconds"] or 0.0
        result.per_s = total / result.seconds if result.seconds else 0.0
        result.overlaps = await conn.fetchval(
            """
            SELECT count(*) FROM runs a JOIN runs b
              ON a.n = b.n AND a.ctid < b.ctid
             AND a.started_at < b.finished_at AND b.started_at < a.finished_at
            """
        )
        result.per_worker = [
            r["count"]
            for r in await conn.fetch(
                "SELECT worker, count(*) FROM runs GROUP BY worker ORDER BY count(*) DESC"
            )
        ]
        tasks = await conn.fetchrow(
            """
            SELECT count(*) AS task_rows,
                   count(*) FILTER (WHERE state = 'completed') AS completed,
                   count(*) FILTER (WHERE attempts > 1) AS retried
            FROM anchor_tasks WHERE name = 'recordRun'
            """
        )
        result.task_rows, result.completed, result.retried = tasks
        latencies = [
            r["ms"]
            for r in await conn.fetch(
                """
                SELECT extract(epoch FROM finished_at - created_at)::float8 * 1000 AS ms
                FROM anchor_tasks WHERE name = 'recordRun' AND state = 'completed'
                """
            )
        ]
        if len(latencies) >= 2:
            cuts = statistics.quantiles(latencies, n=100, method="inclusive")
            result.p50_ms, result.p99_ms = cuts[49], cuts[98]
    finally:
        await conn.close()
