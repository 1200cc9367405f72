"""Render server.py and __init__.py of the generated API package from the parsed operations.

The output is meant to read like hand-written FastAPI: an abstract ``ApiHandlers`` class with one
typed ``async def`` per operation, and ``build_router`` with one decorated route function per
operation that awaits the handler, nothing else on the request path.

An authenticated operation's route also takes the principal from its ``auth.require(operationId)``
dependency, awaits the ``CheckRules`` methods its scopes call and passes the principal on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .models import Models
from .spec import Api, Check, CheckRule, Operation, Parameter, PyType, RuleParameter

LINE_LENGTH = 100
INDENT = "    "
PARAM_FUNCTIONS = {"path": "Path", "query": "Query", "header": "Header"}


def literal(value: Any) -> str:
    """Python source for a JSON-like constant, strings quoted the way ruff format quotes them."""
    if isinstance(value, str):
        if '"' in value and "'" not in value:  # as ruff format would quote it
            return "'" + json.dumps(value, ensure_ascii=False)[1:-1].replace('\\"', '"') + "'"
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(item) for item in value) + "]"
    raise TypeError(f"no literal for {value!r}")


def docstring(text: str, indent: str) -> str:
    """A one-paragraph-per-line docstring that stays valid whatever `text` contains."""
    text = text.strip().replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if text.endswith('"'):
        text = text[:-1] + '\\"'
    lines = text.splitlines()
    if len(lines) == 1:
        return f'{indent}"""{text}"""'
    body = "\n".join(f"{indent}{line}".rstrip() for line in lines[1:])
    return f'{indent}"""{lines[0]}\n{body}\n{indent}"""'


def call(prefix: str, args: list[str], suffix: str, indent: str) -> str:
    """``prefix(arg, ...)suffix`` on one line if it fits, else one argument per line."""
    one_line = f"{indent}{prefix}({', '.join(args)}){suffix}"
    if len(one_line) <= LINE_LENGTH or not args:
        return one_line
    inner = "".join(_argument_lines(arg, indent + INDENT) for arg in args)
    return f"{indent}{prefix}(\n{inner}{indent}){suffix}"


def _argument_lines(arg: str, indent: str) -> str:
    """One argument of a split call; a long ``name: Annotated[T, F(...)] = x`` is split too."""
    line = f"{indent}{arg},\n"
    match = re.fullmatch(r"(\w+: Annotated\[)(.*)(\])( = .*)?", arg)
    if len(line) <= LINE_LENGTH + 1 or match is None:
        return line
    start, inner, end, default = match.groups()
    return f"{indent}{start}\n{indent}{INDENT}{inner}\n{indent}{end}{default or ''},\n"


@dataclass
class _Imports:
    """What server.py imports, collected while rendering."""

    stdlib: set[str]
    typing: set[str]
    fastapi: set[str]
    models: bool = False
    # Names from the vendored runtime's anchor/auth/principal.py.
    principal: set[str] = field(default_factory=set)

    def use_type(self, type_: PyType) -> None:
        self.stdlib |= type_.modules()
        self.models |= type_.uses_models()
        if type_.uses_any():
            self.typing.add("Any")

    def render(self) -> str:
        stdlib = [f"import {module}" for module in sorted(self.stdlib)]
        stdlib.append(f"from typing import {', '.join(sorted(self.typing))}")
        sections = [
            "\n".join(stdlib),
            f"from fastapi import {', '.join(sorted(self.fastapi, key=_isort_key))}",
        ]
        local = []
        if self.principal:
            names = ", ".join(sorted(self.principal, key=_isort_key))
            local.append(f"from ...anchor.auth.principal import {names}")
        if self.models:
            local.append("from . import models")
        if local:
            sections.append("\n".join(local))
        return "\n\n".join(sections)


def _isort_key(name: str) -> tuple[int, str]:
    """isort's order for imported names: CONSTANTS, then Classes, then functions."""
    if name.isupper() and len(name) > 1:
        return (0, name)
    return (1 if name[:1].isupper() else 2, name)


class ServerRenderer:
    """Renders server.py for `api`, naming models as `models` generated them."""

    def __init__(self, api: Api, models: Models, header: str) -> None:
        self.api = api
        self.models = models
        self.header = header
        self.imports = _Imports(stdlib={"abc"}, typing={"Any", "Final"}, fastapi={"APIRouter"})

    def type(self, type_: PyType) -> str:
        self.imports.use_type(type_)
        return type_.render(self.models.class_names)

    # -- the parts of a parameter ---------------------------------------------------------------

    def annotation(self, parameter: Parameter) -> str:
        type_ = self.type(parameter.type)
        return type_ if parameter.required or parameter.has_default else f"{type_} | None"

    def default(self, parameter: Parameter) -> str | None:
        if parameter.required:
            return None
        if not parameter.has_default:
            return "None"
        if parameter.type.kind == "model":
            class_name = self.models.class_names[parameter.type.name]
            member = self.models.enum_members.get(class_name, {}).get(parameter.default)
            if member is not None:
                return f"models.{class_name}.{member}"
            return f"models.{class_name}({literal(parameter.default)})"
        return literal(parameter.default)

    def interface_params(self, operation: Operation) -> list[str]:
        params: list[str] = []
        for parameter in operation.parameters:
            default = self.default(parameter)
            params.append(
                f"{parameter.py_name}: {self.annotation(parameter)}"
                + (f" = {default}" if default else "")
            )
        if operation.body is not None:
            body_type = self.type(operation.body.type)
            params.append(
                f"body: {body_type}"
                if operation.body.required
                else f"body: {body_type} | None = None"
            )
        return params

    def route_params(self, operation: Operation) -> list[str]:
        params: list[str] = []
        for parameter in operation.parameters:
            function = PARAM_FUNCTIONS[parameter.location]
            self.imports.fastapi.add(function)
            self.imports.typing.add("Annotated")
            kwargs: list[str] = []
            if parameter.name != parameter.py_name:
                kwargs.append(f"alias={literal(parameter.name)}")
            if parameter.description:
                kwargs.append(f"description={literal(parameter.description)}")
            if parameter.deprecated:
                kwargs.append("deprecated=True")
            kwargs.extend(f"{name}={literal(value)}" for name, value in parameter.constraints)
            default = self.default(parameter)
            annotated = f"{self.annotation(parameter)}, {function}({', '.join(kwargs)})"
            param = f"{parameter.py_name}: Annotated[{annotated}]"
            params.append(param + (f" = {default}" if default else ""))
        if operation.body is not None:
            self.imports.fastapi.add("Body")
            self.imports.typing.add("Annotated")
            body_type = self.type(operation.body.type)
            kwargs = (
                [f"description={literal(operation.body.description)}"]
                if operation.body.description
                else []
            )
            if operation.body.required:
                params.append(f"body: Annotated[{body_type}, Body({', '.join(kwargs)})]")
            else:
                params.append(
                    f"body: Annotated[{body_type} | None, Body({', '.join(kwargs)})] = None"
                )
        return params

    def principal_param(self, operation: Operation) -> str:
        """The principal parameter of a route; `auth.require` runs once, when the route is built."""
        self.imports.fastapi.add("Depends")
        self.imports.typing.add("Annotated")
        self.imports.principal.add("Principal")
        dependency = f"auth.require({literal(operation.operation_id)})"
        return f"principal: Annotated[Principal, Depends({dependency})]"

    def return_type(self, operation: Operation) -> str:
        return "None" if operation.success.type is None else self.type(operation.success.type)

    # -- the interface --------------------------------------------------------------------------

    def interface_method(self, operation: Operation) -> str:
        params = self.interface_params(operation)
        signature = ["self"]
        if operation.security is not None:
            self.imports.principal.add("Principal")
            signature.append("principal: Principal")
        if params:
            signature += ["*", *params]
        doc = (
            operation.summary
            or (operation.description or "").strip().split("\n")[0]
            or operation.label
        )
        if not doc.endswith((".", "!", "?")):
            doc += "."
        return "\n".join(
            [
                f"{INDENT}@abc.abstractmethod",
                call(
                    f"async def {operation.method_name}",
                    signature,
                    f" -> {self.return_type(operation)}:",
                    INDENT,
                ),
                docstring(doc, INDENT * 2),
            ]
        )

    def interface(self) -> str:
        title = f"{self.api.title} {self.api.version}".strip()
        methods = "\n\n".join(self.interface_method(operation) for operation in self.api.operations)
        doc = (
            f"The operations of {title}: subclass this and implement every method.\n"
            "\n"
            "A subclass that misses an operation fails when the class is created, naming it;\n"
            "``class Base(ApiHandlers, abstract=True)`` defers that check to Base's subclasses.\n"
            "mypy reports a missing method where the class is instantiated, and a wrong signature."
        )
        lines = [
            "class ApiHandlers(abc.ABC):",
            docstring(doc, INDENT),
            "",
            (
                f"{INDENT}def __init_subclass__("
                "cls, *, abstract: bool = False, **kwargs: Any) -> None:"
            ),
            f"{INDENT * 2}super().__init_subclass__(**kwargs)",
            f"{INDENT * 2}if not abstract:",
            f"{INDENT * 3}_require_all_operations(cls)",
        ]
        if methods:
            lines += ["", methods]
        return "\n".join(lines)

    def rule_method(self, rule: CheckRule) -> str:
        params = ["self", "principal: Principal"]
        params += [f"{p.py_name}: {self.rule_type(p)}" for p in rule.parameters]
        doc = (rule.description or "").strip() or f"The check rule {rule.name}."
        if not doc.endswith((".", "!", "?")):
            doc += "."
        return "\n".join(
            [
                f"{INDENT}@abc.abstractmethod",
                call(f"async def {rule.method_name}", params, " -> bool:", INDENT),
                docstring(doc, INDENT * 2),
            ]
        )

    def rule_type(self, parameter: RuleParameter) -> str:
        type_ = self.type(parameter.type)
        return f"{type_} | None" if parameter.nullable else type_

    def check_rules_interface(self) -> str:
        self.imports.principal.add("Principal")
        title = f"{self.api.title} {self.api.version}".strip()
        methods = "\n\n".join(self.rule_method(rule) for rule in self.api.check_rules)
        doc = (
            f"The check rules of {title}: subclass this and implement every rule.\n"
            "\n"
            "The bearer scopes of an operation call its rules in order, once the principal is\n"
            "known and the parameters are valid: a rule returning False denies the request with\n"
            "403 (`Forbidden`). A rule may raise an HTTPException of its own instead, such as a\n"
            "404 that does not reveal whether something exists.\n"
            "\n"
            "A subclass that misses a rule fails when the class is created, naming it;\n"
            "``class Base(CheckRules, abstract=True)`` defers that check to Base's subclasses."
        )
        return "\n".join(
            [
                "class CheckRules(abc.ABC):",
                docstring(doc, INDENT),
                "",
                (
                    f"{INDENT}def __init_subclass__("
                    "cls, *, abstract: bool = False, **kwargs: Any) -> None:"
                ),
                f"{INDENT * 2}super().__init_subclass__(**kwargs)",
                f"{INDENT * 2}if not abstract:",
                f"{INDENT * 3}_require_all_rules(cls)",
                "",
                methods,
            ]
        )

    def check_rules_table(self) -> str:
        rows = "".join(
            f"{INDENT}{literal(rule.name)}: {literal(rule.method_name)},\n"
            for rule in self.api.check_rules
        )
        return (
            "# x-check-rules name -> CheckRules method, in the order of the spec.\n"
            f"CHECK_RULES: Final[dict[str, str]] = {{\n{rows}}}"
        )

    def operations_table(self) -> str:
        rows = "".join(
            f"{INDENT}{literal(op.operation_id)}: {literal(op.method_name)},\n"
            for op in self.api.operations
        )
        table = "{\n" + rows + "}" if rows else "{}"
        return (
            "# operationId -> ApiHandlers method, in the order of the spec.\n"
            f"OPERATIONS: Final[dict[str, str]] = {table}"
        )

    # -- the router -----------------------------------------------------------------------------

    def route(self, operation: Operation) -> str:
        indent = INDENT
        args = [literal(operation.path), f"operation_id={literal(operation.operation_id)}"]
        if operation.summary:
            args.append(f"summary={literal(operation.summary)}")
        if operation.description:
            args.append(f"description={literal(operation.description.strip())}")
        if operation.tags:
            args.append(f"tags={literal(list(operation.tags))}")
        if operation.deprecated:
            args.append("deprecated=True")
        args.append(f"status_code={int(operation.success.status)}")
        if operation.success.type is not None:
            args.append(f"response_model={self.type(operation.success.type)}")
        else:
            self.imports.fastapi.add("Response")
            args.append("response_class=Response")
        if operation.success.description:
            args.append(f"response_description={literal(operation.success.description)}")
        if operation.other_responses:
            entries = []
            for response in operation.other_responses:
                key = response.status if not response.status.isdigit() else int(response.status)
                fields = []
                if response.type is not None:
                    fields.append(f'"model": {self.type(response.type)}')
                fields.append(f'"description": {literal(response.description)}')
                entries.append(f"{indent * 3}{literal(key)}: {{{', '.join(fields)}}},\n")
            args.append("responses={\n" + "".join(entries) + f"{indent * 2}}}")
        decorator = (
            f"{indent}@router.{operation.http_method}(\n"
            + "".join(f"{indent * 2}{arg},\n" for arg in args)
            + f"{indent})"
        )

        params = self.route_params(operation)
        signature = [] if operation.security is None else [self.principal_param(operation)]
        if params:
            signature += ["*", *params]
        returns = self.return_type(operation)
        definition = call(
            f"async def {operation.method_name}", signature, f" -> {returns}:", indent
        )
        lines = [decorator, definition]
        call_args = [f"{p.py_name}={p.py_name}" for p in operation.parameters]
        if operation.body is not None:
            call_args.append("body=body")
        if operation.security is not None:
            lines += [self.check(check) for check in operation.security.checks]
            call_args.insert(0, "principal")
        prefix = "await" if operation.success.type is None else "return await"
        lines.append(call(f"{prefix} handlers.{operation.method_name}", call_args, "", indent * 2))
        return "\n".join(lines)

    def check(self, check: Check) -> str:
        """``if not await checks.rule(principal, ...): raise Forbidden("Rule")``."""
        self.imports.principal.add("Forbidden")
        args = ["principal"] + [
            argument.parameter.py_name if argument.parameter else literal(argument.value)
            for argument in check.arguments
        ]
        condition = call(f"if not await checks.{check.rule.method_name}", args, ":", INDENT * 2)
        return f"{condition}\n{INDENT * 3}raise Forbidden({literal(check.rule.name)})"

    def router(self) -> str:
        routes = "\n\n".join(self.route(operation) for operation in self.api.operations)
        summary = (
            "A router serving every operation of the API by awaiting the method of `handlers`."
        )
        params = ["handlers: ApiHandlers"]
        if self.api.authenticated:
            self.imports.principal.add("BearerAuth")
            params += ["*", "auth: BearerAuth"]
            checks = "; `checks` runs their check rules first." if self.api.checked else "."
            doc = docstring(
                f"{summary}\n\n"
                "Operations that need a bearer token get its principal from "
                "`auth.require(operationId)`,\n"
                f"computed once here, and pass it to the handler{checks}",
                INDENT,
            )
        else:
            doc = docstring(summary, INDENT)
        if self.api.checked:
            params.append("checks: CheckRules")
        lines = [
            call("def build_router", params, " -> APIRouter:", ""),
            doc,
            f"{INDENT}if not isinstance(handlers, ApiHandlers):",
            (
                f"{INDENT * 2}raise TypeError("
                'f"build_router needs an ApiHandlers, got {type(handlers).__name__}")'
            ),
            f"{INDENT}_require_all_operations(type(handlers))",
        ]
        if self.api.checked:
            lines += [
                f"{INDENT}if not isinstance(checks, CheckRules):",
                (
                    f"{INDENT * 2}raise TypeError("
                    'f"build_router needs a CheckRules for checks, got {type(checks).__name__}")'
                ),
                f"{INDENT}_require_all_rules(type(checks))",
            ]
        lines.append(f"{INDENT}router = APIRouter()")
        if routes:
            lines += ["", routes]
        lines += ["", f"{INDENT}return router"]
        return "\n".join(lines)

    def usage(self) -> str:
        """The module docstring's instructions."""
        if not self.api.check_rules and not self.api.authenticated:
            return (
                "Implement `ApiHandlers`, then serve its operations with `build_router(handlers)`."
            )
        interfaces = "`ApiHandlers` and `CheckRules`" if self.api.check_rules else "`ApiHandlers`"
        args = ["handlers"]
        if self.api.authenticated:
            args.append("auth=auth")
        if self.api.checked:
            args.append("checks=checks")
        return (
            f"Implement {interfaces}, then serve the operations with\n"
            f"`build_router({', '.join(args)})`."
        )

    # -- the file -------------------------------------------------------------------------------

    def render(self) -> str:
        # Render the parts first: they collect the imports.
        if self.api.check_rules:
            parts = [
                self.operations_table(),
                self.check_rules_table(),
                self.interface(),
                self.check_rules_interface(),
                _REQUIRE_ALL_OPERATIONS,
                _REQUIRE_ALL_RULES,
                self.router(),
            ]
        else:
            parts = [
                self.operations_table(),
                self.interface(),
                _REQUIRE_ALL_OPERATIONS,
                self.router(),
            ]
        title = f"{self.api.title} {self.api.version}".strip()
        module_doc = docstring(f"The server interface of {title}.\n\n{self.usage()}", "")
        return "\n".join(
            [self.header, module_doc, "", self.imports.render(), "", "\n\n\n".join(parts), ""]
        )


def _require_all(function: str, base: str, table: str, key: str, what: str) -> str:
    """Source of a generated check that a subclass of `base` implements every method."""
    return f'''def {function}(cls: type[{base}]) -> None:
    """Raise TypeError naming the {what} `cls` leaves unimplemented, if any."""
    missing = [
        f"{{{key}}} ({{name}})"
        for {key}, name in {table}.items()
        if getattr(getattr(cls, name, None), "__isabstractmethod__", False)
    ]
    if missing:
        raise TypeError(f"{{cls.__name__}} does not implement {what}: {{', '.join(missing)}}")'''


_REQUIRE_ALL_OPERATIONS = _require_all(
    "_require_all_operations", "ApiHandlers", "OPERATIONS", "operation_id", "operations"
)
_REQUIRE_ALL_RULES = _require_all(
    "_require_all_rules", "CheckRules", "CHECK_RULES", "rule", "check rules"
)


def render_server(api: Api, models: Models, header: str) -> str:
    return ServerRenderer(api, models, header).render()


def render_init(api: Api, header: str, display_path: str) -> str:
    title = f"{api.title} {api.version}".strip()
    if api.check_rules:
        what = "models, ApiHandlers, CheckRules and build_router"
        names = ["ApiHandlers", "CheckRules", "build_router"]
    else:
        what = "models, the ApiHandlers interface, its router"
        names = ["ApiHandlers", "build_router"]
    return "\n".join(
        [
            header,
            docstring(f"{title}: {what}.\n\nGenerated from {display_path}.", ""),
            "",
            "from . import models",
            f"from .server import {', '.join(names)}",
            "",
            f"__all__ = [{', '.join(literal(name) for name in [*names, 'models'])}]",
            "",
        ]
    )
