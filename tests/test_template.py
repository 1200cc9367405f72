"""Render the template with default and non-default answers, then use the project as a user would."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .projects import REPO, git, make, render


def unrendered_markers(project: Path) -> list[str]:
    found = []
    for path in project.rglob("*"):
        if (
            ".git" in path.parts
            or ".venv" in path.parts
            or ".anchor" in path.parts
            or not path.is_file()
        ):
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        if "<<" in path.name or "<% " in text or "<< " in text and " >>" in text:
            found.append(str(path.relative_to(project)))
    return found


def test_default_answers(default_project: Path) -> None:
    project = default_project
    package = project / "my_app"
    for path in [
        "api/v1.yaml",
        "sql/migrations/0001_init.up.sql",
        "sql/migrations/0001_init.down.sql",
        "sql/queries/counter.sql",
        "sqlc.yaml",
        "Makefile",
        "pyproject.toml",
        "README.md",
    ]:
        assert (project / path).is_file(), path
    assert (package / "handlers.py").is_file() and (package / "anchor" / "cli.py").is_file()
    assert (package / "gen" / "db").is_dir() and (package / "gen" / "api").is_dir()
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["package"] == "my_app" and answers["http_port"] == 8000
    assert answers["simple_auth"] is True and (package / "checks.py").is_file()
    assert (package / "plugins" / "audit" / "gen" / "api").is_dir()  # make gen did plugins too
    assert "port: int = 8000" in (package / "settings.py").read_text()
    assert unrendered_markers(project) == []
    # The copy task made a git repo with one commit, so `copier update` works later.
    assert git("log", "--oneline", cwd=project).count("\n") == 1


def test_default_project_checks_and_tests_pass(default_project: Path) -> None:
    make(default_project, "check")
    make(default_project, "test")


def test_make_gen_is_idempotent(default_project: Path) -> None:
    gen = default_project / "my_app" / "gen"
    before = {p: p.read_bytes() for p in gen.rglob("*.py")}
    mtimes = {p: p.stat().st_mtime_ns for p in before}
    out = make(default_project, "gen").stdout
    assert "0 changed" in out
    assert {p: p.read_bytes() for p in gen.rglob("*.py")} == before
    assert {p: p.stat().st_mtime_ns for p in before} == mtimes


def test_non_default_answers_without_tasks(template: Path, tmp_path: Path) -> None:
    project = render(
        template,
        tmp_path / "billing",
        skip_tasks=True,
        project_name="Billing Service",
        package="billing_api",
        description='Bills "things"',
        author="Ada <ada@example.com>",
        http_port=9123,
        simple_auth=False,
    )
    assert not (project / ".git").exists()
    # Without simple_auth: no account endpoints, no bearer security, no check rules.
    assert not (project / "billing_api" / "checks.py").exists()
    assert not (project / "tests" / "test_auth.py").exists()
    assert "security" not in (project / "api" / "v1.yaml").read_text()
    assert (project / "billing_api" / "app.py").is_file()
    assert "port: int = 9123" in (project / "billing_api" / "settings.py").read_text()
    assert 'description = "Bills \\"things\\""' in (project / "pyproject.toml").read_text()
    assert unrendered_markers(project) == []
    make(project, "gen")
    make(project, "check")
    make(project, "test")


@pytest.mark.parametrize(
    ("package", "message"),
    [
        ("1app", "not a valid Python package name"),
        ("my-app", "not a valid Python package name"),
        ("class", "would shadow"),
        ("fastapi", "would shadow"),
    ],
)
def test_invalid_package_name_is_rejected_with_a_clear_message(
    template: Path, tmp_path: Path, package: str, message: str
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "copier",
            "copy",
            "--trust",
            "--defaults",
            "--data",
            f"package={package}",
            str(template),
            str(tmp_path / "x"),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert message in done.stdout + done.stderr
    assert not (tmp_path / "x" / "pyproject.toml").exists()


def test_rendered_files_avoid_patterns_that_clash_with_the_delimiters() -> None:
    """Only `.jinja` files are rendered; in them a literal `<<` must not start a heredoc,
    a YAML merge key or a conflict marker (Jinja would read it as a variable)."""
    risky = re.compile(r"<<(<|-|:|\s*['\"A-Z_]{2,})")
    offenders = []
    for path in (REPO / "template").rglob("*.jinja"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if risky.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
