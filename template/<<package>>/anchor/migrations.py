"""Apply SQL migrations in order, exactly once, even when many processes start at once.

Files follow golang-migrate's naming, which sqlc reads as the schema too:
`<version>_<name>.up.sql` and an optional `<version>_<name>.down.sql`, where `<version>` is
digits (`0001`, or a timestamp). Each migration runs in its own transaction together with the
row that records it, so a failed migration leaves nothing behind. A file whose first line is
`-- anchor:no-transaction` runs outside a transaction (for `CREATE INDEX CONCURRENTLY`).

Applied versions are kept in a table per migration set (`anchor_migrations` for the app; the
framework and plugins use their own tables), and a PostgreSQL advisory lock serialises runners:
the second process to arrive waits, then finds nothing left to do.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

APP_TABLE = "anchor_migrations"
NO_TRANSACTION_MARKER = "-- anchor:no-transaction"
_FILE_NAME = re.compile(
    r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9_\-]+)\.(?P<direction>up|down)\.sql$"
)
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


class MigrationError(Exception):
    """A migration file is malformed, or a migration failed; the message names the file."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up_path: Path
    down_path: Path | None

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    def up_sql(self) -> str:
        return self.up_path.read_text(encoding="utf-8")

    def checksum(self) -> str:
        return hashlib.sha256(self.up_path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    migration: Migration
    applied: bool


def load_migrations(directory: Path) -> list[Migration]:
    """Read a migrations folder, rejecting names that do not parse and duplicate versions."""
    if not directory.is_dir():
        raise MigrationError(f"{directory}: migrations folder not found")
    ups: dict[int, Path] = {}
    downs: dict[int, Path] = {}
    names: dict[int, str] = {}
    for path in sorted(directory.iterdir()):
        if path.is_dir() or path.name.startswith("."):
            continue
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path}: not a migration file name; expected <version>_<name>.up.sql or .down.sql"
            )
        version = int(match["version"])
        target = ups if match["direction"] == "up" else downs
        if version in target:
            raise MigrationError(
                f"{path}: version {version} is also used by {target[version].name}"
            )
        if version in names and names[version] != match["name"]:
            raise MigrationError(
                f"{path}: version {version} is also used by another migration name"
            )
        target[version] = path
        names[version] = match["name"]
    for version, path in downs.items():
        if version not in ups:
            raise MigrationError(f"{path}: down migration without a matching .up.sql")
    return [Migration(v, names[v], ups[v], downs.get(v)) for v in sorted(ups)]


class Migrator:
    """Runs one migration set (a folder) against one bookkeeping table."""

    def __init__(self, directory: Path, *, table: str = APP_TABLE) -> None:
        if not _TABLE_NAME.match(table):
            raise ValueError(f"invalid migrations table name: {table!r}")
        self.directory = directory
        self.table = table
        # Two-int advisory lock key: a fixed namespace plus a hash of the table name.
        self._lock_key = int.from_bytes(
            hashlib.sha256(table.encode()).digest()[:4], "big", signed=True
        )

    async def up(self, conn: asyncpg.Connection[asyncpg.Record]) -> list[Migration]:
        """Apply every pending migration in version order; return the ones applied."""
        migrations = load_migrations(self.directory)
        applied_now: list[Migration] = []
        async with self._locked(conn):
            applied = await self._applied(conn)
            self._warn_about_drift(migrations, applied)
            for migration in migrations:
                if migration.version in applied:
                    continue
                await self._apply(conn, migration)
                applied_now.append(migration)
        return applied_now

    async def down(
        self, conn: asyncpg.Connection[asyncpg.Record], steps: int = 1
    ) -> list[Migration]:
        """Revert the last `steps` applied migrations, newest first."""
        by_version = {m.version: m for m in load_migrations(self.directory)}
        reverted: list[Migration] = []
        async with self._locked(conn):
            applied = sorted(await self._applied(conn), reverse=True)[:steps]
            for version in applied:
                migration = by_version.get(version)
                if migration is None or migration.down_path is None:
                    raise MigrationError(f"version {version}: no .down.sql file to revert it")
                sql = migration.down_path.read_text(encoding="utf-8")
                async with conn.transaction():
                    await self._run(conn, migration.down_path, sql)
                    await conn.execute(f"DELETE FROM {self.table} WHERE version = $1", version)
                log.info("reverted migration %s", migration.label)
                reverted.append(migration)
        return reverted

    async def status(self, conn: asyncpg.Connection[asyncpg.Record]) -> list[MigrationStatus]:
        migrations = load_migrations(self.directory)
        await self._ensure_table(conn)
        applied = await self._applied(conn)
        return [MigrationStatus(m, m.version in applied) for m in migrations]

    async def _apply(self, conn: asyncpg.Connection[asyncpg.Record], migration: Migration) -> None:
        sql = migration.up_sql()
        record = (
            f"INSERT INTO {self.table} (version, name, checksum) VALUES ($1, $2, $3)",
            migration.version,
            migration.name,
            migration.checksum(),
        )
        if sql.lstrip().startswith(NO_TRANSACTION_MARKER):
            await self._run(conn, migration.up_path, sql)
            await conn.execute(*record)
        else:
            async with conn.transaction():
                await self._run(conn, migration.up_path, sql)
                await conn.execute(*record)
        log.info("applied migration %s", migration.label)

    async def _run(self, conn: asyncpg.Connection[asyncpg.Record], path: Path, sql: str) -> None:
        try:
            await conn.execute(sql)
        except asyncpg.PostgresError as exc:
            position = getattr(exc, "position", None)
            where = f":{_line_of(sql, int(position))}" if position else ""
            raise MigrationError(f"{path}{where}: {exc.__class__.__name__}: {exc}") from exc

    async def _ensure_table(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {self.table} (
                version bigint PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"""
        )

    async def _applied(self, conn: asyncpg.Connection[asyncpg.Record]) -> dict[int, str]:
        rows = await conn.fetch(f"SELECT version, checksum FROM {self.table}")
        return {row["version"]: row["checksum"] for row in rows}

    def _warn_about_drift(self, migrations: Sequence[Migration], applied: dict[int, str]) -> None:
        known = {m.version: m for m in migrations}
        for version, checksum in applied.items():
            migration = known.get(version)
            if migration is None:
                log.warning("migration %s is applied but its file is gone", version)
            elif migration.checksum() != checksum:
                log.warning(
                    "%s changed after it was applied; edits are not re-run", migration.up_path
                )

    def _locked(self, conn: asyncpg.Connection[asyncpg.Record]) -> _AdvisoryLock:
        return _AdvisoryLock(conn, self._lock_key, self)


class _AdvisoryLock:
    """Session advisory lock held while migrating; creates the bookkeeping table under it."""

    NAMESPACE = 0x414E43  # "ANC"

    def __init__(
        self, conn: asyncpg.Connection[asyncpg.Record], key: int, migrator: Migrator
    ) -> None:
        self.conn, self.key, self.migrator = conn, key, migrator

    async def __aenter__(self) -> None:
        # Poll instead of blocking in pg_advisory_lock(): a session blocked in a statement holds
        # a snapshot, and CREATE INDEX CONCURRENTLY in the winner's migration would wait for it.
        delay = 0.02
        while not await self.conn.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", self.NAMESPACE, self.key
        ):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        await self.migrator._ensure_table(self.conn)

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.execute("SELECT pg_advisory_unlock($1, $2)", self.NAMESPACE, self.key)


def _line_of(text: str, position: int) -> int:
    """1-based line of a 1-based character position (as PostgreSQL reports errors)."""
    return text.count("\n", 0, max(position - 1, 0)) + 1


async def migrate_url(url: str, directory: Path, *, table: str = APP_TABLE) -> list[Migration]:
    """Connect, apply pending migrations, disconnect."""
    conn = await asyncpg.connect(url)
    try:
        return await Migrator(directory, table=table).up(conn)
    finally:
        await conn.close()
