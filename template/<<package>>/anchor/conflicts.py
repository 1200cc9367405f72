"""`make check`'s guard against half-finished merges: conflict markers and `.rej` files.

`copier update` exits 0 even when it leaves conflicts, and an unresolved marker in a Python
file may only show up as a confusing syntax error later. This lists every one by file and line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .paths import PROJECT_ROOT

# Built from parts so that this file does not itself look like a conflict.
_MARKERS = ("<" * 7 + " ", ">" * 7 + " ", "=" * 7)


def project_files(root: Path) -> list[Path]:
    """Tracked and untracked-but-not-ignored files (everything under root without git)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        ignored = {".git", ".venv", ".anchor", "__pycache__", "node_modules"}
        return [p for p in root.rglob("*") if p.is_file() and not ignored & set(p.parts)]
    return [root / name for name in dict.fromkeys(listed.split("\0")) if name]


def find_conflicts(root: Path) -> list[str]:
    problems = []
    for path in project_files(root):
        relative = path.relative_to(root)
        if path.suffix in (".rej", ".orig"):
            problems.append(f"{relative}: leftover from a merge (`copier update --conflict rej`)")
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for number, line in enumerate(lines, 1):
            if line.startswith(_MARKERS[:2]) or line == _MARKERS[2]:
                problems.append(f"{relative}:{number}: unresolved conflict marker")
    return problems


def main() -> int:
    problems = find_conflicts(PROJECT_ROOT)
    if problems:
        print(
            "error: unresolved merge conflicts (resolve, then delete .rej files):", file=sys.stderr
        )
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
