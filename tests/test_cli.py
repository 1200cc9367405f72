"""The generated project's command line, run as a user would: serve, migrate, bad config, missing handler."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from .projects import make


def project_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "DATABASE_URL"}}
    return {**env, **extra}


def python(project: Path) -> str:
    return str(project / ".venv" / "bin" / "python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def embedded_postgres_processes(project: Path) -> list[psutil.Process]:
    data_dir = str(project / ".anchor" / "pgdata")
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and data_dir in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def request(
    port: int, path: str, method: str = "GET", body: object = None, token: str = ""
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers=headers, method=method
    )
    with urllib.request.urlopen(req, timeout=5) as response:
        return dict(json.loads(response.read()))


def test_serve_runs_on_embedded_postgres_and_stops_it_on_sigterm(default_project: Path) -> None:
    """Development out of the box: no DATABASE_URL, no AUTH_SECRET (one is generated)."""
    port = free_port()
    env = project_env(PORT=str(port), LOG_LEVEL="warning")
    del env["AUTH_SECRET"]
    server = subprocess.Popen(
        [python(default_project), "-m", "my_app", "serve"], cwd=default_project, env=env
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "server exited early"
            try:
                assert request(port, "/readyz") == {"status": "ok"}
                break
            except OSError:
                assert time.monotonic() < deadline, "server not ready in 60s"
                time.sleep(0.3)
        assert embedded_postgres_processes(default_project), "no embedded PostgreSQL running"
        account = {"name": f"cli_{port}", "password": "correct horse battery"}
        token = request(port, "/api/v1/auth/sign-up", "POST", account)["accessToken"]
        before = request(port, "/api/v1/counter")["count"]
        assert request(port, "/api/v1/counter", "POST", token=token) == {"count": before + 1}
        secret = default_project / ".anchor" / "auth-secret"
        assert secret.stat().st_mode & 0o777 == 0o600
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    deadline = time.monotonic() + 10
    while embedded_postgres_processes(default_project) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert embedded_postgres_processes(default_project) == []


def test_migrate_applies_once_and_reports_status(default_project: Path) -> None:
    data = default_project / ".anchor" / "migrate-test"
    env = project_env(EMBEDDED_PG_DIR=str(data))
    run = [python(default_project), "-m", "my_app", "migrate"]
    first = subprocess.run(
        run, cwd=default_project, env=env, capture_output=True, text=True, check=True
    )
    # The framework's (tasks, accounts), then the app's, then its plugins' (the audit log).
    labels = [line.strip() for line in first.stdout.splitlines()[1:]]
    assert first.stdout.split()[:3] == ["applied", "5", "migration(s)"]
    assert [label.split("_")[0] for label in labels] == ["0001", "0002", "0001", "0001", "0001"]
    assert [label.split("_", 1)[1] for label in labels][2:] == ["auth", "init", "audit_events"]
    again = subprocess.run(
        run, cwd=default_project, env=env, capture_output=True, text=True, check=True
    )
    assert "applied 0 migration(s)" in again.stdout
    status = subprocess.run(
        [*run, "status"], cwd=default_project, env=env, capture_output=True, text=True, check=True
    )
    assert "applied  anchor_migrations  0001_init" in status.stdout
    assert "applied  anchor_plugin_audit_migrations  0001_audit_events" in status.stdout
    assert "pending" not in status.stdout


def test_invalid_settings_name_the_variable(default_project: Path) -> None:
    done = subprocess.run(
        [python(default_project), "-m", "my_app", "serve"],
        cwd=default_project,
        env=project_env(PORT="eighty", LOG_LEVEL="loud"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "PORT" in done.stderr and "LOG_LEVEL" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_handler_fails_at_import_and_in_mypy(default_project: Path) -> None:
    handlers = default_project / "my_app" / "handlers.py"
    original = handlers.read_text()
    start = original.index("    async def increment_counter")
    handlers.write_text(original[:start].rstrip() + "\n")
    try:
        imported = subprocess.run(
            [python(default_project), "-c", "import my_app.app"],
            cwd=default_project,
            env=project_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        typecheck = make(default_project, "typecheck", check=False)
    finally:
        handlers.write_text(original)
    assert imported.returncode != 0
    assert "Handlers does not implement operations: incrementCounter (increment_counter)" in (
        imported.stderr
    )
    assert typecheck.returncode != 0
    assert "increment_counter" in typecheck.stdout


def test_serve_and_worker_report_an_app_that_cannot_start_in_one_line(
    default_project: Path,
) -> None:
    app = default_project / "my_app" / "app.py"
    original = app.read_text()
    app.write_text(
        original.replace("return [AuditPlugin()]", "return [AuditPlugin(), AuditPlugin()]")
    )
    try:
        results = [
            subprocess.run(
                [python(default_project), "-m", "my_app", command],
                cwd=default_project,
                env=project_env(PORT=str(free_port())),
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            for command in ("serve", "worker")
        ]
    finally:
        app.write_text(original)
    for done in results:
        assert done.returncode == 1
        assert "error: the app cannot start: plugin 'audit'" in done.stderr
        assert "another plugin is already named 'audit'" in done.stderr
        assert "Traceback" not in done.stderr


def test_check_reports_conflict_markers_and_rej_files(default_project: Path) -> None:
    handlers = default_project / "my_app" / "handlers.py"
    original = handlers.read_text()
    marker = "<" * 7
    handlers.write_text(
        original + f"{marker} before updating\nx = 1\n{'=' * 7}\nx = 2\n{'>' * 7} after\n"
    )
    rej = default_project / "Makefile.rej"
    rej.write_text("@@ rejected hunk\n")
    try:
        done = make(default_project, "check", check=False)
    finally:
        handlers.write_text(original)
        rej.unlink()
    assert done.returncode != 0
    lines = len(original.splitlines())
    assert f"my_app/handlers.py:{lines + 1}: unresolved conflict marker" in done.stderr
    assert f"my_app/handlers.py:{lines + 3}: unresolved conflict marker" in done.stderr
    assert "Makefile.rej: leftover from a merge" in done.stderr
    make(default_project, "check")


def test_tasks_admin_commands(default_project: Path) -> None:
    env = project_env(EMBEDDED_PG_DIR=str(default_project / ".anchor" / "admin-test"))
    cli = [python(default_project), "-m", "my_app"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], cwd=default_project, env=env, capture_output=True, text=True, check=False
        )

    assert run("migrate").returncode == 0
    listed = run("tasks", "list")
    assert listed.returncode == 0, listed.stderr
    missing = run("tasks", "show", "999999")
    assert missing.returncode == 1
    assert "999999" in missing.stderr and "Traceback" not in missing.stderr
