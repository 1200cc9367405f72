"""Task engine operations against real PostgreSQL: Prometheus metrics, the pruner, and the
`tasks list|show|retry|cancel` admin commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib
import json
from collections.abc import AsyncIterator, Mapping
from types import ModuleType
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

MS = dt.timedelta(milliseconds=1)


@pytest.fixture
def metrics_mod(template_package: str) -> ModuleType:
    return importlib.import_module(f"{template_package}.anchor.tasks.metrics")


@pytest.fixture
def pruner_mod(template_package: str) -> ModuleType:
    return importlib.import_module(f"{template_package}.anchor.tasks.pruner")


@pytest.fixture
def admin(template_package: str) -> ModuleType:
    return importlib.import_module(f"{template_package}.anchor.tasks.admin")


async def setup(url: str, tasks: ModuleType) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=10)
    async with pool.acquire() as conn:
        await tasks.migrate(conn)
    return pool


def options(tasks: ModuleType, max_attempts: int = 1, **kwargs: Any) -> Any:
    policy = tasks.RetryPolicy(intervals=kwargs.pop("intervals", ()), max_attempts=max_attempts)
    return tasks.TaskOptions(retry_policy=policy, **kwargs)


def make_worker(
    tasks: ModuleType, pool: asyncpg.Pool, executors: Mapping[str, Any], **kw: Any
) -> Any:
    defs = {
        name: tasks.TaskDefinition(name, tasks.TaskOptions(), fn) for name, fn in executors.items()
    }
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("lease", dt.timedelta(seconds=5))
    return tasks.Worker(pool, defs, **kw)


@contextlib.asynccontextmanager
async def running(w: Any) -> AsyncIterator[Any]:
    await w.start()
    try:
        yield w
    finally:
        await w.stop(2.0)


# Metrics


def test_metrics_count_enqueues_outcomes_run_time_and_in_flight(
    tasks: ModuleType, metrics_mod: ModuleType, database_url: str
) -> None:
    registry = CollectorRegistry()
    metrics = metrics_mod.TaskMetrics(registry, queue_stats_interval=None)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    gate = asyncio.Event()
    entered = asyncio.Event()
    failures: dict[int, int] = {}

    async def ok(ctx: Any, tx: Any, params: Mapping[str, Any]) -> Any:
        return params["n"]

    async def writes(ctx: Any, tx: Any, params: Mapping[str, Any]) -> Any:
        return await tx.fetchval("SELECT 1")  # completes in its own transaction

    async def flaky(ctx: Any, tx: Any, params: Mapping[str, Any]) -> Any:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    async def bad(ctx: Any, tx: Any, params: Mapping[str, Any]) -> Any:
        failures[ctx.task_id] = ctx.attempt
        raise ValueError("always")

    async def slow(ctx: Any, tx: Any, params: Mapping[str, Any]) -> Any:
        entered.set()
        await gate.wait()

    async def run() -> None:
        pool = await setup(database_url, tasks)
        store = tasks.TaskStore(pool, metrics=metrics)
        plain = tasks.TaskStore(pool)  # without metrics: records nothing
        ids = [await store.enqueue("ok", {"n": i}, tasks.TaskOptions()) for i in range(3)]
        ids += await store.enqueue_many(
            [
                tasks.TaskRequest("writes", {}),
                tasks.TaskRequest("flaky", {}, options(tasks, 2, intervals=(MS,))),
                tasks.TaskRequest("bad", {}, options(tasks, 2, intervals=(MS,))),
                tasks.TaskRequest("ok", {"n": 9}, tasks.TaskOptions(unique_tag="t")),
                tasks.TaskRequest("ok", {"n": 9}, tasks.TaskOptions(unique_tag="t")),  # same
            ]
        )
        assert ids[6] == ids[7]
        assert await store.enqueue("ok", {}, tasks.TaskOptions(unique_tag="t")) == ids[6]
        ids.append(await plain.enqueue("ok", {"n": 0}, tasks.TaskOptions()))
        assert sample("anchor_tasks_enqueued_total", task="ok") == 4
        assert sample("anchor_tasks_enqueued_total", task="bad") == 1

        executors = {"ok": ok, "writes": writes, "flaky": flaky, "bad": bad, "slow": slow}
        async with running(make_worker(tasks, pool, executors, metrics=metrics)):
            for task_id in ids:
                with contextlib.suppress(tasks.TaskFailed):
                    await store.wait(task_id, timeout=5)
            slow_id = await store.enqueue("slow", {}, tasks.TaskOptions())
            await asyncio.wait_for(entered.wait(), 5)
            assert sample("anchor_tasks_in_flight") == 1
            gate.set()
            await store.wait(slow_id, timeout=5)
        assert failures == {ids[5]: 2}

        assert sample("anchor_tasks_in_flight") == 0
        assert sample("anchor_tasks_completed_total", task="ok") == 5
        assert sample("anchor_tasks_completed_total", task="writes") == 1
        assert sample("anchor_tasks_completed_total", task="flaky") == 1
        assert sample("anchor_tasks_retried_total", task="flaky") == 1
        assert sample("anchor_tasks_failed_total", task="flaky") == 0
        assert sample("anchor_tasks_retried_total", task="bad") == 1
        assert sample("anchor_tasks_failed_total", task="bad") == 1
        assert sample("anchor_tasks_completed_total", task="bad") == 0
        assert sample("anchor_task_run_seconds_count", task="ok") == 5
        assert sample("anchor_task_run_seconds_count", task="flaky") == 2
        assert sample("anchor_task_run_seconds_count", task="bad") == 2
        slow_seconds = sample("anchor_task_run_seconds_sum", task="slow")
        assert slow_seconds is not None and 0 < slow_seconds < 5
        await pool.close()

    asyncio.run(run())


def test_rescued_leases_count_as_retried_or_failed(
    tasks: ModuleType, metrics_mod: ModuleType, database_url: str
) -> None:
    registry = CollectorRegistry()
    metrics = metrics_mod.TaskMetrics(registry, queue_stats_interval=None)
    leases = importlib.import_module(tasks.__name__ + ".leases")

    async def run() -> None:
        pool = await setup(database_url, tasks)
        store = tasks.TaskStore(pool)
        await store.enqueue("job", {}, options(tasks, 2))
        await store.enqueue("job", {}, options(tasks, 1))
        await pool.fetch(leases.CLAIM, ["default"], ["job"], 10, "dead", dt.timedelta(), [])
        w = make_worker(tasks, pool, {"job": lambda *a: asyncio.sleep(0)}, metrics=metrics)
        assert await w.rescue() == 2
        await pool.close()

    asyncio.run(run())
    assert registry.get_sample_value("anchor_tasks_retried_total", {"task": "job"}) == 1
    assert registry.get_sample_value("anchor_tasks_failed_total", {"task": "job"}) == 1


def test_queue_depth_and_oldest_pending_age(
    tasks: ModuleType, metrics_mod: ModuleType, database_url: str
) -> None:
    registry = CollectorRegistry()
    metrics = metrics_mod.TaskMetrics(registry, queue_stats_interval=0.05)

    def depth(queue: str) -> float | None:
        return registry.get_sample_value("anchor_tasks_queue_depth", {"queue": queue})

    def age(queue: str) -> float | None:
        return registry.get_sample_value(
            "anchor_tasks_oldest_pending_age_seconds", {"queue": queue}
        )

    async def run() -> None:
        pool = await setup(database_url, tasks)
        store = tasks.TaskStore(pool)
        now = await pool.fetchval("SELECT now()")
        for minutes in (1, 5, 0):
            at = now - dt.timedelta(minutes=minutes)
            await store.enqueue("job", {}, tasks.TaskOptions(run_at=at))
        await store.enqueue("job", {}, tasks.TaskOptions(delay=dt.timedelta(hours=1)))  # not due
        other = [await store.enqueue("job", {}, tasks.TaskOptions(queue="other")) for _ in "ab"]
        await store.cancel(
            await store.enqueue("job", {}, tasks.TaskOptions(queue="gone", run_at=now))
        )

        assert await metrics.refresh_queue_stats(pool)
        assert depth("default") == 3
        assert 300 <= (age("default") or 0) < 330
        assert depth("other") == 2
        assert 0 <= (age("other") or -1) < 30
        assert depth("gone") is None
        # A refresh younger than max_age is skipped (workers sharing the metrics).
        assert not await metrics.refresh_queue_stats(pool, max_age=60)

        for task_id in other:
            await store.cancel(task_id)
        assert await metrics.refresh_queue_stats(pool)
        assert (depth("other"), age("other")) == (0, 0)  # seen before: back to zero

        # A worker holding the metrics refreshes them on its own.
        async def job(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
            pass

        w = make_worker(tasks, pool, {"job": job}, queues=["other", "idle"], metrics=metrics)
        await store.enqueue("job", {}, tasks.TaskOptions(queue="third", run_at=now))
        async with running(w):
            for _ in range(100):
                if depth("third") == 1:
                    break
                await asyncio.sleep(0.02)
        assert depth("third") == 1
        assert (depth("idle"), age("idle")) == (0, 0)  # the worker's queues always have a series
        await pool.close()

    asyncio.run(run())


# Pruner


def test_pruner_deletes_only_old_finished_tasks_and_their_attempts(
    tasks: ModuleType, pruner_mod: ModuleType, database_url: str
) -> None:

    async def run() -> None:
        pool = await setup(database_url, tasks)
        store = tasks.TaskStore(pool)
        ids = await store.enqueue_many([tasks.TaskRequest("job", {})] * 12)
        # (state, finished days ago) per task; created a day before, or 30 days ago if unfinished.
        plan: list[tuple[str, float | None]] = [
            ("completed", 8),
            ("failed", 30),
            ("cancelled", 7.5),
            ("completed", 6),  # young
            ("failed", 1),  # young
            ("pending", None),
            ("running", None),
            ("completed", 10),
            ("completed", 9),
            ("failed", 0),
            ("completed", 0.01),
            ("cancelled", 20),
        ]
        for task_id, (state, finished) in zip(ids, plan, strict=True):
            await pool.execute(
                """UPDATE anchor_tasks SET state = $2,
                       finished_at = now() - make_interval(secs => $3 * 86400),
                       created_at = now() - make_interval(secs => $4 * 86400)
                   WHERE id = $1""",
                task_id,
                state,
                finished,
                30.0 if finished is None else finished + 1,
            )
            for attempt in (1, 2):
                await pool.execute(
                    "INSERT INTO anchor_task_attempts (task_id, attempt, kind, error)"
                    " VALUES ($1, $2, 'error', 'x')",
                    task_id,
                    attempt,
                )
        old = {ids[i] for i in (0, 1, 2, 7, 8, 11)}
        # A finished row locked by someone else is skipped, not waited for.
        async with pool.acquire() as locker, locker.transaction():
            await locker.execute("SELECT 1 FROM anchor_tasks WHERE id = $1 FOR UPDATE", ids[11])
            pruner = pruner_mod.Pruner(pool, dt.timedelta(days=7), 3600, batch_size=3)
            assert await pruner.prune_once() == len(old) - 1
        assert await pruner.prune_once() == 1
        assert await pruner.prune_once() == 0

        left = {r["id"] for r in await pool.fetch("SELECT id FROM anchor_tasks")}
        assert left == set(ids) - old
        attempts = await pool.fetch("SELECT DISTINCT task_id FROM anchor_task_attempts")
        assert {r["task_id"] for r in attempts} == left

        # A second pruner waits its turn instead of doing the same work.
        async with pool.acquire() as holder:
            await holder.execute("SELECT pg_advisory_lock($1)", pruner_mod.ADVISORY_LOCK_KEY)
            await pool.execute(
                "UPDATE anchor_tasks SET finished_at = now() - interval '30d'"
                " WHERE state = 'completed'"
            )
            assert await pruner.prune_once() == 0
            await holder.execute("SELECT pg_advisory_unlock($1)", pruner_mod.ADVISORY_LOCK_KEY)

        # Started in the background, it prunes at once and then every interval.
        background = pruner_mod.Pruner(pool, dt.timedelta(days=7), interval=0.05)
        await background.start()
        try:
            for _ in range(100):
                if not await pool.fetchval(
                    "SELECT count(*) FROM anchor_tasks WHERE state = 'completed'"
                ):
                    break
                await asyncio.sleep(0.02)
        finally:
            await background.stop()
        states = sorted(r["state"] for r in await pool.fetch("SELECT state FROM anchor_tasks"))
        assert states == ["failed", "failed", "pending", "running"]
        await pool.close()

    asyncio.run(run())


def test_pruner_walks_many_windows(
    tasks: ModuleType, pruner_mod: ModuleType, database_url: str
) -> None:
    async def run() -> None:
        pool = await setup(database_url, tasks)
        await pool.execute(
            """INSERT INTO anchor_tasks (name, state, finished_at, created_at)
               SELECT 'job', 'completed', now() - interval '8 days', now() - interval '9 days'
               FROM generate_series(1, 2500)"""
        )
        await pool.execute(
            "INSERT INTO anchor_tasks (name) SELECT 'job' FROM generate_series(1, 500)"
        )
        pruner = pruner_mod.Pruner(pool, batch_size=100)
        assert await pruner.prune_once() == 2500
        assert await pool.fetchval("SELECT count(*) FROM anchor_tasks") == 500
        await pool.close()

    asyncio.run(run())


# Admin commands


def parse(admin: ModuleType, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="app")
    commands = parser.add_subparsers(dest="command", required=True)
    admin.add_task_commands(commands)
    return parser.parse_args(["tasks", *argv])


def test_admin_commands(
    tasks: ModuleType, admin: ModuleType, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:

    def cli(*argv: str) -> tuple[int, str, str]:
        code = asyncio.run(admin.run_task_command(parse(admin, *argv), database_url))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    async def seed() -> dict[str, int]:
        pool = await setup(database_url, tasks)
        store = tasks.TaskStore(pool)

        async def bad(ctx: Any, tx: Any, params: Mapping[str, Any]) -> None:
            raise ValueError(f"boom {ctx.attempt}\nsecond line " + "x" * 100)

        ids = {
            "bad": await store.enqueue(
                "bad", {"user": "é", "n": 1}, options(tasks, 2, intervals=(MS,), queue="mail")
            ),
            "parent": await store.enqueue(
                "later", {}, tasks.TaskOptions(delay=dt.timedelta(hours=1))
            ),
        }
        ids["child"] = await store.enqueue(
            "later", {}, tasks.TaskOptions(parent_id=ids["parent"], labels=("a", "b"))
        )
        async with running(make_worker(tasks, pool, {"bad": bad}, queues=["mail"])):
            with pytest.raises(tasks.TaskFailed):
                await store.wait(ids["bad"], timeout=5)
        await pool.close()
        return ids

    ids = asyncio.run(seed())

    code, out, err = cli("list")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATE", "ATTEMPTS", "QUEUE", "RUN_AT", "LAST_ERROR"]
    assert [line.split()[0] for line in lines[1:]] == [
        str(ids[k]) for k in ("child", "parent", "bad")
    ]
    bad_row = lines[3]
    assert bad_row.split()[1:5] == ["bad", "failed", "2/2", "mail"]
    assert "ValueError: boom 2 second line xxx" in bad_row and bad_row.endswith("...")
    assert len(bad_row.split("ValueError")[1]) < admin.ERROR_WIDTH

    code, out, _ = cli("list", "--state", "pending", "--limit", "1")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == [str(ids["child"])]
    code, out, _ = cli("list", "--name", "bad", "--queue", "mail")
    assert len(out.splitlines()) == 2
    assert cli("list", "--name", "nothing") == (0, "no tasks\n", "")
    with pytest.raises(SystemExit):
        parse(admin, "list", "--state", "sleeping")
    capsys.readouterr()

    code, out, err = cli("show", str(ids["bad"]))
    assert (code, err) == (0, "")
    assert "state:            failed" in out and "queue:            mail" in out
    params = out.split("params:\n")[1].split("result:")[0]
    assert json.loads(params) == {"user": "é", "n": 1}
    assert "attempt errors: 2" in out
    assert "#1  " in out and "#2  " in out and "      ValueError: boom 1" in out
    assert "      second line" in out
    last_error = out.split("last_error:")[1].split("params:")[0]
    assert last_error.splitlines()[1].startswith(" " * 18 + "second line")
    code, out, _ = cli("show", str(ids["child"]))
    assert f"parent_id:        {ids['parent']}" in out and "labels:           a, b" in out
    assert "attempt errors: none" in out and "result:\n  null" in out

    # retry: only failed or cancelled tasks
    assert cli("retry", str(ids["bad"])) == (
        0,
        f"task {ids['bad']} is pending again (attempts reset)\n",
        "",
    )
    code, out, err = cli("retry", str(ids["bad"]))
    assert (code, out) == (1, "") and err == (
        f"error: task {ids['bad']} is pending; only failed or cancelled tasks can be retried\n"
    )

    # cancel: the task and its active descendants
    code, out, err = cli("cancel", str(ids["parent"]))
    assert (code, err) == (0, "")
    assert out == f"cancelled task {ids['parent']}\ncancelled descendants: {ids['child']}\n"
    code, _, err = cli("cancel", str(ids["parent"]))
    assert code == 1 and "is cancelled; only pending or running tasks can be cancelled" in err
    assert cli("cancel", "--no-cascade", str(ids["bad"]))[0] == 0
    assert cli("retry", str(ids["parent"]))[0] == 0

    for command in ("show", "retry", "cancel"):
        code, out, err = cli(command, "999999")
        assert (code, out, err) == (1, "", "error: no task with id 999999\n"), command

    code = asyncio.run(
        admin.run_task_command(parse(admin, "list"), "postgresql://127.0.0.1:1/none")
    )
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.startswith("error: cannot connect to the database")
