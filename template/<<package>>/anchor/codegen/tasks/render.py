"""Render the files of the generated ``gen/tasks`` package from the parsed tasks.

- ``models.py``: one pydantic model per task with parameters (``SendEmailParameters``), by the
  OpenAPI generator's datamodel-code-generator helper;
- ``options.py``: each task's name and its ``TaskOptions`` from tasks.yaml;
- ``runner.py``: ``TaskRunner``, one typed ``run_<task>`` per task, enqueueing through an Enqueuer;
- ``executor.py``: ``TaskExecutors``, the abstract interface the application implements, and
  ``task_definitions(executors)``, what the engine runs;
- ``__init__.py``: re-exports.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from ..openapi.models import Models, generate_models
from ..openapi.render import INDENT, LINE_LENGTH, docstring, literal
from ..openapi.render import call as split_call
from .durations import timedelta_source
from .schema import prepare
from .spec import Retry, Task

CONTRACT = "...anchor.tasks.contract"
DB = "...anchor.db"


# -- models.py ----------------------------------------------------------------------------------


def render_models(tasks: list[Task], header: str, display_path: str) -> str:
    schemas: dict[str, Any] = {}
    for task in tasks:
        if task.parameters is not None and task.params_class is not None:
            schemas.update(prepare(task.parameters, task.params_class, task.class_stem))
    if not schemas:
        return (
            f'{header}\n"""No task in {display_path} has parameters, so there are no models."""\n'
        )
    models = generate_models(
        schemas, openapi_version="3.1.0", header=header, display_path=display_path
    )
    return _enum_defaults(models)


def _enum_defaults(models: Models) -> str:
    """`models.source` with enum defaults spelled as members (``= Kind.a``, not ``= "a"``).

    datamodel-code-generator writes an enum field's default as the raw value, which mypy rejects;
    with its ``set_default_enum_member`` option this changes nothing.
    """
    lines = models.source.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []  # (line, start col, end col, replacement)
    for node in ast.parse(models.source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.AnnAssign) or statement.value is None:
                continue
            enums = {
                name.id
                for name in ast.walk(_bare_annotation(statement.annotation))
                if isinstance(name, ast.Name) and name.id in models.enum_members
            }
            if len(enums) != 1:
                continue
            enum = enums.pop()
            values = (
                statement.value.elts if isinstance(statement.value, ast.List) else [statement.value]
            )
            for value in values:
                if (
                    isinstance(value, ast.Constant)
                    and value.lineno == value.end_lineno
                    and value.end_col_offset is not None
                    and value.value in models.enum_members[enum]
                ):
                    member = models.enum_members[enum][value.value]
                    edits.append(
                        (value.lineno, value.col_offset, value.end_col_offset, f"{enum}.{member}")
                    )
    for line, start, end, replacement in sorted(edits, reverse=True):
        text = lines[line - 1]
        lines[line - 1] = text[:start] + replacement + text[end:]
        if len(lines[line - 1].rstrip("\n")) > LINE_LENGTH and text[:start].endswith("= "):
            indent = text[: len(text) - len(text.lstrip())]
            lines[line - 1] = (
                f"{text[:start]}(\n{indent}{INDENT}{replacement}\n{indent}){text[end:]}"
            )
    return "".join(lines)


def _bare_annotation(annotation: ast.expr) -> ast.expr:
    """The type in ``Annotated[T, Field(...)]``, or the annotation itself."""
    if (
        isinstance(annotation, ast.Subscript)
        and isinstance(annotation.value, ast.Name)
        and annotation.value.id == "Annotated"
        and isinstance(annotation.slice, ast.Tuple)
    ):
        return annotation.slice.elts[0]
    return annotation


# -- options.py ---------------------------------------------------------------------------------


def call(prefix: str, args: list[str], suffix: str, indent: str) -> str:
    """``prefix(args)suffix`` as ruff format writes it: on one line if it fits, else the arguments
    on one line of their own, else one argument per line with a trailing comma."""
    one_line = f"{indent}{prefix}({', '.join(args)}){suffix}"
    if len(one_line) <= LINE_LENGTH or not args:
        return one_line
    hugged = f"{indent}{INDENT}{', '.join(args)}"
    if len(hugged) <= LINE_LENGTH:
        return f"{indent}{prefix}(\n{hugged}\n{indent}){suffix}"
    return split_call(prefix, args, suffix, indent)


@dataclass(frozen=True)
class _Call:
    """An expression to format: ``name=callee(args)``; a tuple when `callee` is empty."""

    callee: str
    args: tuple[_Call | str, ...]
    keyword: str = ""

    def one_line(self) -> str:
        items = [arg if isinstance(arg, str) else arg.one_line() for arg in self.args]
        trailing = "," if not self.callee and len(items) == 1 else ""
        return f"{self.keyword}{self.callee}({', '.join(items)}{trailing})"

    def lines(self, indent: str, prefix: str = "", suffix: str = "") -> str:
        """On one line if it fits, else one argument per line with a trailing comma (which ruff
        format keeps), nested calls split the same way."""
        one_line = f"{indent}{prefix}{self.one_line()}{suffix}"
        if len(one_line) <= LINE_LENGTH or not self.args:
            return one_line
        inner = indent + INDENT
        rendered = [
            f"{inner}{arg}," if isinstance(arg, str) else arg.lines(inner, suffix=",")
            for arg in self.args
        ]
        opening = f"{indent}{prefix}{self.keyword}{self.callee}("
        return opening + "\n" + "\n".join(rendered) + f"\n{indent}){suffix}"


def _keyword(name: str, value: _Call | str) -> _Call | str:
    if isinstance(value, str):
        return f"{name}={value}"
    return _Call(value.callee, value.args, keyword=f"{name}=")


def _timedeltas(values: tuple[int, ...]) -> _Call:
    return _Call("", tuple(timedelta_source(value) for value in values))


def _retry_policy(retry: Retry) -> _Call:
    args: list[_Call | str] = [
        _keyword("intervals", _timedeltas(retry.intervals)),
        f"max_attempts={retry.max_attempts}",
    ]
    if retry.backoff:
        args.append("backoff=True")
        if retry.max_interval is not None:
            args.append(f"max_interval={timedelta_source(retry.max_interval)}")
        if retry.jitter:
            args.append(f"jitter={retry.jitter!r}")
    return _Call("RetryPolicy", tuple(args))


def options_args(task: Task) -> list[_Call | str]:
    args: list[_Call | str] = []
    if task.retry is not None:
        args.append(_keyword("retry_policy", _retry_policy(task.retry)))
    if task.timeout is not None:
        args.append(f"timeout={timedelta_source(task.timeout)}")
    if task.priority is not None:
        args.append(f"priority={task.priority}")
    if task.delay is not None:
        args.append(f"delay={timedelta_source(task.delay)}")
    if task.queue is not None:
        args.append(f"queue={literal(task.queue)}")
    if task.labels:
        args.append(_keyword("labels", _Call("", tuple(literal(label) for label in task.labels))))
    return args


def render_options(tasks: list[Task], header: str, display_path: str) -> str:
    blocks: list[str] = []
    uses_timedelta = False
    uses_retry = False
    for task in tasks:
        options = _Call("TaskOptions", tuple(options_args(task)))
        uses_timedelta |= "dt.timedelta" in options.one_line()
        uses_retry |= task.retry is not None
        blocks.append(
            f"{task.constant}: Final = {literal(task.name)}\n"
            + options.lines("", prefix=f"{task.constant}_OPTIONS: Final = ")
        )
    contract = ", ".join(["RetryPolicy", "TaskOptions"] if uses_retry else ["TaskOptions"])
    imports = []
    if uses_timedelta:
        imports.append("import datetime as dt\n")
    imports.append("from typing import Final\n")
    module_doc = docstring(
        f"Each task's name and its options from {display_path}.\n\n"
        "`TaskRunner` starts from these options and applies per-call overrides;\n"
        "`task_definitions` gives them to the engine.",
        "",
    )
    sections = [header, module_doc, "", "from __future__ import annotations", ""]
    sections.append("".join(imports))
    sections.append(f"from {CONTRACT} import {contract}")
    if blocks:
        sections += ["", "\n\n".join(blocks)]
    return "\n".join(sections) + "\n"


def _module(
    header: str, doc: str, imports: list[str], parts: list[str], *, preamble: str | None = None
) -> str:
    """A generated module: header, docstring, imports, an optional module-level block (one
    blank line after the imports), then `parts` two blank lines apart."""
    lines = [header, doc, "", "from __future__ import annotations", "", "\n".join(imports)]
    if preamble is not None:
        lines += ["", preamble]
    return "\n".join([*lines, "", "", "\n\n\n".join(parts), ""])


# -- runner.py ----------------------------------------------------------------------------------


def _doc(task: Task, fallback: str) -> str:
    text = (task.description or "").strip() or fallback
    if not text.split("\n", 1)[0].endswith((".", "!", "?")):
        first, _, rest = text.partition("\n")
        text = f"{first}.\n{rest}" if rest else f"{first}."
    return text


def _import_names(module: str, names: list[str]) -> str:
    line = f"from {module} import {', '.join(names)}"
    if len(line) <= LINE_LENGTH:
        return line
    return f"from {module} import (\n" + "".join(f"{INDENT}{n},\n" for n in names) + ")"


def _params_classes(tasks: list[Task]) -> list[str]:
    return sorted(task.params_class for task in tasks if task.params_class is not None)


def _option_names(tasks: list[Task]) -> list[str]:
    return sorted(name for task in tasks for name in (task.constant, f"{task.constant}_OPTIONS"))


def runner_method(task: Task) -> str:
    signature = ["self"]
    if task.params_class is not None:
        signature.append(f"params: {task.params_class}")
    signature += ["*", "tx: Connection | None = None", "**overrides: Unpack[TaskOverrides]"]
    doc = (
        _doc(task, f"Enqueue {task.name}.")
        + "\n\nReturns the task's id. With `tx` the task is written in that transaction;\n"
        "`overrides` replace the defaults of tasks.yaml for this call."
    )
    params = (
        'params.model_dump(mode="json", by_alias=True)' if task.params_class is not None else "{}"
    )
    body = call(
        "return await self._enqueuer.enqueue",
        [task.constant, params, f"with_overrides({task.constant}_OPTIONS, overrides)", "tx=tx"],
        "",
        INDENT * 2,
    )
    return "\n".join(
        [
            call(f"async def run_{task.snake}", signature, " -> int:", INDENT),
            docstring(doc, INDENT * 2),
            body,
        ]
    )


def render_runner(tasks: list[Task], header: str, display_path: str) -> str:
    methods = [runner_method(task) for task in tasks]
    class_doc = docstring(
        f"Enqueues the tasks of {display_path}: one `run_<task>` method per task.\n\n"
        "The parameters are a validated model; they are stored as JSON (by alias) and parsed\n"
        "into the same model when the task runs.",
        INDENT,
    )
    class_lines = [
        "class TaskRunner:",
        class_doc,
        "",
        f"{INDENT}def __init__(self, enqueuer: Enqueuer) -> None:",
        f"{INDENT * 2}self._enqueuer = enqueuer",
    ]
    for method in methods:
        class_lines += ["", method]
    imports = ["from typing import Unpack", ""] if tasks else []
    if tasks:
        imports.append(f"from {DB} import Connection")
        imports.append(f"from {CONTRACT} import Enqueuer, TaskOverrides, with_overrides")
    else:
        imports.append(f"from {CONTRACT} import Enqueuer")
    if classes := _params_classes(tasks):
        imports.append(_import_names(".models", classes))
    if tasks:
        imports.append(_import_names(".options", _option_names(tasks)))
    module_doc = docstring(
        f"Enqueue the tasks of {display_path} with typed parameters: `TaskRunner`.", ""
    )
    return _module(header, module_doc, imports, ["\n".join(class_lines)])


# -- executor.py --------------------------------------------------------------------------------


def executor_methods(task: Task) -> list[str]:
    params = [f"params: {task.params_class}"] if task.params_class is not None else []
    execute = "\n".join(
        [
            f"{INDENT}@abc.abstractmethod",
            call(
                f"async def execute_{task.snake}",
                ["self", "ctx: TaskContext", "tx: Transaction", *params],
                " -> Any:",
                INDENT,
            ),
            docstring(
                _doc(task, f"Run {task.name}.")
                + "\n\nRuns in `tx`, which commits with the task's completion; raise to fail "
                "the attempt.",
                INDENT * 2,
            ),
        ]
    )
    methods = [execute]
    if task.on_failed:
        methods.append(
            "\n".join(
                [
                    f"{INDENT}@abc.abstractmethod",
                    call(
                        f"async def on_{task.snake}_failed",
                        ["self", "tx: Connection", "task_id: int", *params],
                        " -> None:",
                        INDENT,
                    ),
                    docstring(
                        f"Called once {task.name} has failed for good (its retries are spent).",
                        INDENT * 2,
                    ),
                ]
            )
        )
    return methods


def _method_names(task: Task) -> list[str]:
    names = [f"execute_{task.snake}"]
    if task.on_failed:
        names.append(f"on_{task.snake}_failed")
    return names


def _tuple(items: list[str]) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def task_methods_table(tasks: list[Task]) -> str:
    rows = "".join(
        f"{INDENT}{literal(task.name)}: {_tuple([literal(m) for m in _method_names(task)])},\n"
        for task in tasks
    )
    table = "{\n" + rows + "}" if rows else "{}"
    return (
        "# Task name -> the TaskExecutors methods it needs, in the order of tasks.yaml.\n"
        f"TASK_METHODS: Final[dict[str, tuple[str, ...]]] = {table}"
    )


def interface(tasks: list[Task], display_path: str) -> str:
    doc = (
        f"The tasks of {display_path}: subclass this and implement every method.\n"
        "\n"
        "A subclass that misses a method fails when the class is created, naming the task;\n"
        "``class Base(TaskExecutors, abstract=True)`` defers that check to Base's subclasses.\n"
        "mypy reports a missing method where the class is instantiated, and a wrong signature."
    )
    lines = [
        "class TaskExecutors(abc.ABC):",
        docstring(doc, INDENT),
        "",
        f"{INDENT}def __init_subclass__(cls, *, abstract: bool = False, **kwargs: Any) -> None:",
        f"{INDENT * 2}super().__init_subclass__(**kwargs)",
        f"{INDENT * 2}if not abstract:",
        f"{INDENT * 3}_require_all_methods(cls)",
    ]
    for task in tasks:
        for method in executor_methods(task):
            lines += ["", method]
    return "\n".join(lines)


_REQUIRE_ALL_METHODS = '''def _require_all_methods(cls: type[TaskExecutors]) -> None:
    """Raise TypeError naming the tasks whose methods `cls` leaves unimplemented, if any."""
    missing = []
    for task, names in TASK_METHODS.items():
        absent = [
            name
            for name in names
            if getattr(getattr(cls, name, None), "__isabstractmethod__", False)
        ]
        if absent:
            missing.append(f"{task} ({', '.join(absent)})")
    if missing:
        raise TypeError(f"{cls.__name__} does not implement tasks: {', '.join(missing)}")'''


def _callbacks(task: Task) -> list[str]:
    """The closures of `task_definitions` that parse the JSON params and call the method."""
    indent = INDENT
    parse = f"{task.params_class}.model_validate(params)" if task.params_class else None
    execute_args = ["ctx", "tx", *([parse] if parse else [])]
    callbacks = [
        "\n".join(
            [
                call(
                    f"async def execute_{task.snake}",
                    ["ctx: TaskContext", "tx: Transaction", "params: Mapping[str, Any]"],
                    " -> Any:",
                    indent,
                ),
                call(f"return await executors.execute_{task.snake}", execute_args, "", indent * 2),
            ]
        )
    ]
    if task.on_failed:
        failed_args = ["tx", "task_id", *([parse] if parse else [])]
        callbacks.append(
            "\n".join(
                [
                    call(
                        f"async def on_{task.snake}_failed",
                        ["tx: Connection", "task_id: int", "params: Mapping[str, Any]"],
                        " -> None:",
                        indent,
                    ),
                    call(f"await executors.on_{task.snake}_failed", failed_args, "", indent * 2),
                ]
            )
        )
    return callbacks


def _definition(task: Task) -> str:
    args = [
        f"name={task.constant}",
        f"options={task.constant}_OPTIONS",
        f"execute=execute_{task.snake}",
    ]
    if task.on_failed:
        args.append(f"on_failed=on_{task.snake}_failed")
    if task.cron is not None:
        args.append(f"cron={literal(task.cron)}")
    if task.cron_params:
        args.append(f"cron_params={task.cron_params!r}")
    lines = [f"{INDENT * 2}{task.constant}: TaskDefinition("]
    lines += [f"{INDENT * 3}{arg}," for arg in args]
    lines.append(f"{INDENT * 2}),")
    return "\n".join(lines)


_NOT_EXECUTORS = 'f"task_definitions needs a TaskExecutors, got {type(executors).__name__}"'


def definitions(tasks: list[Task]) -> str:
    lines = [
        "def task_definitions(executors: TaskExecutors) -> dict[str, TaskDefinition]:",
        docstring(
            "What the engine runs, by task name: each definition parses the stored JSON\n"
            "parameters into the task's model and awaits the method of `executors`.",
            INDENT,
        ),
        f"{INDENT}if not isinstance(executors, TaskExecutors):",
        f"{INDENT * 2}raise TypeError({_NOT_EXECUTORS})",
        f"{INDENT}_require_all_methods(type(executors))",
    ]
    for task in tasks:
        lines += ["", "\n\n".join(_callbacks(task))]
    if tasks:
        lines += ["", f"{INDENT}return {{"]
        lines += [_definition(task) for task in tasks]
        lines.append(f"{INDENT}}}")
    else:
        lines += ["", f"{INDENT}return {{}}"]
    return "\n".join(lines)


def render_executor(tasks: list[Task], header: str, display_path: str) -> str:
    uses_params = any(task.params_class for task in tasks)
    on_failed = any(task.on_failed for task in tasks)
    imports = ["import abc"]
    if tasks:
        imports.append("from collections.abc import Mapping")
    imports += ["from typing import Any, Final", ""]
    if on_failed:
        imports.append(f"from {DB} import Connection")
    contract = ["TaskContext", "TaskDefinition", "Transaction"] if tasks else ["TaskDefinition"]
    imports.append(f"from {CONTRACT} import {', '.join(contract)}")
    if uses_params:
        imports.append(_import_names(".models", _params_classes(tasks)))
    if tasks:
        imports.append(_import_names(".options", _option_names(tasks)))
    module_doc = docstring(
        f"Run the tasks of {display_path}: implement `TaskExecutors`, then give\n"
        "`task_definitions(executors)` to the worker.",
        "",
    )
    parts = [interface(tasks, display_path), _REQUIRE_ALL_METHODS, definitions(tasks)]
    return _module(header, module_doc, imports, parts, preamble=task_methods_table(tasks))


# -- __init__.py --------------------------------------------------------------------------------


def render_init(tasks: list[Task], header: str, display_path: str) -> str:
    classes = _params_classes(tasks)
    names = sorted(["TaskExecutors", "TaskRunner", "models", "task_definitions", *classes])
    lines = [
        header,
        docstring(
            f"The tasks of {display_path}: parameter models, `TaskRunner` to enqueue them,\n"
            "`TaskExecutors` to implement them and `task_definitions` for the worker.",
            "",
        ),
        "",
        "from . import models",
        "from .executor import TaskExecutors, task_definitions",
    ]
    if classes:
        lines.append(_import_names(".models", classes))
    lines.append("from .runner import TaskRunner")
    lines.append("")
    all_line = f"__all__ = [{', '.join(literal(n) for n in names)}]"
    if len(all_line) > LINE_LENGTH:
        all_line = "__all__ = [\n" + "".join(f"{INDENT}{literal(n)},\n" for n in names) + "]"
    lines += [all_line, ""]
    return "\n".join(lines)
