"""Read api/tasks.yaml into checked task definitions.

The file has one top-level key, ``tasks``, a list of tasks::

    tasks:
      - name: SendEmail                 # required; the name the engine stores and dispatches on
        description: Send an email      # the docstring of the generated methods
        parameters:                     # a JSON Schema object; no parameters if absent
          type: object
          required: [email]
          properties:
            email: {type: string, format: email}
        retryPolicy:
          interval: 5m                  # see below
          maxAttempts: 3                # runs in all, including the first; -1: unlimited
        cronjob:
          cronExpression: "0 * * * *"   # 5 fields, or 6 with seconds first
        timeout: 30s                    # each attempt's limit
        delay: 10s                      # wait before the first attempt
        priority: 10                    # higher runs first; default 0
        queue: emails                   # default "default"
        labels: [smtp]                  # workers must have all of these labels
        events: [onFailed]              # generate on_<task>_failed, run once retries are spent

``retryPolicy.interval`` is the wait before each retry, in one of three forms:

- one duration, ``5m``: every retry waits 5 minutes;
- a list, ``1m,5m,30m`` or a YAML list ``[1m, 5m, 30m]``: the waits before the 2nd, 3rd, 4th
  attempt; the last one repeats;
- exponential backoff, a mapping ``{initial: 1s, max: 5m, jitter: 0.1}``: the wait starts at
  ``initial`` and doubles after each failed attempt, up to ``max`` (optional; unbounded without
  it); ``jitter`` (optional, 0 to 1, default 0) adds up to that fraction of the wait at random.

Durations are ``<number><unit>`` parts, units ms, s, m, h and d: ``500ms``, ``1h30m``, ``2d``.
Every problem is a GenError with the file, the line and the task's name.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, NoReturn

from ..errors import GenError, GenWarning, located
from ..openapi.source import Location, Source
from ..openapi.spec import snake_case
from .cron import check_cron
from .durations import parse_duration
from .schema import check_parameters, nested_locations

TASK_KEYS = (
    "name",
    "description",
    "parameters",
    "retryPolicy",
    "cronjob",
    "timeout",
    "delay",
    "priority",
    "queue",
    "labels",
    "events",
)
RETRY_KEYS = ("interval", "maxAttempts")
BACKOFF_KEYS = ("initial", "max", "jitter")
CRON_KEYS = ("cronExpression", "parameters")
EVENTS = ("onFailed",)
INT32 = (-(2**31), 2**31 - 1)
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Retry:
    """A retry policy, durations in milliseconds (see RetryPolicy in anchor/tasks/contract.py)."""

    intervals: tuple[int, ...]
    max_attempts: int
    backoff: bool = False
    max_interval: int | None = None
    jitter: float = 0.0


@dataclass(frozen=True)
class Task:
    """One checked task of tasks.yaml; durations in milliseconds."""

    name: str
    line: int | None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    retry: Retry | None = None
    cron: str | None = None
    cron_params: dict[str, Any] | None = None  # the parameters every scheduled run gets
    timeout: int | None = None
    delay: int | None = None
    priority: int | None = None
    queue: str | None = None
    labels: tuple[str, ...] = ()
    on_failed: bool = False

    @property
    def snake(self) -> str:
        """``SendEmail`` -> ``send_email``: the stem of the generated method names."""
        return snake_case(self.name)

    @property
    def constant(self) -> str:
        """``SEND_EMAIL``: the name of the task's name constant."""
        return self.snake.upper()

    @property
    def class_stem(self) -> str:
        """``SendEmail``, ``incrementCounter`` -> ``IncrementCounter``."""
        return self.name[0].upper() + self.name[1:]

    @property
    def params_class(self) -> str | None:
        return f"{self.class_stem}Parameters" if self.parameters is not None else None


def parse(source: Source) -> list[Task]:
    """The tasks of `source`, in file order; GenError at the first problem."""
    return _Parser(source).parse()


class _Parser:
    def __init__(self, source: Source) -> None:
        self.source = source

    def fail(self, message: str, location: Location, task: str | None = None) -> NoReturn:
        raise self.source.error(f"task {task}: {message}" if task else message, location)

    def parse(self) -> list[Task]:
        data = self.source.data
        if data is None:
            raise GenError(
                "the file is empty; expected `tasks:` with a list of tasks",
                path=self.source.display_path,
                line=1,
            )
        if not isinstance(data, dict):
            self.fail("expected a mapping with `tasks:`, a list of tasks", ())
        for key in data:
            if key != "tasks":
                self.fail(f"unknown top-level key {key!r}; expected only `tasks`", (key,))
        raw = data.get("tasks")
        if raw is None and "tasks" not in data:
            self.fail("missing `tasks:`, a list of tasks", ())
        if raw is None:
            return []
        if isinstance(raw, dict):
            self.fail(
                "`tasks` must be a list of tasks, each with a `name` (`- name: SendEmail`), "
                "not a mapping of names to tasks",
                ("tasks",),
            )
        if not isinstance(raw, list):
            self.fail("`tasks` must be a list of tasks", ("tasks",))
        tasks = [self.task(item, ("tasks", index)) for index, item in enumerate(raw)]
        self.check_names(tasks)
        return tasks

    def check_names(self, tasks: list[Task]) -> None:
        by_snake: dict[str, Task] = {}
        models: dict[str, tuple[str, int | None]] = {}
        for index, task in enumerate(tasks):
            first = by_snake.get(task.snake)
            if first is not None:
                problem = (
                    f"is defined twice (first at line {first.line})"
                    if first.name == task.name
                    else f"and task {first.name} (line {first.line}) both become "
                    f"{task.snake} in Python; rename one"
                )
                self.fail(problem, ("tasks", index, "name"), task.name)
            by_snake[task.snake] = task
        # Model names: each task's parameters class and its nested models must be distinct.
        for index, task in enumerate(tasks):
            if task.params_class is None or task.parameters is None:
                continue
            location: Location = ("tasks", index, "parameters")
            names = [(task.params_class, location)]
            names += nested_locations(task.parameters, task.class_stem, location)
            for name, at in names:
                if name in models:
                    owner, line = models[name]
                    self.fail(
                        f"this schema would be the model {name}, which task {owner} "
                        f"(line {line}) already uses; rename a property or a task",
                        at,
                        task.name,
                    )
                models[name] = (task.name, self.source.line(at))

    # -- one task -------------------------------------------------------------------------------

    def task(self, raw: Any, location: Location) -> Task:
        position = f"#{location[-1] + 1}" if isinstance(location[-1], int) else ""
        if not isinstance(raw, dict):
            self.fail("must be a mapping with at least `name`", location, position)
        name = raw.get("name")
        if name is None:
            self.fail("missing `name`", location, position)
        if not isinstance(name, str) or not NAME.fullmatch(name):
            self.fail(
                f"`name` {name!r} must start with a letter and have only letters, digits and _ "
                "(e.g. SendEmail or incrementCounter)",
                (*location, "name"),
                position,
            )
        for key in raw:
            if key not in TASK_KEYS:
                self.fail(
                    f"unknown key {key!r} (expected: {', '.join(TASK_KEYS)})",
                    (*location, key),
                    name,
                )

        description = raw.get("description")
        if description is not None and not isinstance(description, str):
            self.fail("`description` must be a string", (*location, "description"), name)
        parameters = raw.get("parameters")
        if "parameters" in raw:

            def fail(message: str, at: Location) -> GenError:
                return self.source.error(f"task {name}: parameters: {message}", at)

            check_parameters(parameters, (*location, "parameters"), fail)

        return Task(
            name=name,
            line=self.source.line(location),
            description=description.strip() or None if description else None,
            parameters=parameters,
            retry=self.retry(raw, location, name),
            cron=self.cron(raw, location, name),
            cron_params=self.cron_params(raw, location, name, parameters),
            timeout=self.duration(raw, "timeout", location, name, positive=True),
            delay=self.duration(raw, "delay", location, name),
            priority=self.priority(raw, location, name),
            queue=self.queue(raw, location, name),
            labels=self.labels(raw, location, name),
            on_failed=self.events(raw, location, name),
        )

    def mapping(
        self, raw: dict[str, Any], key: str, keys: tuple[str, ...], location: Location, task: str
    ) -> dict[str, Any] | None:
        value = raw.get(key)
        if value is None:
            return None
        at = (*location, key)
        if not isinstance(value, dict):
            self.fail(f"`{key}` must be a mapping with {', '.join(keys)}", at, task)
        for sub in value:
            if sub not in keys:
                self.fail(
                    f"unknown key {sub!r} in `{key}` (expected: {', '.join(keys)})",
                    (*at, sub),
                    task,
                )
        return value

    def duration(
        self,
        container: dict[str, Any],
        key: str,
        location: Location,
        task: str,
        *,
        label: str | None = None,
        positive: bool = False,
    ) -> int | None:
        value = container.get(key)
        if value is None:
            return None
        return self.parse_duration(value, (*location, key), task, label or key, positive)

    def parse_duration(
        self, value: Any, at: Location, task: str, label: str, positive: bool
    ) -> int:
        try:
            ms = parse_duration(value)
        except ValueError as exc:
            self.fail(f"`{label}`: {exc}", at, task)
        if positive and ms == 0:
            self.fail(f"`{label}` must be more than 0", at, task)
        return ms

    def retry(self, raw: dict[str, Any], location: Location, task: str) -> Retry | None:
        policy = self.mapping(raw, "retryPolicy", RETRY_KEYS, location, task)
        if policy is None:
            return None
        at = (*location, "retryPolicy")
        for key in RETRY_KEYS:
            if key not in policy:
                self.fail(
                    f"`retryPolicy` needs `{key}` "
                    "(e.g. `interval: 5m` and `maxAttempts: 3`; -1 retries forever)",
                    at,
                    task,
                )
        attempts = policy["maxAttempts"]
        if (
            not isinstance(attempts, int)
            or isinstance(attempts, bool)
            or not (attempts == -1 or 1 <= attempts <= INT32[1])
        ):
            self.fail(
                f"`retryPolicy.maxAttempts` must be the number of runs (1 or more, the first "
                f"included) or -1 for unlimited, not {attempts!r}",
                (*at, "maxAttempts"),
                task,
            )
        interval = policy["interval"]
        interval_at = (*at, "interval")
        label = "retryPolicy.interval"
        if isinstance(interval, dict):
            backoff = self.mapping(policy, "interval", BACKOFF_KEYS, at, task)
            assert backoff is not None
            if "initial" not in backoff:
                self.fail(
                    "exponential backoff needs `initial` (e.g. `{initial: 1s, max: 5m}`)",
                    interval_at,
                    task,
                )
            initial = self.parse_duration(
                backoff["initial"], (*interval_at, "initial"), task, f"{label}.initial", True
            )
            maximum = self.duration(backoff, "max", interval_at, task, label=f"{label}.max")
            if maximum is not None and maximum < initial:
                self.fail(f"`{label}.max` is less than `initial`", (*interval_at, "max"), task)
            jitter = backoff.get("jitter", 0)
            if (
                not isinstance(jitter, int | float)
                or isinstance(jitter, bool)
                or not (0 <= jitter <= 1)
            ):
                self.fail(
                    f"`{label}.jitter` must be a fraction from 0 to 1, not {jitter!r}",
                    (*interval_at, "jitter"),
                    task,
                )
            return Retry(
                intervals=(initial,),
                max_attempts=attempts,
                backoff=True,
                max_interval=maximum,
                jitter=float(jitter),
            )
        if isinstance(interval, str) and "," in interval:
            items: list[Any] = interval.split(",")
            if any(not item.strip() for item in items):
                self.fail(f"`{label}`: {interval!r} has an empty item", interval_at, task)
            located = [(item.strip(), interval_at) for item in items]
        elif isinstance(interval, list):
            if not interval:
                self.fail(f"`{label}` must list at least one duration", interval_at, task)
            located = [(item, (*interval_at, index)) for index, item in enumerate(interval)]
        else:
            located = [(interval, interval_at)]
        intervals = tuple(
            self.parse_duration(value, item_at, task, label, False) for value, item_at in located
        )
        return Retry(intervals=intervals, max_attempts=attempts)

    def cron(self, raw: dict[str, Any], location: Location, task: str) -> str | None:
        cronjob = self.mapping(raw, "cronjob", CRON_KEYS, location, task)
        if cronjob is None:
            return None
        at = (*location, "cronjob")
        expression = cronjob.get("cronExpression")
        if expression is None:
            self.fail('`cronjob` needs `cronExpression` (e.g. "0 * * * *")', at, task)
        if not isinstance(expression, str):
            self.fail("`cronjob.cronExpression` must be a string", (*at, "cronExpression"), task)
        try:
            return check_cron(expression)
        except ValueError as exc:
            self.fail(str(exc), (*at, "cronExpression"), task)

    def cron_params(
        self,
        raw: dict[str, Any],
        location: Location,
        task: str,
        parameters: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """`cronjob.parameters`: what each scheduled run is enqueued with (default: none)."""
        cronjob = raw.get("cronjob")
        if not isinstance(cronjob, dict):
            return None
        at = (*location, "cronjob", "parameters")
        given = cronjob.get("parameters")
        if given is not None and not isinstance(given, dict):
            self.fail("`cronjob.parameters` must be a mapping of parameter values", at, task)
        required = (parameters or {}).get("required") or []
        missing = [name for name in required if name not in (given or {})]
        if missing:
            warnings.warn(
                GenWarning(
                    located(
                        f"task {task}: scheduled runs get no value for required parameter(s) "
                        f"{', '.join(missing)}, so they will fail validation; "
                        "give them in `cronjob.parameters`",
                        self.source.display_path,
                        self.source.line((*location, "cronjob")),
                    )
                ),
                stacklevel=2,
            )
        return dict(given) if given else None

    def priority(self, raw: dict[str, Any], location: Location, task: str) -> int | None:
        value = raw.get("priority")
        if value is None:
            return None
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not (INT32[0] <= value <= INT32[1])
        ):
            self.fail(
                f"`priority` must be a whole number (higher runs first), not {value!r}",
                (*location, "priority"),
                task,
            )
        return value

    def queue(self, raw: dict[str, Any], location: Location, task: str) -> str | None:
        value = raw.get("queue")
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip() or value != value.strip():
            self.fail(
                f"`queue` must be a non-empty name, not {value!r}", (*location, "queue"), task
            )
        return value

    def labels(self, raw: dict[str, Any], location: Location, task: str) -> tuple[str, ...]:
        value = raw.get("labels")
        if value is None:
            return ()
        at = (*location, "labels")
        if not isinstance(value, list):
            self.fail("`labels` must be a list of strings", at, task)
        for index, label in enumerate(value):
            if not isinstance(label, str) or not label:
                self.fail("`labels` must be a list of non-empty strings", (*at, index), task)
            if value.index(label) != index:
                self.fail(f"`labels` lists {label!r} twice", (*at, index), task)
        return tuple(value)

    def events(self, raw: dict[str, Any], location: Location, task: str) -> bool:
        value = raw.get("events")
        if value is None:
            return False
        at = (*location, "events")
        if not isinstance(value, list):
            self.fail("`events` must be a list, e.g. `[onFailed]`", at, task)
        for index, event in enumerate(value):
            if event not in EVENTS:
                self.fail(
                    f"unknown event {event!r} (supported: {', '.join(EVENTS)})",
                    (*at, index),
                    task,
                )
            if value.index(event) != index:
                self.fail(f"`events` lists {event!r} twice", (*at, index), task)
        return "onFailed" in value
