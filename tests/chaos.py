"""A generated project with a task that records each run, driven as separate worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def build_chaos_project(template: Path, dst: Path) -> Path:
    project = render(template, dst, skip_tasks=True, package="chaos_app", project_name="Chaos")
    with (project / "api" / "tasks.yaml").open("a") as spec:
        spec.write(RECORD_TASK)
    (project / "sql" / "migrations" / "0002_runs.up.sql").write_text(
        "CREATE TABLE runs (n integer NOT NULL, worker integer NOT NULL);\n"
    )
    (project / "sql" / "queries" / "runs.sql").write_text(
        "-- name: RecordRun :exec\nINSERT INTO runs (n, worker) VALUES ($1, $2);\n"
    )
    tasks = project / "chaos_app" / "tasks.py"
    source = tasks.read_text().replace(
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\nimport asyncio\nimport os\n",
    )
    source = source.replace(
        "from .gen.tasks import TaskExecutors",
        "from .gen.tasks import TaskExecutors\nfrom .gen.tasks.models import RecordRunParameters",
    )
    tasks.write_text(source + EXECUTOR)
    (project / "enqueue.py").write_text(ENQUEUE_SCRIPT)
    make(project, "gen")
    return project


class Workers:
    """Worker processes of the chaos project (`python -m chaos_app worker`)."""

    def __init__(self, project: Path, url: str) -> None:
        self.project = project
        self.env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        self.env.update(
            DATABASE_URL=url,
            WORKER_LEASE="1.5",
            WORKER_CONCURRENCY="10",
            LOG_LEVEL="warning",
            MIGRATE_ON_START="false",
        )
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.log_of: dict[int, Path] = {}

    def log_tail(self, process: subprocess.Popen[bytes]) -> str:
        return self.log_of[process.pid].read_text(errors="replace")[-3000:]

    @property
    def python(self) -> str:
        return str(self.project / ".venv" / "bin" / "python")

    def run(self, *args: str) -> None:
        subprocess.run([self.python, *args], cwd=self.project, env=self.env, check=True)

    def start(self) -> subprocess.Popen[bytes]:
        # stderr goes to a file: a pipe nobody reads fills up and blocks the worker's logging.
        log_file = self.project / f"worker-{len(self.logs)}.log"
        self.logs.append(log_file)
        with log_file.open("wb") as stderr:
            process = subprocess.Popen(
                [self.python, "-m", "chaos_app", "worker"],
                cwd=self.project,
                env=self.env,
                stderr=stderr,
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


def wait_until_done(url: str, total: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        state = asyncio.run(counts(url))
        if state.get("completed", 0) >= total or time.monotonic() > deadline:
            return state
        time.sleep(0.3)


def log(message: str) -> None:
    print(message, file=sys.stderr)
