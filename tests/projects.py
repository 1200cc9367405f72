"""Helpers for tests that render the template and drive the generated project."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import copier

REPO = Path(__file__).resolve().parent.parent


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


def snapshot_template(dst: Path, tag: str = "v999.0.0") -> Path:
    """A git repo holding the template as it is in the work tree now (committed or not), tagged."""
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO)
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dst / name)
    git("init", "-q", "-b", "main", cwd=dst)
    git("add", "-A", cwd=dst)
    git("commit", "-q", "-m", "template snapshot", cwd=dst)
    git("tag", tag, cwd=dst)
    return dst


def render(template: Path, dst: Path, *, skip_tasks: bool = False, **data: Any) -> Path:
    copier.run_copy(
        str(template), dst, data=data, defaults=True, unsafe=True, skip_tasks=skip_tasks, quiet=True
    )
    return dst


def make(project: Path, *targets: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run make in a generated project; on failure the assertion shows make's output."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "DATABASE_URL"}}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    done = subprocess.run(
        ["make", *targets], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    if check:
        assert done.returncode == 0, (
            f"make {' '.join(targets)} failed:\n{done.stdout}\n{done.stderr}"
        )
    return done
