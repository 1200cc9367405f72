"""Copier task, run once after `copier copy`: make the new project a git repository.

`copier update` needs the project in git, and a first commit lets the user see what
`make gen` and their own edits change. Skipped when the destination is already inside
a git work tree (e.g. a monorepo) or when git is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=False)


def main() -> int:
    if shutil.which("git") is None:
        print("anchor: git not found; skipping `git init` (copier update needs a git repo).")
        return 0
    if git("rev-parse", "--is-inside-work-tree").returncode == 0:
        print("anchor: already inside a git work tree; not creating a repository.")
        return 0
    git("init", "-q", "-b", "main")
    git("add", "-A")
    identity = []
    if not git("config", "user.email").stdout.strip():
        identity = ["-c", "user.name=Anchor", "-c", "user.email=anchor@localhost"]
    done = subprocess.run(
        ["git", *identity, "commit", "-q", "-m", "Generate project from the Anchor template"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"anchor: initial commit failed:\n{done.stderr}", file=sys.stderr)
        return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
