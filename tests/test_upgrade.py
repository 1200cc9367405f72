"""`copier update` from one tagged template version to the next, with user edits in place."""

from __future__ import annotations

from pathlib import Path

import copier
import pytest

from .projects import git, make, snapshot_template

FRAMEWORK_FUNCTION = '\n\ndef framework_version() -> str:\n    return "1.1.0"\n'
FRAMEWORK_MIGRATION = "0003_upgrade_example"


MIGRATION = """_migrations:
  - version: v1.1.0
    command: ["<< _copier_python >>", "<< _copier_conf.src_path >>/hooks/move_file.py",
              "<< package >>/tasks.py", "<< package >>/task_executors.py",
              "--replace", "from .tasks import Executors=>from .task_executors import Executors",
              "--replace",
              "from << package >>.tasks import Executors=>from << package >>.task_executors import Executors"]
    when: "<< _stage == 'after' >>"
"""


def release_next_version(repo: Path) -> None:
    """v1.1.0 of the template: a runtime change, a framework migration, a Makefile change, and
    the user's executors module renamed (tasks.py -> task_executors.py) by a copier migration."""
    package = repo / "template" / "<<package>>"
    server = package / "anchor" / "server.py"
    server.write_text(server.read_text() + FRAMEWORK_FUNCTION)
    sql = package / "anchor" / "tasks" / "sql"
    (sql / f"{FRAMEWORK_MIGRATION}.up.sql").write_text(
        "ALTER TABLE anchor_tasks ADD COLUMN IF NOT EXISTS upgrade_note text;\n"
    )
    (sql / f"{FRAMEWORK_MIGRATION}.down.sql").write_text(
        "ALTER TABLE anchor_tasks DROP COLUMN IF EXISTS upgrade_note;\n"
    )
    makefile = repo / "template" / "Makefile.jinja"
    makefile.write_text(
        makefile.read_text() + "\nversion: ## Print the template version\n\t@echo 1.1.0\n"
    )
    git("mv", "template/<<package>>/tasks.py", "template/<<package>>/task_executors.py", cwd=repo)
    app = package / "app.py.jinja"
    app.write_text(app.read_text().replace("from .tasks import", "from .task_executors import"))
    test_tasks = repo / "template" / "tests" / "test_tasks.py.jinja"
    test_tasks.write_text(
        test_tasks.read_text().replace(
            ".tasks import Executors", ".task_executors import Executors"
        )
    )
    copier_yml = repo / "copier.yml"
    config = copier_yml.read_text().replace("_migrations: []\n", MIGRATION)
    copier_yml.write_text(
        config.replace(
            '<< package >>/tasks.py<% endif %>"\n',
            '<< package >>/tasks.py<% endif %>"\n'
            "  - \"<% if _copier_operation == 'update' %><< package >>/task_executors.py<% endif %>\"\n",
        )
    )
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "v1.1.0", cwd=repo)
    git("tag", "v1.1.0", cwd=repo)


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = snapshot_template(tmp_path_factory.mktemp("versions"), tag="v1.0.0")
    release_next_version(repo)
    return repo


def generate_and_commit(source: str, dst: Path, **data: object) -> Path:
    copier.run_copy(
        source, dst, data=data, defaults=True, unsafe=True, vcs_ref="v1.0.0", quiet=True
    )
    make(dst, "gen")
    commit_all(dst, "make gen")
    return dst


def commit_all(project: Path, message: str) -> None:
    git("add", "-A", cwd=project)
    git("commit", "-q", "-m", message, cwd=project)


def update(project: Path) -> None:
    copier.run_update(
        project, defaults=True, overwrite=True, unsafe=True, conflict="inline", quiet=True
    )


def make_user_edits(project: Path, package: str) -> None:
    """What a user does between two updates: runtime tweak, new operation, task, SQL."""
    server = project / package / "anchor" / "server.py"
    server.write_text(
        server.read_text().replace(
            "log = logging.getLogger(__name__)\n",
            "log = logging.getLogger(__name__)  # edited by us\n",
            1,
        )
    )
    spec = project / "api" / "v1.yaml"
    spec.write_text(
        spec.read_text().replace(
            "paths:\n",
            """paths:
  /api/v1/ping:
    get:
      operationId: ping
      security: []
      responses:
        "204": {description: alive}
""",
            1,
        )
    )
    handlers = project / package / "handlers.py"
    handlers.write_text(
        handlers.read_text() + "\n    async def ping(self) -> None:\n        return None\n"
    )
    with (project / "api" / "tasks.yaml").open("a") as tasks:
        tasks.write("  - name: sendDigest\n    description: Send the digest\n")
    executors = project / package / "tasks.py"
    executors.write_text(
        executors.read_text()
        + (
            "\n    async def execute_send_digest(self, ctx: TaskContext, tx: Transaction) -> None:\n"
            "        return None\n"
        )
    )
    (project / "sql" / "migrations" / "0002_notes.up.sql").write_text(
        "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL);\n"
    )
    (project / "sql" / "queries" / "notes.sql").write_text(
        "-- name: AddNote :one\nINSERT INTO notes (body) VALUES ($1) RETURNING id;\n"
    )
    make(project, "gen")
    commit_all(project, "user edits")


def assert_updated_cleanly(project: Path, package: str) -> None:
    assert git("ls-files", "-u", cwd=project) == ""
    assert list(project.rglob("*.rej")) == []
    server = (project / package / "anchor" / "server.py").read_text()
    assert "def framework_version()" in server  # the framework's change arrived
    assert "# edited by us" in server  # next to the user's edit in the same file
    assert "version: ## Print the template version" in (project / "Makefile").read_text()
    assert (
        project / package / "anchor" / "tasks" / "sql" / f"{FRAMEWORK_MIGRATION}.up.sql"
    ).exists()
    assert "operationId: ping" in (project / "api" / "v1.yaml").read_text()
    assert "async def ping" in (project / package / "handlers.py").read_text()
    assert "sendDigest" in (project / "api" / "tasks.yaml").read_text()
    # The copier migration moved the user's executors, edits included, and fixed the import.
    assert not (project / package / "tasks.py").exists()
    assert "execute_send_digest" in (project / package / "task_executors.py").read_text()
    assert "from .task_executors import Executors" in (project / package / "app.py").read_text()
    assert (project / "sql" / "queries" / "notes.sql").exists()
    assert "_commit: v1.1.0" in (project / ".copier-answers.yml").read_text()


def test_update_keeps_user_edits_and_brings_framework_changes(
    versions: Path, tmp_path: Path
) -> None:
    project = generate_and_commit(str(versions), tmp_path / "app")
    make_user_edits(project, "my_app")
    update(project)
    assert_updated_cleanly(project, "my_app")
    make(project, "gen")
    make(project, "test")
    make(project, "check")


def test_overlapping_edit_is_a_conflict_that_check_reports(versions: Path, tmp_path: Path) -> None:
    project = generate_and_commit(str(versions), tmp_path / "app")
    server = project / "my_app" / "anchor" / "server.py"
    server.write_text(server.read_text() + '\n\ndef our_version() -> str:\n    return "ours"\n')
    commit_all(project, "an edit where the framework changes too")
    update(project)
    check = make(project, "check", check=False)
    assert check.returncode != 0
    assert (
        "my_app/anchor/server.py:" in check.stderr and "unresolved conflict marker" in check.stderr
    )


def test_update_to_the_same_version_changes_nothing(versions: Path, tmp_path: Path) -> None:
    project = tmp_path / "app"
    copier.run_copy(str(versions), project, defaults=True, unsafe=True, quiet=True)  # v1.1.0
    make(project, "gen")
    commit_all(project, "make gen")
    update(project)
    assert git("status", "--porcelain", cwd=project) == ""


def test_update_from_a_git_url_with_non_default_answers(versions: Path, tmp_path: Path) -> None:
    project = generate_and_commit(
        f"git+file://{versions}",
        tmp_path / "billing",
        package="billing",
        project_name="Billing",
        http_port=9100,
    )
    make_user_edits(project, "billing")
    update(project)
    assert_updated_cleanly(project, "billing")
    assert "port: int = 9100" in (project / "billing" / "settings.py").read_text()
    make(project, "gen")
    make(project, "test")
