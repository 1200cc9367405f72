"""The auth tables, migrated apart from the app's (own folder, own bookkeeping table).

They must be applied before the app's migrations when app tables reference `anchor_users`
or `anchor_orgs`: list this set before the app's in `server.MIGRATION_SETS`.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from ..migrations import Migration, Migrator

MIGRATIONS_DIR = Path(__file__).parent / "sql"
MIGRATIONS_TABLE = "anchor_auth_migrations"


def migrator() -> Migrator:
    return Migrator(MIGRATIONS_DIR, table=MIGRATIONS_TABLE)


async def migrate(conn: asyncpg.Connection[asyncpg.Record]) -> list[Migration]:
    """Create or upgrade the auth tables; safe to run from many processes at once."""
    return await migrator().up(conn)
