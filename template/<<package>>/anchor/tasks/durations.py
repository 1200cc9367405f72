"""Duration strings from tasks.yaml ("1h30m", "500ms", "2d") and retry delays.

Anclax accepted only Go durations and failed at run time on "1d" or "1m,2m"; here a bad
string is a `ValueError` that names it, raised when the spec is read, not when a task fails.
"""

from __future__ import annotations

import datetime as dt
import random
import re

from .contract import RetryPolicy

_UNITS = {
    "ms": dt.timedelta(milliseconds=1),
    "s": dt.timedelta(seconds=1),
    "m": dt.timedelta(minutes=1),
    "h": dt.timedelta(hours=1),
    "d": dt.timedelta(days=1),
}
_MAX_BACKOFF = dt.timedelta(days=365)  # backoff without max_interval stops doubling here
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> dt.timedelta:
    """Parse a sequence of `<number><unit>` parts (units ms, s, m, h, d) into a timedelta."""
    source = text.strip()
    if not source:
        raise ValueError("empty duration; expected e.g. '30s', '5m', '1h30m', '500ms' or '2d'")
    total = dt.timedelta()
    position = 0
    while position < len(source):
        match = _PART.match(source, position)
        if match is None:
            raise ValueError(
                f"invalid duration {text!r}: expected <number><unit> parts with units "
                "ms, s, m, h, d (e.g. '30s', '1h30m', '500ms')"
            )
        total += float(match[1]) * _UNITS[match[2]]
        position = match.end()
    return total


def format_duration(value: dt.timedelta) -> str:
    """The inverse of `parse_duration` for messages and round trips ("1h30m", "500ms")."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    if ms:
        parts.append(f"{ms}ms")
    return "".join(parts)


def retry_delay(
    policy: RetryPolicy, failed_attempt: int, *, rng: random.Random | None = None
) -> dt.timedelta:
    """How long to wait after attempt number `failed_attempt` (1-based) failed.

    Fixed or list: `intervals[n-1]`, the last one repeating. Backoff: `intervals[0] * 2**(n-1)`
    capped at `max_interval`. Jitter adds up to `jitter * delay` after the cap, so tasks that
    all hit the cap still spread out.
    """
    if not policy.intervals:
        return dt.timedelta()
    if policy.backoff:
        # In float seconds: a large attempt number would overflow timedelta before the cap.
        cap = policy.max_interval or _MAX_BACKOFF
        seconds = policy.intervals[0].total_seconds() * 2.0 ** min(max(failed_attempt - 1, 0), 64)
        delay = dt.timedelta(seconds=min(seconds, cap.total_seconds()))
    else:
        delay = policy.intervals[min(max(failed_attempt - 1, 0), len(policy.intervals) - 1)]
    if policy.jitter > 0:
        delay += delay * policy.jitter * (rng or random).random()
    return delay
