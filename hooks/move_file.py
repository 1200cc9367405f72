"""Copier migration step: move a file the template relocated, keeping the user's edits.

Run from a `_migrations` entry in copier.yml, in the project, after the update's merge:

    python move_file.py OLD NEW [--replace "OLD TEXT=>NEW TEXT" ...] [--in FILE ...]

Moves OLD to NEW (`git mv` when the project is a git repository) if OLD exists and NEW does
not, then applies each replacement (e.g. an import path) to the files given with `--in`, or to
every Python file of the project without it.
Running it twice changes nothing, so an interrupted update can simply be repeated.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

SKIPPED_DIRS = {".git", ".venv", ".anchor", "__pycache__", "node_modules"}


def move(old: Path, new: Path) -> bool:
    if not old.exists() or new.exists():
        return False
    new.parent.mkdir(parents=True, exist_ok=True)
    in_git = subprocess.run(
        ["git", "ls-files", "--error-unmatch", str(old)], capture_output=True, check=False
    )
    if in_git.returncode == 0:
        subprocess.run(["git", "mv", str(old), str(new)], check=True)
    else:
        shutil.move(old, new)
    return True


def python_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.py") if not SKIPPED_DIRS & set(p.relative_to(root).parts)]


def replace_in(paths: list[Path], old_text: str, new_text: str) -> list[Path]:
    changed = []
    for path in paths:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        if old_text in text:
            path.write_text(text.replace(old_text, new_text), encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--replace", action="append", default=[], metavar="OLD=>NEW")
    parser.add_argument("--in", dest="files", action="append", type=Path, default=[])
    args = parser.parse_args(argv)
    if move(args.old, args.new):
        print(f"anchor: moved {args.old} to {args.new}")
    for pair in args.replace:
        old_text, separator, new_text = pair.partition("=>")
        if not separator:
            parser.error(f"--replace needs OLD=>NEW, got {pair!r}")
        for path in replace_in(args.files or python_files(Path.cwd()), old_text, new_text):
            print(f"anchor: updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
