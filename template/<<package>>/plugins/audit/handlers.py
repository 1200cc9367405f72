"""HTTP handlers of the audit plugin (its api.yaml)."""

from __future__ import annotations

from ...anchor.auth import Principal
from ...anchor.db import Database
from .gen.api import ApiHandlers
from .gen.api.models import AuditEvent

LIST_EVENTS = """
SELECT id, kind, subject, detail, created_at FROM audit_events
WHERE user_id = $1
ORDER BY id DESC
LIMIT $2
"""


class AuditHandlers(ApiHandlers):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_audit_events(self, principal: Principal, *, limit: int = 50) -> list[AuditEvent]:
        rows = await self.db.fetch(LIST_EVENTS, principal.user_id, limit)
        return [
            AuditEvent(
                id=row["id"],
                kind=row["kind"],
                subject=row["subject"],
                detail=row["detail"],
                created_at=row["created_at"],
            )
            for row in rows
        ]
