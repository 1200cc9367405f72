"""The project's command line: `python -m <package> serve|dev|migrate|gen`.

Nothing here imports the application (or the generated code) until a command needs it, so
`gen` works on a fresh checkout and `migrate` works when the handlers do not compile yet.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import pgembed
from .logs import configure_logging, logging_config
from .migrations import APP_TABLE, Migration, MigrationError, Migrator
from .paths import MIGRATIONS_DIR, PACKAGE_DIR
from .server import MIGRATION_SETS
from .settings import Settings, SettingsError, load_settings
from .tasks.admin import add_task_commands, run_task_command

log = logging.getLogger(__name__)


class CliError(Exception):
    """A problem to report in one line, without a traceback."""


def main(argv: Sequence[str] | None = None) -> None:
    package = PACKAGE_DIR.name
    parser = argparse.ArgumentParser(prog=f"python -m {package}", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API server (production style)")
    dev = commands.add_parser("dev", help="run the API server with auto-reload")
    for command in (serve, dev):
        command.add_argument("--host", help="bind address (default: HOST)")
        command.add_argument("--port", type=int, help="port (default: PORT)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")

    commands.add_parser("worker", help="run only the task worker (no HTTP server)")

    migrate = commands.add_parser("migrate", help="apply or inspect sql/migrations")
    migrate.add_argument("action", nargs="?", choices=["up", "down", "status"], default="up")
    migrate.add_argument("--steps", type=int, default=1, help="migrations to revert with `down`")

    commands.add_parser("gen", help="generate code from api/ and sql/ (same as `make gen`)")
    add_task_commands(commands)

    args = parser.parse_args(argv)
    try:
        if args.command == "gen":
            from .codegen.__main__ import main as gen_main

            sys.exit(gen_main([]))
        settings = _settings(package)
        configure_logging(settings.log_level, settings.log_format)  # LOG_LEVEL, LOG_FORMAT
        if args.command in ("serve", "dev"):
            _serve(package, settings, args, reload=args.command == "dev")
        elif args.command == "tasks":
            url = _database_url(package, settings)
            sys.exit(asyncio.run(run_task_command(args, url)))
        elif args.command == "worker":
            _work(package, settings)
        elif args.command == "migrate":
            _migrate(settings, args.action, args.steps)
    except (CliError, SettingsError, MigrationError, pgembed.EmbeddedPostgresError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        pgembed.stop()


def _settings(package: str) -> Settings:
    """The app's settings class if it has one (`<package>.settings.AppSettings`), else the base."""
    try:
        module = importlib.import_module(f"{package}.settings")
        cls: type[Settings] = getattr(module, "AppSettings", Settings)
    except ModuleNotFoundError:
        cls = Settings
    return load_settings(cls)


def _database_url(package: str, settings: Settings) -> str:
    """DATABASE_URL, or the embedded server's URL (exported so child processes reuse it)."""
    if settings.database_url:
        return settings.database_url
    url = pgembed.start(settings.embedded_pg_dir, package)
    os.environ["DATABASE_URL"] = url
    # Still the embedded database, so still development (see ENVIRONMENT) for the children.
    os.environ.setdefault("ENVIRONMENT", "development")
    return url


def _serve(package: str, settings: Settings, args: argparse.Namespace, *, reload: bool) -> None:
    import uvicorn

    _database_url(package, settings)  # start the embedded server once, in the supervisor
    _build(package, "create_app")  # a problem is one line here, not a traceback per process
    uvicorn.run(
        f"{package}.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        reload=reload,
        reload_dirs=[str(PACKAGE_DIR)] if reload else None,
        workers=None if reload else args.workers,
        log_level=settings.log_level,
        log_config=logging_config(settings.log_level, settings.log_format),  # for its processes
        access_log=reload,
    )


def _report(verb: str, migrations: list[Migration]) -> None:
    print(f"{verb} {len(migrations)} migration(s)" + "".join(f"\n  {m.label}" for m in migrations))


def _work(package: str, settings: Settings) -> None:
    from .worker_process import run_worker

    _database_url(package, settings)
    runtime = _build(package, "create_worker")
    asyncio.run(run_worker(runtime))


def _build(package: str, factory: str) -> Any:
    """`<package>.app.<factory>()` with settings re-read (DATABASE_URL may be set now), or a
    `CliError` for what is wrong with the app's definitions: code not generated yet, a handler
    or executor missing, a plugin clash."""
    from .plugins import PluginError

    try:
        app = importlib.import_module(f"{package}.app")
        return getattr(app, factory)(_settings(package))
    except ModuleNotFoundError as exc:
        hint = "; run `make gen`" if exc.name and ".gen" in exc.name else ""
        raise CliError(f"the app does not import: {exc}{hint}") from None
    except (TypeError, PluginError) as exc:
        raise CliError(f"the app cannot start: {exc}") from None


def _migration_sets(package: str) -> list[tuple[Path, str]]:
    """The framework's and the app's migrations, then those of the app's plugins.

    Plugins are listed by the app (`<package>.app.plugins()`) and installed packages; if the
    app does not import (say, mid-edit), only the first two are known, and we say so.
    """
    from .plugins import PluginError, Plugins

    sets = list(MIGRATION_SETS)
    try:
        app = importlib.import_module(f"{package}.app")
        plugins = Plugins.load(app.plugins())
    except (ImportError, TypeError, PluginError) as exc:
        log.warning("plugins' migrations skipped: the app's plugins do not load (%s)", exc)
        return sets
    return sets + plugins.migration_sets()


def _migrate(settings: Settings, action: str, steps: int) -> None:
    import asyncpg

    url = _database_url(PACKAGE_DIR.name, settings)
    migration_sets = _migration_sets(PACKAGE_DIR.name)

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            if action == "up":
                applied = [
                    m for d, t in migration_sets for m in await Migrator(d, table=t).up(conn)
                ]
                print(
                    f"applied {len(applied)} migration(s)"
                    + "".join(f"\n  {m.label}" for m in applied)
                )
            elif action == "down":  # the app's own migrations only
                reverted = await Migrator(MIGRATIONS_DIR, table=APP_TABLE).down(conn, steps)
                print(
                    f"reverted {len(reverted)} migration(s)"
                    + "".join(f"\n  {m.label}" for m in reverted)
                )
            else:
                for directory, table in migration_sets:
                    for entry in await Migrator(directory, table=table).status(conn):
                        state = "applied" if entry.applied else "pending"
                        print(f"{state}  {table}  {entry.migration.label}")
        finally:
            await conn.close()

    try:
        asyncio.run(run())
    except OSError as exc:
        raise CliError(f"cannot connect to the database: {exc}") from exc
