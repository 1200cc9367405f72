"""Bad definitions make `make gen` fail with the file (and line) named, never a traceback.

Each case edits the shared default project (see conftest.py) and restores the file afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .projects import make

Edit = Callable[[str], str]

CASES: list[tuple[str, str, Edit, list[str]]] = [
    (
        "invalid-yaml",
        "api/v1.yaml",
        lambda s: s.replace("paths:\n", "paths:\n  - [unclosed\n", 1),
        ["api/v1.yaml:"],
    ),
    (
        "unknown-ref",
        "api/v1.yaml",
        lambda s: s.replace('schemas/Counter"', 'schemas/Nope"', 1),
        ["api/v1.yaml", "#/components/schemas/Nope"],
    ),
    (
        "duplicate-operation-id",
        "api/v1.yaml",
        lambda s: s.replace("operationId: incrementCounter", "operationId: getCounter"),
        ["api/v1.yaml", "getCounter"],
    ),
    (
        "sql-syntax-error",
        "sql/queries/counter.sql",
        lambda s: s.replace("SELECT value FROM counter", "SELEC value FROM counter"),
        ["sql/queries/counter.sql:2:"],
    ),
    (
        "missing-column",
        "sql/queries/counter.sql",
        lambda s: s.replace("SELECT value FROM", "SELECT nope FROM"),
        ["sql/queries/counter.sql:2:", "nope"],
    ),
    (
        "bad-migration",
        "sql/migrations/0001_init.up.sql",
        lambda s: s.replace("CREATE TABLE", "CREATE TABLEE"),
        ["sql/migrations/0001_init.up.sql:1:"],
    ),
]


@pytest.mark.parametrize(("case", "relpath", "edit", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_definitions_fail_gen_naming_the_file(
    default_project: Path, case: str, relpath: str, edit: Edit, expected: list[str]
) -> None:
    path = default_project / relpath
    original = path.read_text()
    gen = default_project / "my_app" / "gen"
    before = {p: p.read_bytes() for p in gen.rglob("*.py")}
    path.write_text(edit(original))
    try:
        done = make(default_project, "gen", check=False)
    finally:
        path.write_text(original)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} not in:\n{output}"
    assert "Traceback" not in output
    # A failed generation writes nothing.
    assert {p: p.read_bytes() for p in gen.rglob("*.py")} == before
