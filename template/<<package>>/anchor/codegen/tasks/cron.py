"""Check a cron expression the way the task engine will read it.

Five fields (minute hour day-of-month month day-of-week) or six with seconds first
(second minute hour day-of-month month day-of-week), the forms croniter reads with
``second_at_beginning=True``. Each field is a comma-separated list of ``*``, a value, a range
``a-b``, each optionally followed by a step ``/n``. Months and weekdays also take names
(``JAN``-``DEC``, ``SUN``-``SAT``); Sunday is 0 or 7. Descriptors (``@hourly``), ``L``, ``W``,
``#`` and wrap-around ranges (``22-2``) are not accepted: every expression that passes here means
the same thing to every cron implementation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] is low + i


_SECOND = _Field("second", 0, 59)
_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field(
        "month",
        1,
        12,
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
    ),
    _Field("day of week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_ITEM = re.compile(r"(?:(\*)|(\w+)(?:-(\w+))?)(?:/(\w+))?")


def check_cron(expression: str) -> str:
    """`expression` with single spaces between fields; ValueError saying what is wrong."""
    fields = expression.split()
    specs: tuple[_Field, ...]
    if len(fields) == 5:
        specs = _FIELDS
    elif len(fields) == 6:
        specs = (_SECOND, *_FIELDS)
    else:
        raise ValueError(
            f"cron expression {expression!r} has {len(fields)} fields; expected 5 "
            "(minute hour day-of-month month day-of-week) or 6 with seconds first"
        )
    values = [
        set().union(*(_check_item(item, spec, expression) for item in text.split(",")))
        for text, spec in zip(fields, specs, strict=True)
    ]
    days, months, weekdays = values[-3], values[-2], {day % 7 for day in values[-1]}
    # With a restricted day of the week, it and the day of the month are alternatives.
    if len(weekdays) == 7 and not any(day <= _MONTH_DAYS[m] for day in days for m in months):
        raise ValueError(f"cron expression {expression!r} never fires: no such day in those months")
    return " ".join(fields)


_MONTH_DAYS = {
    1: 31,
    2: 29,
    3: 31,
    4: 30,
    5: 31,
    6: 30,
    7: 31,
    8: 31,
    9: 30,
    10: 31,
    11: 30,
    12: 31,
}


def _check_item(item: str, spec: _Field, expression: str) -> set[int]:
    """The values `item` stands for; ValueError if it is not valid in `spec`'s field."""
    where = f"cron expression {expression!r}: {spec.name} {item!r}"
    match = _ITEM.fullmatch(item)
    if match is None:
        raise ValueError(f"{where} is not *, a value, a range a-b or one of those with /step")
    star, first, last, step = match.groups()
    low, high = spec.low, spec.high
    if star is None:
        low = _value(first, spec, where)
        high = _value(last, spec, where) if last is not None else low
        if high < low:
            raise ValueError(f"{where}: the range goes backwards; write it as a list")
        if step is not None and last is None:
            high = spec.high  # `5/15`: from 5 on, every 15
    size = spec.high - spec.low + 1
    if step is not None and (not step.isdigit() or not 1 <= int(step) <= size):
        raise ValueError(f"{where}: the step must be a number from 1 to {size}")
    return set(range(low, high + 1, int(step) if step is not None else 1))


def _value(text: str, spec: _Field, where: str) -> int:
    if text.isdigit():
        value = int(text)
        if not spec.low <= value <= spec.high:
            raise ValueError(f"{where}: {value} is out of range {spec.low}-{spec.high}")
        return value
    if text.upper() in spec.names:
        return spec.low + spec.names.index(text.upper())
    allowed = f" or a name ({spec.names[0]}-{spec.names[-1]})" if spec.names else ""
    raise ValueError(f"{where}: {text!r} is not a number {spec.low}-{spec.high}{allowed}")
