"""Cron expressions as the task engine reads them: 5 fields, or 6 with SECONDS FIRST.

- 5 fields: ``minute hour day-of-month month day-of-week`` (``"0 * * * *"``: every hour).
- 6 fields: ``second minute hour day-of-month month day-of-week``, the robfig/Anclax order
  (``"*/5 * * * * *"``: every 5 seconds). croniter puts seconds LAST by default; this module
  reads 6 fields with ``second_at_beginning=True``, so Anclax's expressions mean the same here.

Times are computed in UTC: ``"0 9 * * *"`` fires at 09:00 UTC, whatever the server's zone.
Field syntax is croniter's (lists, ranges, steps, month and weekday names; Sunday is 0 or 7;
day-of-month and day-of-week are alternatives when both are restricted). ``make gen`` checks
tasks.yaml with the stricter ``anchor.codegen.tasks.cron.check_cron``; this module also
accepts what croniter accepts beyond that (``L``, ``#``), but not descriptors (``@daily``) or
a 7th (year) field.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from croniter import CroniterError, croniter

UTC = dt.UTC
# A fixed start for the "does it ever fire" check, so validation does not depend on today.
_PROBE = dt.datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CronExpression:
    """A checked cron expression; every time it takes or returns is a UTC-aware datetime."""

    expression: str  # normalised: fields separated by single spaces
    has_seconds: bool

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first fire time strictly after `after`."""
        return to_utc(self._iter(after).get_next(dt.datetime))

    def latest_at_or_before(self, moment: dt.datetime) -> dt.datetime:
        """The last fire time at or before `moment`."""
        return to_utc(self._iter(self.next_after(moment)).get_prev(dt.datetime))

    def _iter(self, start: dt.datetime) -> croniter[dt.datetime]:
        return croniter(
            self.expression,
            to_utc(start),
            ret_type=dt.datetime,
            second_at_beginning=self.has_seconds,
        )


@functools.lru_cache(maxsize=256)
def parse_cron(expression: str) -> CronExpression:
    """Check `expression`; ValueError naming the expression and what is wrong with it."""
    if not isinstance(expression, str):
        raise ValueError(f"cron expression must be a string, not {type(expression).__name__}")
    fields = expression.split()
    if expression.strip().startswith("@"):
        raise ValueError(
            f"cron expression {expression!r}: descriptors (@hourly, @daily, ...) are not "
            "supported; write the fields out (e.g. '0 * * * *' for hourly)"
        )
    if len(fields) not in (5, 6):
        raise ValueError(
            f"cron expression {expression!r} has {len(fields)} field(s); expected 5 "
            "(minute hour day-of-month month day-of-week) or 6 with seconds first "
            "(second minute hour day-of-month month day-of-week)"
        )
    parsed = CronExpression(" ".join(fields), has_seconds=len(fields) == 6)
    try:
        parsed.next_after(_PROBE)
    except CroniterError as exc:
        reason = str(exc) or type(exc).__name__
        raise ValueError(f"invalid cron expression {expression!r}: {reason}") from exc
    return parsed


def next_fire_times(expression: str, after: dt.datetime, n: int = 5) -> list[dt.datetime]:
    """The next `n` fire times of `expression` strictly after `after`, in UTC.

    A naive `after` is taken as UTC. ValueError for a bad expression or a negative `n`.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0: {n}")
    cron = parse_cron(expression)
    times: list[dt.datetime] = []
    moment = to_utc(after)
    for _ in range(n):
        moment = cron.next_after(moment)
        times.append(moment)
    return times


def to_utc(moment: dt.datetime) -> dt.datetime:
    """`moment` in UTC; a naive datetime is taken as UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
