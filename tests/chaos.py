"""A generated project with a task that records each run, driven as separate worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from .projects import make, render

RECORD_TASK = """
  - name: recordRun
    description: Record that this task ran (chaos tests)
    parameters:
      type: object
      required: [n]
      properties:
        n: {type: integer}
    retryPolicy:
      interval: 100ms
      maxAttempts: -1
"""

EXECUTOR = """

    async def execute_record_run(
        self, ctx: TaskContext, tx: Transaction, params: RecordRunParameters
    ) -> None:
        await asyncio.sleep(0.02)  # long enough to be killed mid-task now and then
        await self.queries.with_db(tx).record_run(n=params.n, worker=os.getpid())
"""

ENQUEUE_SCRIPT = """
import asyncio, sys
from chaos_app.anchor.settings import load_settings
from chaos_app.app import build_services
from chaos_app.gen.tasks.models import RecordRunParameters
from chaos_app.settings import AppSettings

async def main(count: int) -> None:
    services = build_services(load_settings(AppSettings))
    await services.db.connect()
    for n in range(count):
        await services.tasks.run_record_run(RecordRunParameters(n=n))
    await services.db.close()

asyncio.run(main(int(sys.argv[1])))
"""


def append_to_class(source: str, class_name: str, text: str) -> str:
    """Insert `text` (indented methods) at the end of class `class_name`'s body: before the
    next top-level statement after it, or at the end of the file."""
    lines = source.splitlines(keepends=True)
    start = next(
        (i for i, line in enumerate(lines) if line.startswith(f"class {class_name}(")), None
    )
    if start is None:
        raise ValueError(f"no `class {class_name}(` in the source")
    end = len(lines)
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line.strip() and not line[0].isspace() and not line.startswith((")", "#")):
            end = i
            break
    while end > start + 1 and not lines[end - 1].strip():  # before the blank lines
        end -= 1
    body = "".join(lines[:end]).rstrip("\n") + "\n" + text.rstrip("\n") + "\n"
    rest = "".join(lines[end:])
    return body + ("\n\n" + rest.lstrip("\n") if rest.strip() else "")


def build_chaos_project(
    template: Path,
    dst: Path,
    *,
    executor: str = EXECUTOR,
    customize: Callable[[Path], None] | None = None,
    **data: Any,
) -> Path:
    """Render the `chaos_app` project (copier answers `data` on top) with the recordRun task,
    its `runs` table and `executor` (appended to the Executors class); `customize(project)`
    runs before `make gen`."""
    data = {"package": "chaos_app", "project_name": "Chaos", **data}
    project = render(template, dst, skip_tasks=True, **data)
    with (project / "api" / "tasks.yaml").open("a") as spec:
        spec.write(RECORD_TASK)
    (project / "sql" / "migrations" / "0002_runs.up.sql").write_text(
        "CREATE TABLE runs (n integer NOT NULL, worker integer NOT NULL, started_at timestamptz,"
        " finished_at timestamptz NOT NULL DEFAULT clock_timestamp());\n"
    )
    (project / "sql" / "queries" / "runs.sql").write_text(
        "-- name: RecordRun :exec\nINSERT INTO runs (n, worker) VALUES ($1, $2);\n\n"
        "-- name: RecordTimedRun :exec\n"
        "INSERT INTO runs (n, worker, started_at) VALUES ($1, $2, $3);\n"
    )
    tasks = project / "chaos_app" / "tasks.py"
    source = tasks.read_text().replace(
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nimport asyncio\nimport datetime\nimport os\n",
    )
    source = source.replace(
        "from .gen.tasks import TaskExecutors",
        "from .gen.tasks import TaskExecutors\nfrom .gen.tasks.models import RecordRunParameters",
    )
    tasks.write_text(append_to_class(source, "Executors", executor))
    (project / "enqueue.py").write_text(ENQUEUE_SCRIPT)
    if customize is not None:
        customize(project)
    make(project, "gen")
    return project


class Workers:
    """Processes of the chaos project: workers (`python -m chaos_app worker`) or API servers
    (`serve`), with their output in files in the project."""

    def __init__(self, project: Path, url: str, **env: str) -> None:
        self.project = project
        self.env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        self.env.update(
            DATABASE_URL=url,
            WORKER_LEASE="1.5",
            WORKER_CONCURRENCY="10",
            LOG_LEVEL="warning",
            MIGRATE_ON_START="false",
        )
        self.env.update(env)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.log_of: dict[int, Path] = {}

    def log_tail(self, process: subprocess.Popen[bytes]) -> str:
        return self.log_of[process.pid].read_text(errors="replace")[-3000:]

    @property
    def python(self) -> str:
        return str(self.project / ".venv" / "bin" / "python")

    def run(self, *args: str) -> str:
        """Run the project's Python with `args` to completion; its output."""
        done = subprocess.run(
            [self.python, *args],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self, command: str = "worker", **env: str) -> subprocess.Popen[bytes]:
        """Start `python -m chaos_app <command>` (`worker`, or `serve` for an API process) with
        this instance's environment plus `env`."""
        # Output goes to a file: a pipe nobody reads fills up and blocks the worker's logging.
        log_file = self.project / f"{command}-{len(self.logs)}.log"
        self.logs.append(log_file)
        with log_file.open("wb") as output:
            process = subprocess.Popen(
                [self.python, "-m", "chaos_app", command],
                cwd=self.project,
                env={**self.env, **env},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.log_of[process.pid] = log_file
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.processes.remove(process)

    def stop_all(self) -> list[str]:
        """SIGTERM every worker; the log tails of those that did not exit cleanly."""
        errors = []
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.returncode not in (0, -signal.SIGTERM):
                errors.append(self.log_tail(process))
        self.processes.clear()
        return errors


async def counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT state, count(*) AS n FROM anchor_tasks WHERE name = 'recordRun' GROUP BY state"
        )
        result = {row["state"]: row["n"] for row in rows}
        result["runs"] = await conn.fetchval("SELECT count(*) FROM runs")
        result["distinct_runs"] = await conn.fetchval("SELECT count(DISTINCT n) FROM runs")
        result["retried"] = await conn.fetchval(
            "SELECT count(*) FROM anchor_tasks WHERE attempts > 1"
        )
        return result
    finally:
        await conn.close()


async def _busy_pids(url: str) -> set[int]:
    conn = await asyncpg.connect(url)
    try:
        owners = await conn.fetch(
            "SELECT DISTINCT lease_owner FROM anchor_tasks WHERE state = 'running'"
        )
    finally:
        await conn.close()
    # A worker's id is "<host>:<pid>:<random>".
    return {int(row["lease_owner"].split(":")[1]) for row in owners if row["lease_owner"]}


def busy_worker(workers: Workers, url: str, timeout: float = 30) -> subprocess.Popen[bytes]:
    """A worker process that holds a running task right now (waits until one does)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = asyncio.run(_busy_pids(url))
        candidates = [p for p in workers.processes if p.pid in busy]
        if candidates:
            return candidates[0]
        time.sleep(0.05)
    raise AssertionError(f"no worker was running a task within {timeout}s")


def wait_until_done(url: str, total: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        state = asyncio.run(counts(url))
        if state.get("completed", 0) >= total or time.monotonic() > deadline:
            return state
        time.sleep(0.3)


def log(message: str) -> None:
    print(message, file=sys.stderr)
