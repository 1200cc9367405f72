"""The audit plugin: records account and task events through Anchor's hooks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fastapi import APIRouter

from ...anchor.auth import Org, SignInFailure, User
from ...anchor.db import Connection, Database
from ...anchor.plugins import Plugin, PluginContext
from ...anchor.tasks import FailedTask, TaskDefinition
from .gen.api import build_router
from .gen.tasks import TaskRunner, task_definitions
from .handlers import AuditHandlers
from .tasks import AuditExecutors

RECORD = """
INSERT INTO audit_events (kind, user_id, subject, detail)
VALUES ($1, $2, $3, $4)
"""

# A failed sign-in is filed under the account it named, when there is one.
RECORD_FAILED_SIGN_IN = """
INSERT INTO audit_events (kind, user_id, subject, detail)
VALUES ('sign_in_failed', (SELECT id FROM anchor_users WHERE lower(name) = lower($1)), $1, $2)
"""


class AuditPlugin(Plugin):
    name = "audit"
    migrations_dir = Path(__file__).parent / "migrations"

    def __init__(self) -> None:
        self._db: Database | None = None
        self.tasks: TaskRunner | None = None  # enqueue the plugin's tasks (after setup)

    def setup(self, context: PluginContext) -> None:
        self._db = context.db
        self.tasks = TaskRunner(context.tasks)

    def task_definitions(self, context: PluginContext) -> Mapping[str, TaskDefinition]:
        return task_definitions(AuditExecutors())  # pruneAuditEvents, nightly

    def routes(self, context: PluginContext) -> APIRouter | None:
        if context.auth is None:  # an app without accounts has no one to show events to
            return None
        return build_router(AuditHandlers(context.db), auth=context.auth)

    async def on_signed_in(self, user: User, org: Org, session_id: int) -> None:
        await self._database().execute(
            RECORD, "signed_in", user.id, user.name, f"session {session_id}"
        )

    async def on_sign_in_failed(self, name: str, reason: SignInFailure) -> None:
        await self._database().execute(RECORD_FAILED_SIGN_IN, name, reason)

    async def on_task_failed(self, tx: Connection, failed: FailedTask) -> None:
        # In the transaction that marks the task failed: both commit or neither does.
        await tx.execute(
            RECORD, "task_failed", None, failed.name, f"task {failed.id}: {failed.error}"
        )

    def _database(self) -> Database:
        if self._db is None:
            raise RuntimeError("AuditPlugin.setup() has not run")
        return self._db
