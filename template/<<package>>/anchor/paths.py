"""Where the project's definition files live, independent of the current directory."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
PROJECT_ROOT = PACKAGE_DIR.parent
MIGRATIONS_DIR = PROJECT_ROOT / "sql" / "migrations"
