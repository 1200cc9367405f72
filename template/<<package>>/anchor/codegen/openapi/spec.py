"""Read an OpenAPI 3 document into the operations the server interface is rendered from.

Everything the renderer needs is checked here, with the file's line in each error: the document's
shape, every ``$ref``, operationIds (present, unique, distinct as method names), parameters (only
what FastAPI maps one to one: path and header scalars, query scalars and exploded arrays) and JSON
request and response bodies.

Security: an operation's ``security`` (or the document's) names one HTTP bearer scheme or none, and
its scopes are calls of the document's ``x-check-rules``, like ``IsOrgMember(orgId, "member")``:
parsed with ``ast`` and checked against the rule's parameters and the operation's, never evaluated.

Inline request, response and parameter-enum schemas get a name derived from the operationId and are
added to the schemas the models are generated from (``CreateJobRequest``, ``GetJobResponse``,
``ListJobsStatus``, ``CreateJob409Response``), so every body has a model. The user's file is never
changed: hoisting works on a copy.
"""

from __future__ import annotations

import ast
import copy
import keyword
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from ..errors import GenError
from .source import Location, Source

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PATH_ITEM_KEYS = {"summary", "description", "servers", "parameters"}
SCHEMA_REF_PREFIX = "#/components/schemas/"

ParamLocation = Literal["path", "query", "header"]
PARAM_LOCATIONS: dict[str, ParamLocation] = {"path": "path", "query": "query", "header": "header"}
# Names a route function's parameters must not take: the router closure refers to `handlers`, and
# the interface method has `self` and `body`. Authenticated operations reserve `principal` too,
# and those with check rules `checks`.
RESERVED_NAMES = frozenset({"self", "body", "handlers"})
# The parameters of a check rule's method: `self` and `principal` come first.
RULE_RESERVED_NAMES = frozenset({"self", "principal"})
# What build_router names its variables: a route function (named after its operation) must not
# take one of these names, or the routes defined after it would refer to the function.
ROUTER_NAMES = frozenset({"router", "handlers"})
RULE_SCHEMA_TYPES = ("string", "integer", "number", "boolean")


@dataclass(frozen=True)
class PyType:
    """A Python type spelled in builtins, the stdlib and the generated models.

    ``kind`` is "builtin" (``name`` like ``int`` or ``datetime.date``), "model" (``name`` is the
    schema's key in components/schemas; the class name is known once the models are generated),
    "list" (of ``item``), "dict" (a free-form JSON object) or "any".
    """

    kind: Literal["builtin", "model", "list", "dict", "any"]
    name: str = ""
    item: PyType | None = None

    def render(self, class_names: Mapping[str, str]) -> str:
        if self.kind == "model":
            return f"models.{class_names[self.name]}"
        if self.kind == "list":
            assert self.item is not None
            return f"list[{self.item.render(class_names)}]"
        if self.kind == "any":
            return "Any"
        if self.kind == "dict":
            return "dict[str, Any]"
        return self.name

    def modules(self) -> set[str]:
        """Stdlib modules the rendered type needs imported (``datetime``, ``uuid``)."""
        if self.kind == "list":
            assert self.item is not None
            return self.item.modules()
        if self.kind == "builtin" and "." in self.name:
            return {self.name.split(".", 1)[0]}
        return set()

    def uses_models(self) -> bool:
        if self.kind == "list":
            assert self.item is not None
            return self.item.uses_models()
        return self.kind == "model"

    def uses_any(self) -> bool:
        if self.kind == "list":
            assert self.item is not None
            return self.item.uses_any()
        return self.kind in ("dict", "any")


@dataclass(frozen=True)
class Parameter:
    """A path, query or header parameter: `name` as the spec spells it, `py_name` in Python."""

    name: str
    location: ParamLocation
    py_name: str
    type: PyType
    required: bool
    has_default: bool = False
    default: Any = None
    description: str | None = None
    deprecated: bool = False
    # Validation FastAPI enforces: ge, gt, le, lt, min_length, max_length, pattern.
    constraints: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class RequestBody:
    type: PyType
    required: bool
    description: str | None = None


@dataclass(frozen=True)
class Response:
    """A documented response: `status` is "200", "4XX" or "default"; `type` None: no JSON body."""

    status: str
    description: str
    type: PyType | None


@dataclass(frozen=True)
class RuleParameter:
    """A parameter of a check rule: a scalar, None too if `nullable`; `enum` limits literals."""

    name: str
    py_name: str
    type: PyType
    nullable: bool = False
    enum: tuple[Any, ...] | None = None
    description: str | None = None


@dataclass(frozen=True)
class CheckRule:
    """An entry of ``x-check-rules``: a method of the CheckRules interface."""

    name: str
    method_name: str
    description: str | None
    parameters: tuple[RuleParameter, ...]


@dataclass(frozen=True)
class CheckArgument:
    """An argument of a check: the value of an operation's `parameter`, else the literal `value`."""

    parameter: Parameter | None = None
    value: Any = None


@dataclass(frozen=True)
class Check:
    """A scope of a bearer requirement: a check rule call, like ``IsOrgMember(orgId, "member")``."""

    rule: CheckRule
    arguments: tuple[CheckArgument, ...]


@dataclass(frozen=True)
class Security:
    """An authenticated operation: the bearer `scheme` and the checks its scopes call, in order."""

    scheme: str
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Operation:
    """Everything rendered for one operation: its interface method and its route."""

    operation_id: str
    method_name: str
    http_method: str
    path: str
    summary: str | None
    description: str | None
    tags: tuple[str, ...]
    deprecated: bool
    parameters: tuple[Parameter, ...]
    body: RequestBody | None
    success: Response
    other_responses: tuple[Response, ...]
    line: int | None
    # None: a public operation.
    security: Security | None = None

    @property
    def label(self) -> str:
        return f"{self.http_method.upper()} {self.path}"


@dataclass(frozen=True)
class Api:
    """The parsed document: its title and version, operations in spec order and all schemas."""

    title: str
    version: str
    openapi_version: str
    operations: tuple[Operation, ...]
    # components/schemas plus the hoisted inline schemas: the input of the models generator.
    schemas: dict[str, Any] = field(default_factory=dict)
    # x-check-rules, in the order of the spec, used or not.
    check_rules: tuple[CheckRule, ...] = ()

    @property
    def authenticated(self) -> bool:
        """Whether an operation needs a bearer token (build_router then takes `auth`)."""
        return any(operation.security is not None for operation in self.operations)

    @property
    def checked(self) -> bool:
        """Whether an operation calls check rules (build_router then takes `checks`)."""
        return any(
            operation.security is not None and operation.security.checks
            for operation in self.operations
        )


def parse(source: Source) -> Api:
    """Check `source` and read its operations; raise GenError at the first problem."""
    return _Parser(source).parse()


def snake_case(name: str) -> str:
    """``getCounter`` -> ``get_counter``, ``X-Request-Id`` -> ``x_request_id``, ``HTTPStatus``
    -> ``http_status``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def pascal_case(name: str) -> str:
    """``getCounter`` -> ``GetCounter``, ``list-jobs`` -> ``ListJobs``."""
    return "".join(part[:1].upper() + part[1:] for part in snake_case(name).split("_"))


def python_name(name: str, reserved: frozenset[str] = RESERVED_NAMES) -> str:
    """A valid, non-reserved Python identifier for a spec name: ``from`` -> ``from_``."""
    result = snake_case(name) or "param"
    if result[0].isdigit():
        result = f"p_{result}"
    if keyword.iskeyword(result) or keyword.issoftkeyword(result) or result in reserved:
        result += "_"
    return result


def is_json_media_type(media_type: str) -> bool:
    """``application/json``, ``application/problem+json``, ``application/json; charset=utf-8``."""
    base = media_type.split(";", 1)[0].strip().lower()
    return base == "application/json" or (
        base.startswith("application/") and base.endswith("+json")
    )


def fits(value: Any, parameter: RuleParameter) -> bool:
    """Whether the literal `value` is a valid argument for `parameter`."""
    if value is None:
        return parameter.nullable
    valid = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }.get(parameter.type.name, False)  # no literals of dates, times and UUIDs
    return valid and (parameter.enum is None or value in parameter.enum)


def describe(parameter: RuleParameter) -> str:
    """What a rule parameter takes, for messages: ``str``, ``int or None``, ``str (one of ...)``."""
    text = parameter.type.name + (" or None" if parameter.nullable else "")
    if parameter.enum is not None:
        text += f" (one of {', '.join(repr(value) for value in parameter.enum)})"
    return text


class _Parser:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.spec: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {}
        self.hoisted: set[str] = set()
        self.security_schemes: dict[str, Any] = {}
        self.check_rules: dict[str, CheckRule] = {}

    # -- errors and references ------------------------------------------------------------------

    def error(self, message: str, location: Location) -> GenError:
        return self.source.error(message, location)

    def where(self, location: Location) -> str:
        """A readable name for where `location` is: ``GET /jobs`` or ``components/schemas/Job``."""
        if len(location) >= 3 and location[0] == "paths" and location[2] in HTTP_METHODS:
            return f"{str(location[2]).upper()} {location[1]}"
        if len(location) >= 2 and location[0] == "paths":
            return f"path {location[1]}"
        return "/".join(str(part) for part in location[:3])

    def resolve_pointer(self, ref: str) -> tuple[Any, Location] | None:
        """The value at a local ``#/...`` reference and its location, or None if there is none."""
        value: Any = self.spec
        location: Location = ()
        for raw in ref[2:].split("/") if ref != "#" else []:
            part = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(value, dict) and part in value:
                value = value[part]
                location = (*location, part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
                location = (*location, int(part))
            else:
                return None
        return value, location

    def check_refs(self, value: Any, location: Location) -> None:
        """Every ``$ref`` in the document must be local (``#/...``) and point at something."""
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str):
                at = (*location, "$ref")
                if not ref.startswith("#"):
                    raise self.error(
                        f"$ref {ref!r} in {self.where(location)} points outside this file; "
                        "only references within the file (starting with #/) are supported",
                        at,
                    )
                if self.resolve_pointer(ref) is None:
                    raise self.error(f"unknown $ref {ref!r} in {self.where(location)}", at)
            for key, item in value.items():
                if key == "example" or (isinstance(key, str) and key.startswith("x-")):
                    continue  # free-form data, not part of the API's structure
                self.check_refs(item, (*location, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.check_refs(item, (*location, index))

    def follow(self, value: Any, location: Location, kind: str) -> tuple[Any, Location]:
        """Follow `$ref`s (already checked to resolve) from `value` to the object they name."""
        seen: set[str] = set()
        while isinstance(value, dict) and isinstance(value.get("$ref"), str):
            ref = value["$ref"]
            if ref in seen:
                raise self.error(f"$ref {ref!r} refers to itself", (*location, "$ref"))
            seen.add(ref)
            resolved = self.resolve_pointer(ref)
            assert resolved is not None  # check_refs ran first
            value, location = resolved
        if not isinstance(value, dict):
            raise self.error(f"{kind} in {self.where(location)} must be a mapping", location)
        return value, location

    def mapping(
        self, container: Mapping[str, Any], key: str, location: Location, *, required: bool
    ) -> dict[str, Any]:
        value = container.get(key)
        if value is None and not required:
            return {}
        if value is None:
            raise self.error(
                f"missing `{key}` in {self.where(location) or 'the document'}", location
            )
        if not isinstance(value, dict):
            raise self.error(f"`{key}` must be a mapping", (*location, key))
        return value

    def text(self, container: Mapping[str, Any], key: str, location: Location) -> str | None:
        value = container.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(f"`{key}` must be a string", (*location, key))
        return value

    # -- the document ---------------------------------------------------------------------------

    def parse(self) -> Api:
        spec = self.source.data
        if not isinstance(spec, dict):
            raise self.error(
                "an OpenAPI document must be a mapping with `openapi`, `info` and `paths`", ()
            )
        self.spec = spec
        if "swagger" in spec and "openapi" not in spec:
            raise self.error(
                "Swagger 2.0 documents are not supported: convert it to OpenAPI 3", ("swagger",)
            )
        version = spec.get("openapi")
        if version is None:
            raise self.error("missing `openapi` (the OpenAPI version, e.g. `openapi: 3.0.3`)", ())
        if not isinstance(version, str) or not re.fullmatch(r"3\.[01]\.\d+(-.+)?", version):
            raise self.error(
                f"unsupported `openapi: {version}`: expected an OpenAPI 3.0 or 3.1 version "
                "such as 3.0.3 "
                "(quote it if YAML reads it as a number)",
                ("openapi",),
            )
        info = self.mapping(spec, "info", (), required=True)
        title = self.text(info, "title", ("info",)) or "API"
        api_version = info.get("version", "")
        paths = self.mapping(spec, "paths", (), required=True)
        components = self.mapping(spec, "components", (), required=False)
        self.schemas = dict(self.mapping(components, "schemas", ("components",), required=False))
        self.security_schemes = self.mapping(
            components, "securitySchemes", ("components",), required=False
        )

        self.check_refs(spec, ())
        self.check_rules = self.rules()

        operations: list[Operation] = []
        for path, item in paths.items():
            operations.extend(self.path_item(path, item))
        self.check_unique(operations)
        return Api(
            title=title,
            version=str(api_version),
            openapi_version=version,
            operations=tuple(operations),
            schemas=self.schemas,
            check_rules=tuple(self.check_rules.values()),
        )

    def check_unique(self, operations: list[Operation]) -> None:
        by_id: dict[str, Operation] = {}
        by_method: dict[str, Operation] = {}
        for operation in operations:
            if (first := by_id.get(operation.operation_id)) is not None:
                raise GenError(
                    f"duplicate operationId {operation.operation_id!r}: "
                    f"{first.label} (line {first.line}) "
                    f"and {operation.label}",
                    path=self.source.display_path,
                    line=operation.line,
                )
            if (first := by_method.get(operation.method_name)) is not None:
                raise GenError(
                    f"operationIds {first.operation_id!r} ({first.label}, line {first.line}) and "
                    f"{operation.operation_id!r} ({operation.label}) both become the method name "
                    f"{operation.method_name}; rename one",
                    path=self.source.display_path,
                    line=operation.line,
                )
            by_id[operation.operation_id] = operation
            by_method[operation.method_name] = operation
        taken = set(ROUTER_NAMES)
        if any(operation.security is not None for operation in operations):
            taken.add("auth")
        if any(
            operation.security is not None and operation.security.checks for operation in operations
        ):
            taken.add("checks")
        for operation in operations:
            if operation.method_name in taken:
                raise GenError(
                    f"operationId {operation.operation_id!r} ({operation.label}) becomes the "
                    f"method name {operation.method_name}, which build_router uses for a variable "
                    "of its own; rename it",
                    path=self.source.display_path,
                    line=operation.line,
                )

    def path_item(self, path: str, item: Any) -> list[Operation]:
        location: Location = ("paths", path)
        if not path.startswith("/"):
            raise self.error(f"path {path!r} must start with /", location)
        if not isinstance(item, dict):
            raise self.error(
                f"path {path} must be a mapping of HTTP methods to operations", location
            )
        if "$ref" in item:
            raise self.error(
                f"path {path}: a $ref path item is not supported; write its operations here",
                location,
            )
        for key in item:
            if key not in HTTP_METHODS and key not in PATH_ITEM_KEYS and not key.startswith("x-"):
                raise self.error(
                    f"unknown key {key!r} in path {path} "
                    f"(expected an HTTP method: {', '.join(HTTP_METHODS)})",
                    (*location, key),
                )
        shared = self.parameter_list(item, location)
        return [
            self.operation(path, method, operation, shared)
            for method, operation in item.items()
            if method in HTTP_METHODS
        ]

    # -- operations -----------------------------------------------------------------------------

    def operation(
        self, path: str, method: str, operation: Any, shared: list[tuple[Any, Location]]
    ) -> Operation:
        location: Location = ("paths", path, method)
        label = f"{method.upper()} {path}"
        if not isinstance(operation, dict):
            raise self.error(f"{label} must be a mapping (an operation)", location)
        operation_id = operation.get("operationId")
        if operation_id is None:
            raise self.error(
                f"{label} has no operationId; every operation needs one "
                "(it names the handler method)",
                location,
            )
        if not isinstance(operation_id, str) or not operation_id.strip():
            raise self.error(
                f"{label}: operationId must be a non-empty string", (*location, "operationId")
            )
        method_name = snake_case(operation_id)
        if (
            not method_name.isidentifier()
            or keyword.iskeyword(method_name)
            or method_name[0].isdigit()
        ):
            raise self.error(
                f"operationId {operation_id!r} ({label}) does not make a Python method name "
                f"({method_name!r}); use letters, digits, '_' or '-', starting with a letter",
                (*location, "operationId"),
            )
        stem = pascal_case(operation_id)

        tags = operation.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise self.error(f"{label}: tags must be a list of strings", (*location, "tags"))

        requirement = self.security_requirement(operation, location, operation_id)
        reserved = RESERVED_NAMES
        if requirement is not None:
            reserved |= {"principal", "checks"} if requirement[1] else {"principal"}
        parameters = self.parameters(
            path, label, stem, shared + self.parameter_list(operation, location), reserved
        )
        security = None
        if requirement is not None:
            scheme, scopes = requirement
            security = Security(
                scheme=scheme,
                checks=tuple(
                    self.check(scope, at, operation_id, parameters) for scope, at in scopes
                ),
            )
        body = self.request_body(operation, location, label, stem)
        success, others = self.responses(operation, location, label, stem)
        return Operation(
            operation_id=operation_id,
            method_name=method_name,
            http_method=method,
            path=path,
            summary=self.text(operation, "summary", location),
            description=self.text(operation, "description", location),
            tags=tuple(tags),
            deprecated=operation.get("deprecated") is True,
            parameters=parameters,
            body=body,
            success=success,
            other_responses=others,
            line=self.source.line(location),
            security=security,
        )

    # -- security -------------------------------------------------------------------------------

    def security_requirement(
        self, operation: dict[str, Any], location: Location, operation_id: str
    ) -> tuple[str, list[tuple[str, Location]]] | None:
        """The bearer scheme an operation requires and its scopes, or None if it is public."""
        if "security" in operation:
            raw, at = operation["security"], (*location, "security")
            what = f"operation {operation_id!r}"
        elif "security" in self.spec:
            raw, at = self.spec["security"], ("security",)
            what = f"operation {operation_id!r} (by the top-level `security`)"
        else:
            return None
        if not isinstance(raw, list):
            raise self.error(
                f"{what}: `security` must be a list of requirements, like [{{BearerAuth: []}}] "
                "or [] (public)",
                at,
            )
        if not raw:
            return None
        for index, requirement in enumerate(raw):
            if not isinstance(requirement, dict):
                raise self.error(
                    f"{what}: a security requirement must be a mapping of a scheme to its scopes",
                    (*at, index),
                )
            if not requirement:
                raise self.error(
                    f"{what}: optional authentication (the empty requirement {{}}) is not "
                    "supported; an operation is either authenticated or public (`security: []`)",
                    (*at, index),
                )
        if len(raw) > 1:
            raise self.error(
                f"{what}: alternative security requirements ({len(raw)} of them) are not "
                "supported; give one, like [{BearerAuth: []}]",
                at,
            )
        requirement, at = raw[0], (*at, 0)
        if len(requirement) > 1:
            raise self.error(
                f"{what}: requiring several security schemes at once ({', '.join(requirement)}) "
                "is not supported",
                at,
            )
        [(scheme, scopes)] = requirement.items()
        at = (*at, scheme)
        self.bearer_scheme(scheme, at, what)
        if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
            raise self.error(
                f"{what}: the scopes of {scheme} must be a list of check rule calls (strings)", at
            )
        return scheme, [(scope, (*at, index)) for index, scope in enumerate(scopes)]

    def bearer_scheme(self, name: str, location: Location, what: str) -> None:
        """Check that the security scheme `name` exists and is an HTTP bearer scheme."""
        if name not in self.security_schemes:
            defined = ", ".join(self.security_schemes) or "none"
            raise self.error(
                f"{what}: unknown security scheme {name!r} "
                f"(components/securitySchemes defines: {defined})",
                location,
            )
        scheme, scheme_location = self.follow(
            self.security_schemes[name],
            ("components", "securitySchemes", name),
            "a security scheme",
        )
        type_, http_scheme = scheme.get("type"), scheme.get("scheme")
        if type_ == "http" and isinstance(http_scheme, str) and http_scheme.lower() == "bearer":
            return
        kind = f"type: {type_}" + (f", scheme: {http_scheme}" if type_ == "http" else "")
        raise self.error(
            f"security scheme {name!r} ({kind}), used by {what}, is not supported: only HTTP "
            "bearer schemes (type: http, scheme: bearer) are",
            scheme_location,
        )

    def check(
        self, text: str, location: Location, operation_id: str, parameters: tuple[Parameter, ...]
    ) -> Check:
        """A scope: the call of a check rule with parameters of the operation and literals."""
        what = f"operation {operation_id!r}: scope {text!r}"
        try:
            node = ast.parse(text.strip(), mode="eval").body
        except (SyntaxError, ValueError):  # ValueError: a null byte
            node = None
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            raise self.error(
                f"{what} is not a check rule call like "
                'IsOrgMember(orgId, "member") (parameter names and literals as arguments)',
                location,
            )
        rule = self.check_rules.get(node.func.id)
        if rule is None:
            defined = ", ".join(self.check_rules) or "none"
            raise self.error(
                f"{what}: unknown check rule {node.func.id!r} (x-check-rules defines: {defined})",
                location,
            )
        if node.keywords:
            raise self.error(
                f"{what}: keyword arguments are not supported; pass the arguments in order",
                location,
            )
        if len(node.args) != len(rule.parameters):
            expected = ", ".join(p.name for p in rule.parameters)
            raise self.error(
                f"{what}: {rule.name} takes {len(rule.parameters)} argument(s) ({expected}), "
                f"got {len(node.args)}",
                location,
            )
        by_name = {p.name: p for p in parameters}
        arguments: list[CheckArgument] = []
        for argument, rule_parameter in zip(node.args, rule.parameters, strict=True):
            target = f"{what}: argument {ast.unparse(argument)} (for {rule_parameter.name})"
            if isinstance(argument, ast.Name):
                parameter = by_name.get(argument.id)
                if parameter is None or parameter.location == "header":
                    names = ", ".join(p.name for p in parameters if p.location != "header")
                    raise self.error(
                        f"{target} is not a path or query parameter of the operation "
                        f"(it has: {names or 'none'})",
                        location,
                    )
                if (problem := self.mismatch(rule_parameter, parameter)) is not None:
                    raise self.error(f"{target}: {problem}", location)
                arguments.append(CheckArgument(parameter=parameter))
            elif isinstance(argument, ast.Constant) and (
                argument.value is None or isinstance(argument.value, str | int | float)
            ):
                if not fits(argument.value, rule_parameter):
                    raise self.error(
                        f"{target} is not a valid {describe(rule_parameter)}", location
                    )
                arguments.append(CheckArgument(value=argument.value))
            else:
                raise self.error(
                    f"{target}: arguments must be parameter names or literals "
                    "(strings, numbers, True, False, None)",
                    location,
                )
        return Check(rule=rule, arguments=tuple(arguments))

    def mismatch(self, rule_parameter: RuleParameter, parameter: Parameter) -> str | None:
        """Why the value of `parameter` cannot be passed to `rule_parameter`, if it cannot."""
        expected = describe(rule_parameter)
        type_ = parameter.type
        if type_.kind == "model":  # an enum: the members of a string enum are strings
            enum_type = self.schemas.get(type_.name, {}).get("type", "string")
            fitting = rule_parameter.type.name == "str" and enum_type == "string"
            got = f"the enum {type_.name}"
        elif type_.kind == "builtin":
            fitting = type_.name == rule_parameter.type.name or (
                type_.name == "int" and rule_parameter.type.name == "float"
            )
            got = type_.name
        else:
            fitting, got = False, "an array"
        if not fitting:
            return f"the parameter is {got}, the rule takes {expected}"
        if not parameter.required and not parameter.has_default and not rule_parameter.nullable:
            return (
                "the parameter is optional without a default (None when absent), but the rule's "
                f"{rule_parameter.name} is not nullable"
            )
        return None

    def rules(self) -> dict[str, CheckRule]:
        """The document's ``x-check-rules``, checked."""
        location: Location = ("x-check-rules",)
        raw = self.spec.get("x-check-rules")
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.error(
                "`x-check-rules` must be a mapping of rule names to "
                "{description, parameters: [{name, schema}]}",
                location,
            )
        rules: dict[str, CheckRule] = {}
        by_method: dict[str, str] = {}
        for name, rule in raw.items():
            rule_location = (*location, name)
            what = f"check rule {name!r}"
            if not name.isidentifier() or keyword.iskeyword(name):
                raise self.error(
                    f"{what}: a rule name must be an identifier (scopes call it: {name}(...))",
                    rule_location,
                )
            method_name = snake_case(name)
            if (
                not method_name.isidentifier()
                or keyword.iskeyword(method_name)
                or method_name[0].isdigit()
            ):
                raise self.error(
                    f"{what} does not make a Python method name ({method_name!r})", rule_location
                )
            if (other := by_method.get(method_name)) is not None:
                raise self.error(
                    f"check rules {other!r} and {name!r} both become the method name "
                    f"{method_name}; rename one",
                    rule_location,
                )
            by_method[method_name] = name
            if not isinstance(rule, dict):
                raise self.error(
                    f"{what} must be a mapping with `description` and `parameters`", rule_location
                )
            self.known_keys(rule, {"description", "parameters"}, rule_location, what)
            if "parameters" not in rule:
                raise self.error(
                    f"{what} needs `parameters`: a list of {{name, schema}} ([] for none)",
                    rule_location,
                )
            rules[name] = CheckRule(
                name=name,
                method_name=method_name,
                description=self.text(rule, "description", rule_location),
                parameters=self.rule_parameters(rule["parameters"], rule_location, what),
            )
        return rules

    def known_keys(
        self, value: dict[str, Any], known: set[str], location: Location, what: str
    ) -> None:
        for key in value:
            if key not in known and not key.startswith("x-"):
                raise self.error(
                    f"{what}: unknown key {key!r} (expected: {', '.join(sorted(known))})",
                    (*location, key),
                )

    def rule_parameters(
        self, raw: Any, rule_location: Location, rule_what: str
    ) -> tuple[RuleParameter, ...]:
        location = (*rule_location, "parameters")
        if not isinstance(raw, list):
            raise self.error(
                f"{rule_what}: `parameters` must be a list of {{name, schema}}", location
            )
        parameters: list[RuleParameter] = []
        for index, parameter in enumerate(raw):
            at = (*location, index)
            if not isinstance(parameter, dict):
                raise self.error(
                    f"{rule_what}: a parameter must be a mapping with `name` and `schema`", at
                )
            name = parameter.get("name")
            if not isinstance(name, str) or not name:
                raise self.error(f"{rule_what}: a parameter needs a `name`", at)
            what = f"{rule_what}: parameter {name!r}"
            self.known_keys(parameter, {"name", "description", "schema"}, at, what)
            py_name = python_name(name, RULE_RESERVED_NAMES)
            for other in parameters:
                if other.name == name or other.py_name == py_name:
                    same = "" if other.name == name else f" (both become {py_name})"
                    raise self.error(
                        f"{rule_what}: duplicate parameter names {other.name!r} and {name!r}{same}",
                        at,
                    )
            type_, nullable, enum = self.rule_parameter_type(parameter, at, what)
            parameters.append(
                RuleParameter(
                    name=name,
                    py_name=py_name,
                    type=type_,
                    nullable=nullable,
                    enum=enum,
                    description=self.text(parameter, "description", at),
                )
            )
        return tuple(parameters)

    def rule_parameter_type(
        self, parameter: dict[str, Any], location: Location, what: str
    ) -> tuple[PyType, bool, tuple[Any, ...] | None]:
        """The type of a rule parameter's scalar schema, whether it is nullable, its enum."""
        schema = parameter.get("schema")
        at = (*location, "schema")
        if not isinstance(schema, dict):
            raise self.error(f"{what} needs a `schema` (a mapping)", location)
        type_ = schema.get("type")
        nullable = schema.get("nullable") is True
        if isinstance(type_, list):  # OpenAPI 3.1: [integer, "null"]
            nullable = nullable or "null" in type_
            non_null = [t for t in type_ if t != "null"]
            type_ = non_null[0] if len(non_null) == 1 else None
        if "$ref" in schema or type_ not in RULE_SCHEMA_TYPES:
            raise self.error(
                f"{what}: unsupported schema; check rule parameters are strings, integers, "
                "numbers or booleans (with a format or an enum), written out in place",
                at,
            )
        scalar = self.scalar_type(type_, schema.get("format"))
        assert scalar is not None
        enum = schema.get("enum")
        if enum is None:
            return scalar, nullable, None
        if not isinstance(enum, list) or not enum:
            raise self.error(f"{what}: `enum` must be a non-empty list", (*at, "enum"))
        checked = RuleParameter(name="", py_name="", type=scalar, nullable=nullable)
        for value in enum:
            if not fits(value, checked):
                raise self.error(
                    f"{what}: enum value {value!r} is not a valid {describe(checked)}",
                    (*at, "enum"),
                )
        return scalar, nullable, tuple(enum)

    # -- parameters -----------------------------------------------------------------------------

    def parameter_list(
        self, container: dict[str, Any], location: Location
    ) -> list[tuple[Any, Location]]:
        raw = container.get("parameters", [])
        if not isinstance(raw, list):
            raise self.error("`parameters` must be a list", (*location, "parameters"))
        return [(item, (*location, "parameters", index)) for index, item in enumerate(raw)]

    def parameters(
        self,
        path: str,
        label: str,
        stem: str,
        raw: list[tuple[Any, Location]],
        reserved: frozenset[str] = RESERVED_NAMES,
    ) -> tuple[Parameter, ...]:
        # Operation-level parameters override path-level ones with the same name and location.
        by_key: dict[tuple[str, str], tuple[dict[str, Any], Location]] = {}
        for value, location in raw:
            parameter, resolved_location = self.follow(value, location, "a parameter")
            name, where = parameter.get("name"), parameter.get("in")
            if not isinstance(name, str) or not name:
                raise self.error(f"{label}: a parameter needs a `name`", resolved_location)
            if not isinstance(where, str):
                raise self.error(
                    f"{label}: parameter {name!r} needs `in` (path, query or header)",
                    resolved_location,
                )
            # Errors point at where the operation uses the parameter (which may be a $ref).
            by_key[(where, name)] = (parameter, location)

        template = re.findall(r"{([^}/]+)}", path)
        parameters = [
            self.parameter(parameter, location, label, stem, reserved)
            for parameter, location in by_key.values()
        ]
        declared = {p.name for p in parameters if p.location == "path"}
        for name in template:
            if name not in declared:
                raise self.error(
                    f"{label}: path parameter {{{name}}} is not declared in `parameters`",
                    ("paths", path),
                )
        for parameter, location in by_key.values():
            if parameter["in"] == "path" and parameter["name"] not in template:
                raise self.error(
                    f"{label}: path parameter {parameter['name']!r} does not appear in the path",
                    location,
                )

        seen: dict[str, Parameter] = {}
        for parameter in parameters:
            if (other := seen.get(parameter.py_name)) is not None:
                raise self.error(
                    f"{label}: parameters {other.name!r} ({other.location}) and {parameter.name!r} "
                    f"({parameter.location}) both become the Python name {parameter.py_name}",
                    next(loc for p, loc in by_key.values() if p["name"] == parameter.name),
                )
            seen[parameter.py_name] = parameter
        order = {"path": 0, "query": 1, "header": 2}
        return tuple(sorted(parameters, key=lambda p: order[p.location]))

    def parameter(
        self,
        parameter: dict[str, Any],
        location: Location,
        label: str,
        stem: str,
        reserved: frozenset[str] = RESERVED_NAMES,
    ) -> Parameter:
        name: str = parameter["name"]
        where: str = parameter["in"]
        what = f"{label}: parameter {name!r}"
        if where not in PARAM_LOCATIONS:
            raise self.error(
                f"{what}: unsupported parameter location `in: {where}` "
                "(supported: path, query, header)",
                location,
            )
        if "content" in parameter:
            raise self.error(
                f"{what}: parameters with `content` are not supported; use `schema`", location
            )
        style = parameter.get("style")
        expected_style = "form" if where == "query" else "simple"
        if style is not None and style != expected_style:
            raise self.error(
                f"{what}: unsupported style {style!r} "
                f"(supported for {where} parameters: {expected_style})",
                location,
            )
        required = parameter.get("required", False)
        if where == "path" and required is not True:
            raise self.error(f"{what}: path parameters must have `required: true`", location)
        if not isinstance(required, bool):
            raise self.error(f"{what}: `required` must be true or false", location)

        schema = parameter.get("schema")
        if schema is None:
            raise self.error(f"{what} has no `schema`", location)
        schema_location = (*location, "schema")
        type_ = self.parameter_type(schema, schema_location, what, f"{stem}{pascal_case(name)}")
        if type_.kind == "list":
            if where != "query":
                raise self.error(
                    f"{what}: array parameters are supported in the query only", location
                )
            if parameter.get("explode", True) is not True:
                raise self.error(
                    f"{what}: unsupported `explode: false`; arrays are read as repeated parameters "
                    f"(?{name}=a&{name}=b)",
                    location,
                )

        resolved, _ = self.follow(schema, schema_location, "a schema")
        has_default = "default" in resolved and not required and type_.kind != "list"
        default = resolved.get("default")
        if has_default:
            self.check_default(default, resolved, type_, what, schema_location)
        return Parameter(
            name=name,
            location=PARAM_LOCATIONS[where],
            py_name=python_name(name, reserved),
            type=type_,
            required=required,
            has_default=has_default,
            default=default,
            description=self.text(parameter, "description", location),
            deprecated=parameter.get("deprecated") is True,
            constraints=self.constraints(schema),
        )

    def parameter_type(self, schema: Any, location: Location, what: str, enum_name: str) -> PyType:
        if not isinstance(schema, dict):
            raise self.error(f"{what}: `schema` must be a mapping", location)
        if "$ref" in schema:
            name = self.schema_name(schema, location)
            target, target_location = self.follow(schema, location, "a schema")
            if "enum" in target:
                return PyType("model", name)
            return self.parameter_type(target, target_location, what, enum_name)
        if "enum" in schema:
            return PyType("model", self.hoist(enum_name, schema, location))
        type_ = self.schema_type(schema, location)
        if type_ == "array":
            items = schema.get("items")
            if items is None:
                raise self.error(f"{what}: an array schema needs `items`", location)
            item = self.parameter_type(items, (*location, "items"), what, enum_name)
            if item.kind == "list":
                raise self.error(
                    f"{what}: arrays of arrays are not supported as parameters", location
                )
            return PyType("list", item=item)
        scalar = self.scalar_type(type_, schema.get("format"))
        if scalar is None:
            raise self.error(
                f"{what}: unsupported parameter schema (type {type_}); "
                "parameters can be strings, numbers, "
                "integers, booleans, enums or (in the query) arrays of those",
                location,
            )
        return scalar

    def check_default(
        self, default: Any, schema: dict[str, Any], type_: PyType, what: str, location: Location
    ) -> None:
        ok = {
            "int": isinstance(default, int) and not isinstance(default, bool),
            "float": isinstance(default, int | float) and not isinstance(default, bool),
            "bool": isinstance(default, bool),
            "str": isinstance(default, str),
        }
        if type_.kind == "model":
            valid = default in schema.get("enum", [])
        else:
            valid = ok.get(type_.name, False)
        expected = type_.name if type_.kind == "builtin" else "enum value"
        if not valid:
            raise self.error(
                f"{what}: default {default!r} is not a valid {expected} (defaults are "
                "supported for string, integer, number, boolean and enum parameters)",
                (*location, "default"),
            )

    def constraints(self, schema: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        """FastAPI's validation keywords for a parameter's own (not referenced) schema."""
        if "$ref" in schema:
            return ()
        found: list[tuple[str, Any]] = []
        number = (int, float)
        minimum, maximum = schema.get("minimum"), schema.get("maximum")
        exclusive_min, exclusive_max = (
            schema.get("exclusiveMinimum"),
            schema.get("exclusiveMaximum"),
        )
        if isinstance(exclusive_min, number) and not isinstance(exclusive_min, bool):
            found.append(("gt", exclusive_min))  # OpenAPI 3.1
        elif isinstance(minimum, number) and not isinstance(minimum, bool):
            found.append(("gt" if exclusive_min is True else "ge", minimum))
        if isinstance(exclusive_max, number) and not isinstance(exclusive_max, bool):
            found.append(("lt", exclusive_max))
        elif isinstance(maximum, number) and not isinstance(maximum, bool):
            found.append(("lt" if exclusive_max is True else "le", maximum))
        for keyword_, name in (
            ("minLength", "min_length"),
            ("maxLength", "max_length"),
            ("minItems", "min_length"),
            ("maxItems", "max_length"),
        ):
            if isinstance(schema.get(keyword_), int):
                found.append((name, schema[keyword_]))
        if isinstance(schema.get("pattern"), str):
            found.append(("pattern", schema["pattern"]))
        return tuple(found)

    # -- bodies ---------------------------------------------------------------------------------

    def request_body(
        self, operation: dict[str, Any], location: Location, label: str, stem: str
    ) -> RequestBody | None:
        if "requestBody" not in operation:
            return None
        body_location = (*location, "requestBody")
        body, resolved_location = self.follow(
            operation["requestBody"], body_location, "requestBody"
        )
        schema_at = self.json_schema(body, resolved_location, f"{label}: request body")
        if schema_at is None:
            media_types = ", ".join(body.get("content") or {}) or "none"
            raise self.error(
                f"{label}: unsupported request body media types ({media_types}); "
                "Anchor reads application/json bodies",
                body_location,
            )
        schema, schema_location = schema_at
        required = body.get("required", False)
        return RequestBody(
            type=self.body_type(schema, schema_location, f"{stem}Request"),
            required=required is True,
            description=self.text(body, "description", resolved_location),
        )

    def json_schema(
        self, container: dict[str, Any], location: Location, what: str
    ) -> tuple[Any, Location] | None:
        """The schema of the first JSON media type in `container`'s content, if it has one."""
        content = container.get("content")
        if content is None:
            return None
        if not isinstance(content, dict):
            raise self.error(
                f"{what}: `content` must be a mapping of media types", (*location, "content")
            )
        for media_type, media in content.items():
            if is_json_media_type(media_type):
                media_location = (*location, "content", media_type)
                if not isinstance(media, dict):
                    raise self.error(f"{what}: {media_type} must be a mapping", media_location)
                if "schema" not in media:
                    return {}, media_location
                return media["schema"], (*media_location, "schema")
        return None

    def body_type(self, schema: Any, location: Location, name: str) -> PyType:
        """A JSON body's type: a component's model, a list or scalar, or a hoisted inline model."""
        if not isinstance(schema, dict):
            raise self.error("a schema must be a mapping", location)
        if "$ref" in schema:
            return PyType("model", self.schema_name(schema, location))
        if not schema:
            return PyType("any")
        simple = set(schema) <= {"type", "format", "description", "title", "items"}
        type_ = self.schema_type(schema, location) if simple else None
        if type_ == "array" and isinstance(schema.get("items"), dict):
            return PyType(
                "list", item=self.body_type(schema["items"], (*location, "items"), f"{name}Item")
            )
        if type_ == "object" and "items" not in schema:
            return PyType("dict")
        if type_ is not None and "items" not in schema:
            scalar = self.scalar_type(type_, schema.get("format"))
            if scalar is not None:
                return scalar
        return PyType("model", self.hoist(name, schema, location))

    def responses(
        self, operation: dict[str, Any], location: Location, label: str, stem: str
    ) -> tuple[Response, tuple[Response, ...]]:
        responses_location = (*location, "responses")
        raw = operation.get("responses")
        if not isinstance(raw, dict) or not raw:
            raise self.error(
                f"{label} needs `responses` with at least one status code", responses_location
            )
        for status in raw:
            if status != "default" and not re.fullmatch(r"[1-5](\d\d|XX)", status):
                raise self.error(
                    f"{label}: {status!r} is not a status code", (*responses_location, status)
                )
        successes = sorted(status for status in raw if re.fullmatch(r"2\d\d", status))
        if not successes:
            raise self.error(
                f"{label} documents no 2xx response; "
                "the first 2xx response is what the handler returns",
                responses_location,
            )
        success_status = successes[0]
        success: Response | None = None
        others: list[Response] = []
        for status, value in raw.items():
            response_location = (*responses_location, status)
            response, resolved_location = self.follow(value, response_location, "a response")
            description = self.text(response, "description", resolved_location) or ""
            schema_at = self.json_schema(response, resolved_location, f"{label}: response {status}")
            if status == success_status:
                if schema_at is None and response.get("content"):
                    raise self.error(
                        f"{label}: unsupported media types for response {status} "
                        f"({', '.join(response['content'])}); "
                        "Anchor returns application/json or no content",
                        response_location,
                    )
                name = f"{stem}Response"
            else:
                name = f"{stem}{pascal_case(status)}Response"
            type_ = (
                self.body_type(schema_at[0], schema_at[1], name) if schema_at is not None else None
            )
            entry = Response(status=status, description=description, type=type_)
            if status == success_status:
                success = entry
            else:
                others.append(entry)
        assert success is not None
        return success, tuple(others)

    # -- schemas --------------------------------------------------------------------------------

    def schema_name(self, schema: dict[str, Any], location: Location) -> str:
        """The components/schemas key a `$ref` names; other targets are not models."""
        ref: str = schema["$ref"]
        name = unquote(ref[len(SCHEMA_REF_PREFIX) :]).replace("~1", "/").replace("~0", "~")
        if not ref.startswith(SCHEMA_REF_PREFIX) or "/" in name:
            raise self.error(
                f"$ref {ref!r}: bodies and parameters must refer to a schema in components/schemas "
                f"({SCHEMA_REF_PREFIX}<Name>)",
                (*location, "$ref"),
            )
        return name

    def schema_type(self, schema: dict[str, Any], location: Location) -> str | None:
        """The schema's `type`, allowing OpenAPI 3.1's ``[T, "null"]``."""
        type_ = schema.get("type")
        if isinstance(type_, list):
            non_null = [t for t in type_ if t != "null"]
            type_ = non_null[0] if len(non_null) == 1 else None
        if type_ is not None and not isinstance(type_, str):
            raise self.error("`type` must be a string", (*location, "type"))
        return type_

    def scalar_type(self, type_: str | None, format_: Any) -> PyType | None:
        if type_ == "integer":
            return PyType("builtin", "int")
        if type_ == "number":
            return PyType("builtin", "float")
        if type_ == "boolean":
            return PyType("builtin", "bool")
        if type_ == "string" or type_ is None:
            by_format = {
                "date-time": "datetime.datetime",
                "date": "datetime.date",
                "uuid": "uuid.UUID",
            }
            return PyType(
                "builtin", by_format.get(format_, "str") if isinstance(format_, str) else "str"
            )
        return None

    def hoist(self, name: str, schema: dict[str, Any], location: Location) -> str:
        """Add an inline schema to the models under `name` (derived from the operationId)."""
        if name in self.schemas:
            what = (
                "another inline schema"
                if name in self.hoisted
                else "a schema in components/schemas"
            )
            raise self.error(
                f"this inline schema would get the model name {name!r}, which {what} already has; "
                "move the schema into components/schemas under a name of your choice",
                location,
            )
        self.schemas[name] = copy.deepcopy(schema)
        self.hoisted.add(name)
        return name
