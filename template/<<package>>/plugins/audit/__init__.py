"""Audit log: sign-ins, failed sign-ins and tasks that failed for good, in one table.

Signed-in users read their own account's events at `GET /api/plugins/audit/events`;
operators query `audit_events` directly. The `pruneAuditEvents` task deletes events older than
90 days every night.
"""

from .plugin import AuditPlugin

__all__ = ["AuditPlugin"]
