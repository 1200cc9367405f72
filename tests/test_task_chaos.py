"""At-least-once under failure, with real worker processes of a generated project:
SIGKILLed workers and a PostgreSQL restart lose no task, and database effects happen once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .chaos import Workers, build_chaos_project, busy_worker, wait_until_done

TOTAL = 1000


@pytest.fixture(scope="module")
def chaos_project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_chaos_project(template, tmp_path_factory.mktemp("chaos") / "chaos")


@pytest.fixture
def workers(chaos_project: Path, database_url: str) -> Iterator[Workers]:
    workers = Workers(chaos_project, database_url)
    workers.run("-m", "chaos_app", "migrate")
    workers.run("enqueue.py", str(TOTAL))
    yield workers
    workers.stop_all()


def test_sigkilled_workers_lose_nothing(workers: Workers, database_url: str) -> None:
    for _ in range(3):
        workers.start()
    for _ in range(4):  # kill a worker in the middle of a task, and replace it
        time.sleep(0.5)
        workers.kill(busy_worker(workers, database_url))
        workers.start()
    state = wait_until_done(database_url, TOTAL, timeout=120)
    assert workers.stop_all() == []
    assert state.get("completed") == TOTAL, state
    assert state["distinct_runs"] == TOTAL
    assert state["runs"] == TOTAL  # killed attempts' writes never committed: effects exactly once
    assert state["retried"] > 0, "no kill landed on a running task; the test proved nothing"


def test_postgres_restart_mid_run_loses_nothing(
    workers: Workers, database_url: str, postgres_server_handle: object
) -> None:
    for _ in range(3):
        workers.start()
    before = wait_until_done(database_url, 100, timeout=60)  # restart in the middle of the run
    assert 100 <= before.get("completed", 0) < TOTAL, before
    postgres_server_handle.restart(down_for=2.0)  # type: ignore[attr-defined]
    state = wait_until_done(database_url, TOTAL, timeout=120)
    dead = [workers.log_tail(p) for p in workers.processes if p.poll() is not None]
    assert dead == [], "a worker died"
    assert workers.stop_all() == []
    assert state.get("completed") == TOTAL, state
    assert state["runs"] == TOTAL and state["distinct_runs"] == TOTAL
