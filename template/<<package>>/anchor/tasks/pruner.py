"""Deletes finished tasks (completed, failed, cancelled) and their attempt rows once they are
older than the retention period.

It walks the table in primary-key windows of `batch_size` rows, one short autocommit
statement per window, locking only the rows it deletes (SKIP LOCKED: a row someone else
holds, e.g. an admin retrying it, is left for the next run). It stops at the first window
created entirely after the cutoff: ids grow with time and a task finishes after it is
created, so no later row can be due. An advisory lock keeps concurrent pruners (one per
replica) from doing the same work twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging

from .connections import DB_ERRORS, PoolSource, resolve_pool
from .periodic import Periodic

log = logging.getLogger(__name__)

# pg_try_advisory_lock key: one pruning pass at a time per database ("anchor_p" in ASCII).
ADVISORY_LOCK_KEY = 0x616E63686F725F70

_CUTOFF = "SELECT now() - $1::interval"

# $1 last id of the previous window, $2 window size, $3 cutoff. Deleting the attempts in the
# same statement is set-based; ON DELETE CASCADE then finds nothing left to do.
_PRUNE_WINDOW = """
WITH win AS (
    SELECT id, created_at FROM anchor_tasks WHERE id > $1 ORDER BY id LIMIT $2
), doomed AS (
    SELECT id FROM anchor_tasks
    WHERE id > $1 AND id <= (SELECT max(id) FROM win)
      AND state IN ('completed', 'failed', 'cancelled') AND finished_at < $3
    FOR UPDATE SKIP LOCKED
), attempts AS (
    DELETE FROM anchor_task_attempts a USING doomed WHERE a.task_id = doomed.id
), deleted AS (
    DELETE FROM anchor_tasks t USING doomed WHERE t.id = doomed.id RETURNING t.id
)
SELECT (SELECT count(*) FROM deleted) AS deleted,
       (SELECT max(id) FROM win) AS last_id,
       (SELECT min(created_at) FROM win) AS oldest
"""


class Pruner:
    """Runs `prune_once` every `interval` (seconds or a timedelta), starting at `start()`."""

    def __init__(
        self,
        db: PoolSource,
        retention: dt.timedelta = dt.timedelta(days=7),
        interval: dt.timedelta | float = dt.timedelta(hours=1),
        *,
        batch_size: int = 10_000,
        statement_timeout: float = 60.0,
    ) -> None:
        if retention < dt.timedelta():
            raise ValueError("retention must not be negative")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._db = db
        self.retention = retention
        self.interval = interval.total_seconds() if isinstance(interval, dt.timedelta) else interval
        if self.interval <= 0:
            raise ValueError("interval must be positive")
        self.batch_size = batch_size
        self.statement_timeout = statement_timeout
        self._periodic = Periodic(self.prune_once, self.interval, name="anchor-task-pruner")

    async def start(self) -> None:
        """Start pruning in the background (a first pass at once); returns at once."""
        await self._periodic.start()

    async def stop(self) -> None:
        """Stop, interrupting a pass between (or during) statements; each is atomic."""
        await self._periodic.stop()

    async def prune_once(self) -> int:
        """Delete the finished tasks older than `retention`; return how many were deleted
        (0 when another pruner holds the advisory lock).
        """
        deleted = 0
        async with resolve_pool(self._db).acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY):
                log.debug("another pruner is running; skipping this pass")
                return 0
            try:
                cutoff = await conn.fetchval(_CUTOFF, self.retention)
                last_id = 0
                while True:
                    row = await conn.fetchrow(
                        _PRUNE_WINDOW,
                        last_id,
                        self.batch_size,
                        cutoff,
                        timeout=self.statement_timeout,
                    )
                    assert row is not None
                    deleted += int(row["deleted"])
                    if row["last_id"] is None or row["oldest"] >= cutoff:
                        break
                    last_id = row["last_id"]
            finally:
                if not conn.is_closed():
                    with contextlib.suppress(*DB_ERRORS):
                        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
        if deleted:
            log.info("pruned %d finished task(s) older than %s", deleted, self.retention)
        return deleted
