"""The task engine (anchor.tasks) against real PostgreSQL: enqueue, claim, run, settle, rescue."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import importlib
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import pytest

from .task_helpers import Executor, setup_pool


@pytest.fixture
def leases(template_package: str) -> ModuleType:
    return importlib.import_module(f"{template_package}.anchor.tasks.leases")


def definition(
    tasks: ModuleType,
    name: str,
    execute: Executor,
    on_failed: Callable[..., Awaitable[None]] | None = None,
) -> Any:
    return tasks.TaskDefinition(name, tasks.TaskOptions(), execute, on_failed)


def options(tasks: ModuleType, **kwargs: Any) -> Any:
    attempts = kwargs.pop("max_attempts", 1)
    intervals = kwargs.pop("intervals", ())
    policy = tasks.RetryPolicy(intervals=intervals, max_attempts=attempts)
    return tasks.TaskOptions(retry_policy=policy, **kwargs)


def worker(tasks: ModuleType, pool: asyncpg.Pool, *defs: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("lease", dt.timedelta(seconds=5))
    return tasks.Worker(pool, {d.name: d for d in defs}, **kwargs)


@contextlib.asynccontextmanager
async def running(w: Any, grace: float = 2.0) -> AsyncIterator[Any]:
    await w.start()
    try:
        yield w
    finally:
        await w.stop(grace)


async def insert_execution(tx: Any, task_id: int, note: str = "") -> None:
    await tx.execute("INSERT INTO executions (task_id, note) VALUES ($1, $2)", task_id, note)


# Durations and retry delays


def test_parse_duration(tasks: ModuleType) -> None:
    parse = tasks.parse_duration
    assert parse("30s") == dt.timedelta(seconds=30)
    assert parse("5m") == dt.timedelta(minutes=5)
    assert parse("1h") == dt.timedelta(hours=1)
    assert parse("2d") == dt.timedelta(days=2)
    assert parse("1h30m") == dt.timedelta(minutes=90)
    assert parse("500ms") == dt.timedelta(milliseconds=500)
    assert parse("1.5s") == dt.timedelta(milliseconds=1500)
    for bad in ["", "10", "1w", "1m,2m", "-5s", "5 s", "s"]:
        with pytest.raises(ValueError, match="duration"):
            parse(bad)
    assert tasks.format_duration(dt.timedelta(minutes=90, milliseconds=5)) == "1h30m5ms"


def test_retry_delay(tasks: ModuleType) -> None:
    s = dt.timedelta(seconds=1)
    fixed = tasks.RetryPolicy(intervals=(5 * s,), max_attempts=5)
    assert [tasks.retry_delay(fixed, n) for n in (1, 2, 3)] == [5 * s] * 3
    listed = tasks.RetryPolicy(intervals=(s, 2 * s, 10 * s), max_attempts=5)
    assert [tasks.retry_delay(listed, n) for n in (1, 2, 3, 4)] == [s, 2 * s, 10 * s, 10 * s]
    backoff = tasks.RetryPolicy(intervals=(s,), backoff=True, max_interval=5 * s)
    assert [tasks.retry_delay(backoff, n) for n in (1, 2, 3, 4, 1000)] == [
        s, 2 * s, 4 * s, 5 * s, 5 * s,
    ]  # fmt: skip
    jittered = tasks.RetryPolicy(intervals=(10 * s,), jitter=0.5)
    delays = {tasks.retry_delay(jittered, 1) for _ in range(20)}
    assert all(10 * s <= d <= 15 * s for d in delays) and len(delays) > 1
    assert tasks.retry_delay(tasks.RetryPolicy(), 1) == dt.timedelta()


# Enqueue, run, complete


def test_enqueue_run_complete_and_wait(tasks: ModuleType, database_url: str) -> None:
    async def echo(ctx: Any, tx: Any, params: Mapping[str, Any]) -> Any:
        return {"x": params["x"], "attempt": ctx.attempt, "name": ctx.name}

    async def write(ctx: Any, tx: Any, params: Mapping[str, Any]) -> Any:
        await insert_execution(tx, ctx.task_id, "write")
        return params["n"] * 2

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        defs = (definition(tasks, "echo", echo), definition(tasks, "write", write))
        async with running(worker(tasks, pool, *defs)):
            a = await store.enqueue("echo", {"x": "é"}, tasks.TaskOptions())
            b = await store.enqueue("write", {"n": 21}, tasks.TaskOptions())
            assert await store.wait(a, timeout=5) == {"x": "é", "attempt": 1, "name": "echo"}
            assert await store.wait(b, timeout=5) == 42
        info = await store.get(b)
        assert (info.state, info.attempts, info.result) == ("completed", 1, 42)
        assert info.finished_at is not None and info.started_at is not None
        assert await pool.fetchval("SELECT count(*) FROM executions WHERE task_id = $1", b) == 1
        assert await store.get(10**9) is None
        with pytest.raises(LookupError):
            await store.wait(10**9)
        await pool.close()

    asyncio.run(run())


def test_transactional_enqueue(tasks: ModuleType, database_url: str) -> None:
    ran: list[int] = []

    async def record(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        ran.append(ctx.task_id)

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        # A long poll interval: only the NOTIFY delivered on commit can wake the worker fast.
        w = worker(tasks, pool, definition(tasks, "record", record), poll_interval=30)
        async with running(w):
            await asyncio.sleep(0.2)  # the listener is up
            async with pool.acquire() as conn, conn.transaction():
                committed = await store.enqueue("record", {}, tasks.TaskOptions(), tx=conn)
                assert await store.get(committed) is None  # invisible outside the tx
                await asyncio.sleep(0.2)
                assert ran == []
            started = time.monotonic()
            await store.wait(committed, timeout=5)
            assert time.monotonic() - started < 1.0

            with pytest.raises(RuntimeError):
                async with pool.acquire() as conn, conn.transaction():
                    rolled_back = await store.enqueue("record", {}, tasks.TaskOptions(), tx=conn)
                    raise RuntimeError("roll back")
            assert await store.get(rolled_back) is None
            await asyncio.sleep(0.3)
        assert ran == [committed]
        assert await pool.fetchval("SELECT count(*) FROM anchor_tasks") == 1
        await pool.close()

    asyncio.run(run())


def test_unique_tag_dedup_and_race(tasks: ModuleType, database_url: str) -> None:
    async def run() -> None:
        pool = await setup_pool(database_url, tasks, max_size=20)
        store = tasks.TaskStore(pool)
        first = await store.enqueue("t", {"i": 1}, options(tasks, unique_tag="one"))
        again = await store.enqueue("t", {"i": 2}, options(tasks, unique_tag="one"))
        assert again == first

        ids = await asyncio.gather(
            *(store.enqueue("t", {"i": i}, options(tasks, unique_tag="race")) for i in range(20))
        )
        assert len(set(ids)) == 1
        assert await pool.fetchval("SELECT count(*) FROM anchor_tasks WHERE unique_tag='race'") == 1

        # The tag covers pending and running only: after the task finishes it is free again.
        await pool.execute("UPDATE anchor_tasks SET state = 'completed' WHERE id = $1", first)
        fresh = await store.enqueue("t", {}, options(tasks, unique_tag="one"))
        assert fresh != first

        batch = await store.enqueue_many(
            [
                tasks.TaskRequest("t", {"i": 0}),
                tasks.TaskRequest("t", {"i": 1}, options(tasks, unique_tag="one")),
                tasks.TaskRequest("t", {"i": 2}, options(tasks, unique_tag="new")),
                tasks.TaskRequest("t", {"i": 3}),
                tasks.TaskRequest("t", {"i": 4}, options(tasks, unique_tag="new")),
                tasks.TaskRequest("t", {"i": 5}, options(tasks, queue="other", labels=("a",))),
            ]
        )
        assert batch[1] == fresh and batch[2] == batch[4]
        assert len(set(batch)) == 5
        for i, task_id in [(0, batch[0]), (2, batch[2]), (3, batch[3]), (5, batch[5])]:
            assert (await store.get(task_id)).params == {"i": i}
        assert (await store.get(batch[5])).labels == ("a",)
        await pool.close()

    asyncio.run(run())


# Failures, retries, timeouts, on_failed


def test_retries_count_attempts_and_keep_every_error(tasks: ModuleType, database_url: str) -> None:
    async def flaky(ctx: Any, tx: Any, params: Mapping[str, Any]) -> str:
        await insert_execution(tx, ctx.task_id)  # rolled back with each failure
        if ctx.attempt <= params["fail_times"]:
            raise ValueError(f"boom {ctx.attempt}")
        return "ok"

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        ms = dt.timedelta(milliseconds=10)
        async with running(worker(tasks, pool, definition(tasks, "flaky", flaky))):
            doomed = await store.enqueue(
                "flaky", {"fail_times": 99}, options(tasks, max_attempts=3, intervals=(ms,))
            )
            healed = await store.enqueue(
                "flaky", {"fail_times": 2}, options(tasks, max_attempts=5, intervals=(ms,))
            )
            once = await store.enqueue("flaky", {"fail_times": 99}, options(tasks))
            with pytest.raises(tasks.TaskFailed, match="boom 3") as failed:
                await store.wait(doomed, timeout=5)
            assert failed.value.last_error == "ValueError: boom 3"
            assert await store.wait(healed, timeout=5) == "ok"
            with pytest.raises(tasks.TaskFailed, match="boom 1"):
                await store.wait(once, timeout=5)
        errors = await store.attempt_errors(doomed)
        assert [(e.attempt, e.kind, e.error) for e in errors] == [
            (n, "error", f"ValueError: boom {n}") for n in (1, 2, 3)
        ]
        assert (await store.get(doomed)).attempts == 3
        assert (await store.get(healed)).attempts == 3
        assert [e.attempt for e in await store.attempt_errors(healed)] == [1, 2]
        assert (await store.get(once)).attempts == 1
        executions = await pool.fetch("SELECT task_id FROM executions")
        assert [r["task_id"] for r in executions] == [healed]

        # A manual retry runs a failed task again with a fresh budget.
        assert await store.retry(once)
        assert (await store.get(once)).state == "pending"
        await pool.close()

    asyncio.run(run())


def test_retry_delay_is_respected(tasks: ModuleType, database_url: str) -> None:
    starts: list[float] = []

    async def fail_once(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        starts.append(time.monotonic())
        if ctx.attempt == 1:
            raise RuntimeError("first")

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        opts = options(tasks, max_attempts=2, intervals=(dt.timedelta(milliseconds=400),))
        async with running(worker(tasks, pool, definition(tasks, "f", fail_once))):
            task_id = await store.enqueue("f", {}, opts)
            await store.wait(task_id, timeout=5)
        assert starts[1] - starts[0] >= 0.35
        await pool.close()

    asyncio.run(run())


def test_timeout_is_a_failed_attempt(tasks: ModuleType, database_url: str) -> None:
    async def slow(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        await insert_execution(tx, ctx.task_id)
        await asyncio.sleep(10)

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        opts = options(tasks, max_attempts=2, timeout=dt.timedelta(milliseconds=100))
        async with running(worker(tasks, pool, definition(tasks, "slow", slow))):
            task_id = await store.enqueue("slow", {}, opts)
            with pytest.raises(tasks.TaskFailed, match="timed out after 100ms"):
                await store.wait(task_id, timeout=5)
        errors = await store.attempt_errors(task_id)
        assert [(e.attempt, e.kind) for e in errors] == [(1, "timeout"), (2, "timeout")]
        assert await pool.fetchval("SELECT count(*) FROM executions") == 0
        await pool.close()

    asyncio.run(run())


def test_on_failed_runs_in_the_failing_transaction(tasks: ModuleType, database_url: str) -> None:
    async def fail(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        raise RuntimeError(params["why"])

    async def on_failed(conn: Any, task_id: int, params: Mapping[str, Any]) -> None:
        # Inside the failing transaction: the task already reads as failed, with its error.
        state = await conn.fetchval("SELECT state FROM anchor_tasks WHERE id = $1", task_id)
        logged = await conn.fetchval(
            "SELECT count(*) FROM anchor_task_attempts WHERE task_id = $1", task_id
        )
        await insert_execution(conn, task_id, f"{state}/{logged}/{params['why']}")
        if params["why"] == "hook breaks":
            raise RuntimeError("hook failed")

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        w = worker(tasks, pool, definition(tasks, "fail", fail, on_failed))
        async with running(w):
            plain = await store.enqueue("fail", {"why": "plain"}, options(tasks))
            broken = await store.enqueue("fail", {"why": "hook breaks"}, options(tasks))
            for task_id in (plain, broken):
                with pytest.raises(tasks.TaskFailed):
                    await store.wait(task_id, timeout=5)
        notes = await pool.fetch("SELECT task_id, note FROM executions")
        # The breaking hook's write rolled back with its savepoint; the failure still stands.
        assert [(r["task_id"], r["note"]) for r in notes] == [(plain, "failed/1/plain")]
        info = await store.get(broken)
        assert info.state == "failed"
        assert (
            info.last_error
            == "RuntimeError: hook breaks; on_failed raised RuntimeError: hook failed"
        )
        await pool.close()

    asyncio.run(run())


def test_on_task_failed_hooks_see_every_task_that_fails_for_good(
    tasks: ModuleType, database_url: str
) -> None:
    """Plugins' `on_task_failed` hooks run after the task's own on_failed, in the same
    transaction; retried attempts do not call them, and a raising hook breaks nothing."""

    async def fail(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        raise RuntimeError(f"boom {params['n']}")

    async def audit(conn: Any, failed: Any) -> None:
        state = await conn.fetchval("SELECT state FROM anchor_tasks WHERE id = $1", failed.id)
        await insert_execution(conn, failed.id, f"{failed.name}/{state}/{failed.error}")

    async def broken(conn: Any, failed: Any) -> None:
        raise RuntimeError("audit down")

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        retried = tasks.TaskDefinition(
            "retried", options(tasks, max_attempts=2, intervals=(dt.timedelta(0),)), fail
        )
        w = worker(
            tasks, pool, definition(tasks, "fail", fail), retried, on_task_failed=[broken, audit]
        )
        async with running(w):
            once = await store.enqueue("fail", {"n": 1}, options(tasks))
            twice = await store.enqueue("retried", {"n": 2}, retried.options)
            for task_id in (once, twice):
                with pytest.raises(tasks.TaskFailed):
                    await store.wait(task_id, timeout=5)
        notes = dict(await pool.fetch("SELECT task_id, note FROM executions"))
        assert notes == {
            once: "fail/failed/RuntimeError: boom 1",
            twice: "retried/failed/RuntimeError: boom 2",
        }
        await pool.close()

    asyncio.run(run())


def test_completion_is_atomic_with_the_executor_writes(
    tasks: ModuleType, database_url: str
) -> None:
    """A completion fenced out (lease taken over meanwhile) rolls back the executor's write."""
    gate = asyncio.Event

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        wrote, release = gate(), gate()

        async def write(ctx: Any, tx: Any, params: Mapping[str, Any]) -> str:
            await insert_execution(tx, ctx.task_id)
            wrote.set()
            await release.wait()
            return "done"

        w = worker(tasks, pool, definition(tasks, "write", write), heartbeat_interval=60)
        async with running(w):
            task_id = await store.enqueue("write", {}, tasks.TaskOptions())
            await asyncio.wait_for(wrote.wait(), 5)
            # Another worker took the task over (as after a rescue and a new claim).
            await pool.execute(
                "UPDATE anchor_tasks SET lease_owner = 'other' WHERE id = $1", task_id
            )
            release.set()
            await asyncio.sleep(0.3)
        info = await store.get(task_id)
        assert (info.state, info.result) == ("running", None)
        assert await pool.fetchval("SELECT count(*) FROM executions") == 0
        await pool.close()

    asyncio.run(run())


# Leases: rescue, graceful stop, cancel


def test_expired_lease_is_rescued(tasks: ModuleType, leases: ModuleType, database_url: str) -> None:
    ran: list[int] = []

    async def record(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        ran.append(ctx.attempt)

    async def on_failed(conn: Any, task_id: int, params: Mapping[str, Any]) -> None:
        await insert_execution(conn, task_id, "on_failed")

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        again = await store.enqueue("record", {}, options(tasks, max_attempts=2))
        spent = await store.enqueue("record", {}, options(tasks, max_attempts=1))
        # A worker that claims and then dies: its leases expire unheartbeated.
        claimed = await pool.fetch(
            leases.CLAIM,
            ["default"],
            ["record"],
            10,
            "dead-worker",
            dt.timedelta(milliseconds=200),
            [],
        )
        assert len(claimed) == 2
        w = worker(tasks, pool, definition(tasks, "record", record, on_failed))
        w.rescue_interval = 0.1
        async with running(w):
            await store.wait(again, timeout=5)
            with pytest.raises(tasks.TaskFailed, match="lease expired"):
                await store.wait(spent, timeout=5)
        assert ran == [2]
        assert (await store.get(again)).attempts == 2
        errors = await store.attempt_errors(again)
        assert [(e.attempt, e.kind, e.worker) for e in errors] == [
            (1, "lease_expired", "dead-worker")
        ]
        notes = await pool.fetch("SELECT task_id, note FROM executions")
        assert [(r["task_id"], r["note"]) for r in notes] == [(spent, "on_failed")]
        await pool.close()

    asyncio.run(run())


_KILLED_WORKER = """
import asyncio, datetime as dt, sys
sys.path.insert(0, {root!r})
import asyncpg
from anchorpkg.anchor import tasks

async def slow(ctx, tx, params):
    await tx.execute("INSERT INTO executions (task_id, note) VALUES ($1, 'killed')", ctx.task_id)
    print("started", ctx.task_id, flush=True)
    await asyncio.sleep(60)

async def main():
    pool = await asyncpg.create_pool({url!r}, min_size=1, max_size=10)
    defn = tasks.TaskDefinition("job", tasks.TaskOptions(), slow)
    worker = tasks.Worker(pool, {{"job": defn}}, concurrency=4, lease=dt.timedelta(seconds=1),
                          poll_interval=0.05)
    await worker.run()

asyncio.run(main())
"""


def test_sigkilled_worker_loses_nothing(
    tasks: ModuleType, template_package: str, database_url: str, tmp_path: Path
) -> None:
    root = str(Path(sys.modules[template_package].__file__ or "").parent.parent)
    script = tmp_path / "victim.py"
    script.write_text(textwrap.dedent(_KILLED_WORKER.format(root=root, url=database_url)))

    async def fast(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        await insert_execution(tx, ctx.task_id, "done")

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        requests = [tasks.TaskRequest("job", {}, options(tasks, max_attempts=3))] * 10
        ids = await store.enqueue_many(requests)
        victim = await asyncio.create_subprocess_exec(
            sys.executable, str(script), stdout=asyncio.subprocess.PIPE
        )
        try:
            assert victim.stdout is not None
            lines = [await asyncio.wait_for(victim.stdout.readline(), 10) for _ in range(4)]
            started = {int(line.split()[1]) for line in lines}  # 4 = the victim's concurrency
        finally:
            os.kill(victim.pid, signal.SIGKILL)
            await victim.wait()
        w = worker(tasks, pool, definition(tasks, "job", fast), rescue_interval=0.2)
        async with running(w):
            for task_id in ids:
                await store.wait(task_id, timeout=10)
        rows = await pool.fetch("SELECT task_id, note FROM executions")
        assert sorted(r["task_id"] for r in rows) == sorted(ids)  # killed writes never committed
        for task_id in ids:
            info = await store.get(task_id)
            assert info.attempts == (2 if task_id in started else 1)
        await pool.close()

    asyncio.run(run())


def test_graceful_stop_hands_back_unfinished_tasks(tasks: ModuleType, database_url: str) -> None:
    async def sleepy(ctx: Any, tx: Any, params: Mapping[str, Any]) -> str:
        await insert_execution(tx, ctx.task_id)
        await asyncio.sleep(params["seconds"])
        return "finished"

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        w = worker(tasks, pool, definition(tasks, "sleepy", sleepy))
        await w.start()
        short = await store.enqueue("sleepy", {"seconds": 0.1}, tasks.TaskOptions())
        long = await store.enqueue("sleepy", {"seconds": 30}, tasks.TaskOptions())
        while w.in_flight < 2:
            await asyncio.sleep(0.01)
        began = time.monotonic()
        await w.stop(grace=0.5)
        assert time.monotonic() - began < 1.5
        assert (await store.get(short)).state == "completed"
        info = await store.get(long)
        assert (info.state, info.attempts, info.started_at is not None) == ("pending", 0, True)
        assert await pool.fetchval("SELECT lease_owner FROM anchor_tasks WHERE id=$1", long) is None
        assert await pool.fetchval("SELECT count(*) FROM executions") == 1
        await pool.close()

    asyncio.run(run())


def test_cancel_pending_and_running(tasks: ModuleType, database_url: str) -> None:
    interrupted: list[int] = []

    async def hang(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        await insert_execution(tx, ctx.task_id)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.append(ctx.task_id)
            raise

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        w = worker(tasks, pool, definition(tasks, "hang", hang), poll_interval=30)
        delayed = await store.enqueue("hang", {}, options(tasks, delay=dt.timedelta(hours=1)))
        child = await store.enqueue(
            "hang", {}, options(tasks, parent_id=delayed, delay=dt.timedelta(hours=1))
        )
        assert await store.cancel(delayed) == [delayed, child]
        assert await store.cancel(delayed) == []
        async with running(w):
            await asyncio.sleep(0.2)
            task_id = await store.enqueue("hang", {}, tasks.TaskOptions())
            while w.in_flight < 1:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert await store.cancel(task_id) == [task_id]
            with pytest.raises(tasks.TaskCancelled):
                await store.wait(task_id, timeout=1)
            for _ in range(100):
                if w.in_flight == 0:
                    break
                await asyncio.sleep(0.01)
            assert interrupted == [task_id] and w.in_flight == 0
        assert (await store.get(delayed)).state == "cancelled"
        assert (await store.get(task_id)).state == "cancelled"
        assert await pool.fetchval("SELECT count(*) FROM executions") == 0
        await pool.close()

    asyncio.run(run())


# Ordering


def test_priority_and_run_at_order(tasks: ModuleType, database_url: str) -> None:
    order: list[str] = []

    async def record(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        order.append(params["label"])

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        await store.enqueue("record", {"label": "low"}, options(tasks, priority=-1))
        await store.enqueue("record", {"label": "mid-1"}, options(tasks))
        await store.enqueue("record", {"label": "high"}, options(tasks, priority=5))
        await store.enqueue("record", {"label": "mid-2"}, options(tasks))
        later = await store.enqueue(
            "record", {"label": "later"}, options(tasks, delay=dt.timedelta(milliseconds=500))
        )
        at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        future = await store.enqueue("record", {"label": "future"}, options(tasks, run_at=at))
        enqueued = time.monotonic()
        w = worker(tasks, pool, definition(tasks, "record", record), concurrency=1)
        async with running(w):
            await store.wait(later, timeout=5)
            assert time.monotonic() - enqueued >= 0.45
        assert order == ["high", "mid-1", "mid-2", "low", "later"]
        assert (await store.get(future)).state == "pending"
        await pool.close()

    asyncio.run(run())


def test_serial_key_runs_one_at_a_time_in_order(tasks: ModuleType, database_url: str) -> None:
    log: list[tuple[str, int]] = []

    async def step(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        log.append(("start", params["i"]))
        await asyncio.sleep(0.05)
        log.append(("end", params["i"]))

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        ids = await store.enqueue_many(
            [tasks.TaskRequest("step", {"i": i}, options(tasks, serial_key="k")) for i in range(4)]
        )
        async with running(worker(tasks, pool, definition(tasks, "step", step), concurrency=4)):
            for task_id in ids:
                await store.wait(task_id, timeout=5)
        assert log == [(event, i) for i in range(4) for event in ("start", "end")]
        await pool.close()

    asyncio.run(run())


# Scale


def test_thousand_tasks_three_workers_exactly_once(tasks: ModuleType, database_url: str) -> None:
    executed: collections.Counter[int] = collections.Counter()

    async def count(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        executed[ctx.task_id] += 1
        if params["tx"]:
            await insert_execution(tx, ctx.task_id)

    async def run() -> None:
        pools = [await setup_pool(database_url, tasks, max_size=14) for _ in range(3)]
        store = tasks.TaskStore(pools[0])
        workers = [
            worker(tasks, pool, definition(tasks, "count", count), concurrency=10) for pool in pools
        ]
        for w in workers:
            await w.start()
        ids = await store.enqueue_many(
            [tasks.TaskRequest("count", {"tx": i % 2 == 0}) for i in range(1000)]
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = await pools[0].fetchval(
                "SELECT count(*) FROM anchor_tasks WHERE state <> 'completed'"
            )
            if left == 0:
                break
            await asyncio.sleep(0.05)
        for w in workers:
            await w.stop(1)
        assert left == 0
        assert sorted(executed) == sorted(ids)
        assert set(executed.values()) == {1}
        assert await pools[0].fetchval("SELECT count(DISTINCT task_id) FROM executions") == 500
        assert await pools[0].fetchval("SELECT count(*) FROM executions") == 500
        for pool in pools:
            await pool.close()

    asyncio.run(run())


def test_listener_reconnects_after_its_connection_drops(
    tasks: ModuleType, database_url: str
) -> None:
    async def noop(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
        pass

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        w = worker(tasks, pool, definition(tasks, "noop", noop), poll_interval=30)
        w.heartbeat_interval = 0.1  # also the listener's health-check period
        async with running(w):
            await asyncio.sleep(0.2)
            killed = await pool.fetchval(
                """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()
                     AND (query LIKE 'LISTEN%' OR query = 'SELECT 1')"""
            )
            assert killed >= 1
            await asyncio.sleep(0.6)  # reconnect with backoff
            task_id = await store.enqueue("noop", {}, tasks.TaskOptions())
            started = time.monotonic()
            await store.wait(task_id, timeout=5)
            assert time.monotonic() - started < 1.5
        await pool.close()

    asyncio.run(run())


def test_labelled_tasks_run_only_on_workers_with_every_label(
    tasks: ModuleType, database_url: str
) -> None:
    ran_on: dict[str, str] = {}

    def recorder(worker_name: str) -> Executor:
        async def record(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
            ran_on[params["name"]] = worker_name

        return record

    async def run() -> None:
        pool = await setup_pool(database_url, tasks)
        store = tasks.TaskStore(pool)
        ids = [
            await store.enqueue("record", {"name": "plain"}, options(tasks)),
            await store.enqueue("record", {"name": "gpu"}, options(tasks, labels=("gpu",))),
            await store.enqueue("record", {"name": "gpu-eu"}, options(tasks, labels=("gpu", "eu"))),
        ]
        gpu = worker(tasks, pool, definition(tasks, "record", recorder("gpu")), labels=["gpu"])
        async with running(gpu):
            await store.wait(ids[1], timeout=5)
            await asyncio.sleep(0.3)
        assert ran_on.get("gpu") == "gpu"
        assert "gpu-eu" not in ran_on  # needs "eu" too
        both = worker(
            tasks, pool, definition(tasks, "record", recorder("both")), labels=["eu", "gpu"]
        )
        async with running(both):
            await store.wait(ids[2], timeout=5)
            await store.wait(ids[0], timeout=5)
        assert ran_on["gpu-eu"] == "both"
        assert "plain" in ran_on  # unlabelled tasks run anywhere
        await pool.close()

    asyncio.run(run())
