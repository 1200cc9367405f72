"""Your HTTP handlers: one method per operationId in `api/v1.yaml`.

`make gen` turns the spec into the `ApiHandlers` interface; a method you have not written
yet makes the import fail, naming the operation, and mypy reports it too. Raise
`fastapi.HTTPException` for error responses.
"""

from __future__ import annotations

from .anchor.db import Database
from .gen.api import ApiHandlers
from .gen.api.models import Counter
from .gen.db import Queries
from .gen.tasks import TaskRunner


class Handlers(ApiHandlers):
    def __init__(self, *, db: Database, queries: Queries, tasks: TaskRunner) -> None:
        self.db = db
        self.queries = queries
        self.tasks = tasks  # enqueue background tasks: `await self.tasks.run_<task>(..., tx=tx)`

    async def get_counter(self) -> Counter:
        value = await self.queries.get_counter()
        return Counter(count=value or 0)

    async def increment_counter(self) -> Counter:
        async with self.db.transaction() as tx:
            queries = self.queries.with_db(tx)
            await queries.increment_counter()
            value = await queries.get_counter()
        return Counter(count=value or 0)
