"""Durations as tasks.yaml spells them, and as the generated code spells them.

A duration is one or more ``<number><unit>`` parts with no spaces: ``500ms``, ``30s``, ``5m``,
``1h30m``, ``1.5h``, ``2d``. Units are ``ms``, ``s``, ``m``, ``h`` and ``d`` (24 hours). A bare
number is refused (``30`` could mean seconds or minutes), and so is anything finer than a
millisecond. The value is kept in whole milliseconds.
"""

from __future__ import annotations

import re
from decimal import Decimal

UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_PART.pattern})+")
HINT = "a number and a unit (ms, s, m, h, d) such as 30s, 5m or 1h30m"


def parse_duration(value: object) -> int:
    """Milliseconds in `value`; ValueError with a readable reason if it is not a duration."""
    text = value.strip() if isinstance(value, str) else None
    if text is None:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        reason = f"{value!r} has no unit" if is_number else "expected a duration"
        raise ValueError(f"{reason}; write {HINT}")
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{value!r} is not a duration; write {HINT}")
    total = sum(
        (Decimal(number) * UNIT_MS[unit] for number, unit in _PART.findall(text)), Decimal(0)
    )
    if total != total.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of milliseconds")
    return int(total)


def timedelta_source(ms: int) -> str:
    """``dt.timedelta(...)`` for `ms` milliseconds, in the largest units that add up exactly."""
    parts: list[str] = []
    for name, size in (
        ("days", 86_400_000),
        ("hours", 3_600_000),
        ("minutes", 60_000),
        ("seconds", 1000),
        ("milliseconds", 1),
    ):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{name}={count}")
    return f"dt.timedelta({', '.join(parts) or '0'})"
