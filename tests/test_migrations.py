"""The vendored migration runner against real PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest


@pytest.fixture
def migrations(template_package: str) -> ModuleType:
    return importlib.import_module(f"{template_package}.anchor.migrations")


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


BASIC = {
    "0001_events.up.sql": "CREATE TABLE events (id serial PRIMARY KEY, note text NOT NULL);",
    "0001_events.down.sql": "DROP TABLE events;",
    "0002_seed.up.sql": "INSERT INTO events (note) VALUES ('seeded');",
    "0002_seed.down.sql": "DELETE FROM events WHERE note = 'seeded';",
    "0010_index.up.sql": "-- anchor:no-transaction\nCREATE INDEX CONCURRENTLY events_note ON events (note);",
}


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


def test_applies_pending_in_order_once(
    migrations: ModuleType, database_url: str, tmp_path: Path
) -> None:
    directory = write(tmp_path / "m", BASIC)

    async def run() -> None:
        conn = await connect(database_url)
        try:
            migrator = migrations.Migrator(directory)
            applied = await migrator.up(conn)
            assert [m.label for m in applied] == ["0001_events", "0002_seed", "0010_index"]
            assert await migrator.up(conn) == []
            assert await conn.fetchval("SELECT count(*) FROM events") == 1
            versions = await conn.fetch("SELECT version FROM anchor_migrations ORDER BY version")
            assert [r["version"] for r in versions] == [1, 2, 10]
            assert (
                await conn.fetchval(
                    "SELECT count(*) FROM pg_indexes WHERE indexname = 'events_note'"
                )
                == 1
            )
            status = await migrator.status(conn)
            assert all(entry.applied for entry in status)
        finally:
            await conn.close()

    asyncio.run(run())


def test_many_runners_at_once_apply_each_migration_once(
    migrations: ModuleType, database_url: str, tmp_path: Path
) -> None:
    directory = write(tmp_path / "m", BASIC)

    async def one_runner() -> int:
        conn = await connect(database_url)
        try:
            return len(await migrations.Migrator(directory).up(conn))
        finally:
            await conn.close()

    async def run() -> None:
        counts = await asyncio.gather(*(one_runner() for _ in range(6)))
        assert sorted(counts) == [0, 0, 0, 0, 0, 3]
        conn = await connect(database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM events") == 1
        finally:
            await conn.close()

    asyncio.run(run())


def test_failed_migration_names_file_and_line_and_leaves_nothing(
    migrations: ModuleType, database_url: str, tmp_path: Path
) -> None:
    directory = write(
        tmp_path / "m",
        {
            "0001_ok.up.sql": "CREATE TABLE ok (id int);",
            "0002_broken.up.sql": "CREATE TABLE half (id int);\n\nINSERT INTO nowhere VALUES (1);\n",
        },
    )

    async def run() -> None:
        conn = await connect(database_url)
        try:
            with pytest.raises(migrations.MigrationError) as failure:
                await migrations.Migrator(directory).up(conn)
            assert "0002_broken.up.sql:3" in str(failure.value)
            assert 'relation "nowhere" does not exist' in str(failure.value)
            assert await conn.fetchval("SELECT to_regclass('half')") is None
            assert await conn.fetchval("SELECT to_regclass('ok')") == "ok"
            assert await conn.fetchval("SELECT array_agg(version) FROM anchor_migrations") == [1]
        finally:
            await conn.close()

    asyncio.run(run())


def test_down_reverts_newest_first(
    migrations: ModuleType, database_url: str, tmp_path: Path
) -> None:
    files = {k: v for k, v in BASIC.items() if not k.startswith("0010")}
    directory = write(tmp_path / "m", files)

    async def run() -> None:
        conn = await connect(database_url)
        try:
            migrator = migrations.Migrator(directory)
            await migrator.up(conn)
            reverted = await migrator.down(conn, steps=2)
            assert [m.label for m in reverted] == ["0002_seed", "0001_events"]
            assert await conn.fetchval("SELECT to_regclass('events')") is None
            assert await conn.fetchval("SELECT count(*) FROM anchor_migrations") == 0
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"init.up.sql": ""}, "init.up.sql: not a migration file name"),
        ({"0001_a.up.sql": "", "01_b.up.sql": ""}, "version 1 is also used"),
        ({"0002_x.down.sql": ""}, "down migration without a matching .up.sql"),
    ],
)
def test_malformed_folders_are_rejected_by_name(
    migrations: ModuleType, tmp_path: Path, files: dict[str, str], message: str
) -> None:
    directory = write(tmp_path / "m", files)
    with pytest.raises(migrations.MigrationError, match=message):
        migrations.load_migrations(directory)
