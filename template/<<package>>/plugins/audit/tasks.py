"""Task executors of the audit plugin (its tasks.yaml)."""

from __future__ import annotations

from ...anchor.tasks import TaskContext, Transaction
from .gen.tasks import TaskExecutors
from .gen.tasks.models import PruneAuditEventsParameters

PRUNE = "DELETE FROM audit_events WHERE created_at < now() - make_interval(days => $1)"


class AuditExecutors(TaskExecutors):
    async def execute_prune_audit_events(
        self, ctx: TaskContext, tx: Transaction, params: PruneAuditEventsParameters
    ) -> int:
        status = await tx.execute(PRUNE, params.retention_days)
        return int(status.split()[-1])  # "DELETE <n>": kept as the task's result
