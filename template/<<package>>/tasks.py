"""Your task executors: one `execute_<task>` method per task in `api/tasks.yaml`.

`make gen` turns the spec into the `TaskExecutors` interface; a task without its method stops
the app at import, naming the task, and mypy reports it too. Each method runs in `tx`, a
transaction opened on first use that commits together with the task's completion: database
effects of a task happen exactly once. Raise to fail the attempt (it is retried per the
task's retryPolicy).
"""

from __future__ import annotations

from .anchor.tasks import TaskContext, Transaction
from .gen.db import Queries
from .gen.tasks import TaskExecutors


class Executors(TaskExecutors):
    def __init__(self, *, queries: Queries) -> None:
        self.queries = queries

    async def execute_increment_counter(self, ctx: TaskContext, tx: Transaction) -> None:
        await self.queries.with_db(tx).increment_counter()
