"""Scale: two API processes and 1, then 3 worker processes on one PostgreSQL. Every task
enqueued through the APIs runs exactly once, never twice at a time, and 3 workers finish
the same work faster than 1 (the executor sleeps 20 ms, a call to another service, so
throughput is bound by concurrency rather than by this 2-core machine's CPU)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .scale import ScaleCluster, build_scale_project

TASKS = 2000


@pytest.fixture
def cluster(
    template: Path, tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> Iterator[ScaleCluster]:
    project = build_scale_project(template, tmp_path_factory.mktemp("scale") / "scale")
    cluster = ScaleCluster(project, database_url, apis=2)
    yield cluster
    assert cluster.close() == []


def test_throughput_grows_with_workers_and_no_task_runs_twice(cluster: ScaleCluster) -> None:
    one = cluster.run(workers=1, tasks=TASKS, io_sleep=0.02, concurrency=8)
    three = cluster.run(workers=3, tasks=TASKS, io_sleep=0.02, concurrency=8)
    for run in (one, three):
        assert run.problems() == [], run
        assert run.runs == TASKS and run.completed == TASKS
        assert len(run.per_api) == 2 and min(run.per_api) > 0, run.per_api  # both APIs served
    assert len(three.per_worker) == 3 and min(three.per_worker) > TASKS / 10, three.per_worker
    ratio = three.per_s / one.per_s
    print(f"1 worker {one.per_s:.0f} tasks/s, 3 workers {three.per_s:.0f} tasks/s ({ratio:.2f}x)")
    assert ratio > 1.5, (one, three)
