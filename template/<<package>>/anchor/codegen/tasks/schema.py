"""Check a task's `parameters` JSON Schema and prepare it for the models generator.

The check catches what would otherwise surface as a confusing generator error or, worse, as a
model that silently ignores part of the schema: unknown keywords (``requried``), ``required``
naming a property that does not exist, wrong value types, invalid patterns, ``$ref`` (tasks.yaml
has nowhere to refer to). Keywords starting with ``x-`` are left alone.

Preparing the schema (on a copy) does two things:

- nested objects and enums become named schemas, so their models are named after the task and the
  property path (``SendEmailRecipient``, ``SendEmailRecipientKind``, ``SendEmailAttachmentsItem``)
  instead of a bare property name with a number on collision (``Kind1``);
- ``format: email`` becomes a ``pattern`` (see EMAIL_PATTERN).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from ..openapi.source import Location
from ..openapi.spec import pascal_case

# ``format: email`` is checked with this pattern rather than pydantic's EmailStr, which needs the
# email-validator package (and dnspython) at import time. A task's parameters are checked when
# it is enqueued; whether the address exists is the executor's business.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

TYPES = {"string", "integer", "number", "boolean", "array", "object", "null"}
SCHEMA_KEYWORDS = {"items", "additionalProperties", "not"}
SCHEMA_LIST_KEYWORDS = {"allOf", "anyOf", "oneOf"}
NUMBER_KEYWORDS = {"minimum", "maximum", "multipleOf"}
COUNT_KEYWORDS = {
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
}
BOOL_KEYWORDS = {"nullable", "uniqueItems", "deprecated", "readOnly", "writeOnly"}
STRING_KEYWORDS = {"description", "title", "format", "pattern"}
FREE_KEYWORDS = {"default", "example", "examples", "const"}
KEYWORDS = (
    {"type", "properties", "required", "enum", "exclusiveMinimum", "exclusiveMaximum"}
    | SCHEMA_KEYWORDS
    | SCHEMA_LIST_KEYWORDS
    | NUMBER_KEYWORDS
    | COUNT_KEYWORDS
    | BOOL_KEYWORDS
    | STRING_KEYWORDS
    | FREE_KEYWORDS
)

# (message, location) -> the error to raise; the caller knows the file and the task.
Fail = Callable[[str, Location], Exception]


def check_parameters(schema: Any, location: Location, fail: Fail) -> None:
    """Raise `fail(...)` at the first problem in a task's `parameters` schema."""
    if not isinstance(schema, dict):
        raise fail("`parameters` must be a JSON Schema object (a mapping)", location)
    if schema.get("type") != "object":
        raise fail(
            "`parameters` must be an object schema: `type: object` with `properties`", location
        )
    _check(schema, location, fail)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(schema: Any, location: Location, fail: Fail) -> None:
    if not isinstance(schema, dict):
        raise fail("a schema must be a mapping", location)
    for key, value in schema.items():
        at = (*location, key)
        if key.startswith("x-"):
            continue
        if key == "$ref":
            raise fail("$ref is not supported in tasks.yaml; write the schema inline", at)
        if key not in KEYWORDS:
            raise fail(f"unknown JSON Schema keyword {key!r}", at)
        if key == "type":
            types = value if isinstance(value, list) else [value]
            if not types or any(not isinstance(t, str) or t not in TYPES for t in types):
                raise fail(
                    f"`type` must be one of {', '.join(sorted(TYPES))} (or a list of them), "
                    f"not {value!r}",
                    at,
                )
        elif key == "properties":
            if not isinstance(value, dict):
                raise fail("`properties` must be a mapping of property names to schemas", at)
            for name, property_schema in value.items():
                _check(property_schema, (*at, name), fail)
        elif key == "required":
            _check_required(schema, value, at, fail)
        elif key == "enum":
            if not isinstance(value, list) or not value:
                raise fail("`enum` must be a non-empty list of values", at)
            if any(isinstance(item, dict | list) for item in value):
                raise fail("`enum` values must be strings, numbers, booleans or null", at)
            if len({repr(item) for item in value}) != len(value):
                raise fail("`enum` lists a value twice", at)
        elif key in SCHEMA_KEYWORDS:
            if not (key == "additionalProperties" and isinstance(value, bool)):
                _check(value, at, fail)
        elif key in SCHEMA_LIST_KEYWORDS:
            if not isinstance(value, list) or not value:
                raise fail(f"`{key}` must be a non-empty list of schemas", at)
            for index, item in enumerate(value):
                _check(item, (*at, index), fail)
        elif key in NUMBER_KEYWORDS or key in ("exclusiveMinimum", "exclusiveMaximum"):
            if not _is_number(value) and not (key.startswith("exclusive") and value is True):
                raise fail(f"`{key}` must be a number", at)
        elif key in COUNT_KEYWORDS:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise fail(f"`{key}` must be a whole number, 0 or more", at)
        elif key in BOOL_KEYWORDS:
            if not isinstance(value, bool):
                raise fail(f"`{key}` must be true or false", at)
        elif key in STRING_KEYWORDS:
            if not isinstance(value, str):
                raise fail(f"`{key}` must be a string", at)
            if key == "pattern":
                try:
                    re.compile(value)
                except re.error as exc:
                    raise fail(f"`pattern` is not a valid regular expression: {exc}", at) from None
    enum = schema.get("enum")
    if "default" in schema and isinstance(enum, list) and schema["default"] not in enum:
        raise fail(f"default {schema['default']!r} is not one of the enum values", location)


def _check_required(schema: dict[str, Any], value: Any, at: Location, fail: Fail) -> None:
    if isinstance(value, bool):
        raise fail(
            "`required` must be a list of property names on the object, not true/false on a "
            "property (write `required: [name, ...]` next to `properties`)",
            at,
        )
    if not isinstance(value, list) or any(not isinstance(name, str) for name in value):
        raise fail("`required` must be a list of property names", at)
    properties = schema.get("properties")
    for index, name in enumerate(value):
        if isinstance(properties, dict) and name not in properties:
            raise fail(f"required property {name!r} is not in `properties`", (*at, index))
        if value.index(name) != index:
            raise fail(f"`required` lists {name!r} twice", (*at, index))


def prepare(schema: dict[str, Any], class_name: str, stem: str) -> dict[str, dict[str, Any]]:
    """The named schemas to generate for one task: its parameters (`class_name`) and their nested
    models (named `stem` + the property path).

    `schema` has passed `check_parameters`; it is not changed.
    """
    named: dict[str, dict[str, Any]] = {}
    named[class_name] = _prepare(copy.deepcopy(schema), stem, named)
    return named


def nested_locations(
    schema: dict[str, Any], class_name: str, location: Location
) -> list[tuple[str, Location]]:
    """(model name, location) of every nested model `prepare` names, for collision errors."""
    found: list[tuple[str, Location]] = []
    _walk_names(schema, class_name, location, found)
    return found


def _hoisted(schema: Any) -> bool:
    """Whether a property's schema becomes a model of its own: an enum or an object with fields."""
    if not isinstance(schema, dict):
        return False
    return "enum" in schema or (
        isinstance(schema.get("properties"), dict) and bool(schema["properties"])
    )


def _children(schema: dict[str, Any], name: str) -> list[tuple[str, Location, Any]]:
    """(model name, relative location, schema) of the nested schemas `schema` names."""
    found: list[tuple[str, Location, Any]] = []
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for prop, sub in properties.items():
            child = f"{name}{pascal_case(prop)}"
            found.append((child, ("properties", prop), sub))
    items = schema.get("items")
    if isinstance(items, dict):
        found.append((f"{name}Item", ("items",), items))
    return found


def _walk_names(
    schema: dict[str, Any], name: str, location: Location, found: list[tuple[str, Location]]
) -> None:
    for child, relative, sub in _children(schema, name):
        if not isinstance(sub, dict):
            continue
        if _hoisted(sub):
            found.append((child, (*location, *relative)))
        _walk_names(sub, child, (*location, *relative), found)


def _prepare(schema: dict[str, Any], name: str, named: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if schema.get("format") == "email":
        del schema["format"]
        schema.setdefault("pattern", EMAIL_PATTERN)
    for child, relative, sub in _children(schema, name):
        if not isinstance(sub, dict):
            continue
        prepared = _prepare(sub, child, named)
        if _hoisted(sub):
            named[child] = prepared
            prepared = {"$ref": f"#/components/schemas/{child}"}
        if relative[0] == "items":
            schema["items"] = prepared
        else:
            schema["properties"][relative[1]] = prepared
    return schema
