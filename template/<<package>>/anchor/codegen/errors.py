"""The one error type every generator raises for a problem in the user's definitions.

`make gen` prints it as ``path:line: message`` (the way compilers do) and exits non-zero,
without a traceback: a traceback would point at the generator, not at the user's file.
"""

from __future__ import annotations

from pathlib import Path


class GenError(Exception):
    """A definition file (OpenAPI spec, SQL, tasks spec) cannot be turned into code."""

    def __init__(
        self, message: str, *, path: str | Path | None = None, line: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


class GenWarning(UserWarning):
    """Something `make gen` can generate but that will likely not do what the user wants.

    Raised with `warnings.warn(GenWarning(located("...", path, line)))`; `make gen` prints it
    as ``warning: path:line: message`` and carries on.
    """


def located(message: str, path: str | Path | None, line: int | None = None) -> str:
    """``path:line: message``, the way GenError prints itself."""
    return str(GenError(message, path=path, line=line))
