"""Read sqlc's GenerateRequest (its JSON output) into the small model the renderer needs.

sqlc does the hard part (parsing SQL, inferring column and parameter types); this module
maps PostgreSQL types to Python types, names things the Python way and rejects what the
generated code cannot support, with the file and line of the offending query.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GenError

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_temp", "pg_toast"})

# An import is (module, name): ("datetime", None) is `import datetime`,
# ("uuid", "UUID") is `from uuid import UUID`.
Import = tuple[str, str | None]

_ANY: tuple[str, tuple[Import, ...]] = ("Any", (("typing", "Any"),))

# PostgreSQL type name -> (Python annotation, imports), as asyncpg decodes the type
# (with json/jsonb decoded by the `register_codecs` of the generated db.py).
_BUILTINS: dict[str, tuple[str, tuple[Import, ...]]] = {}


def _builtin(names: str, annotation: str, *imports: Import) -> None:
    for name in names.split(","):
        _BUILTINS[name.strip()] = (annotation, imports)


_builtin(
    "int2, int4, int8, smallint, integer, int, bigint, smallserial, serial, bigserial,"
    " serial2, serial4, serial8, oid",
    "int",
)
_builtin("float4, float8, real, double precision, float", "float")
_builtin("numeric, decimal", "Decimal", ("decimal", "Decimal"))
_builtin("bool, boolean", "bool")
_builtin(
    "text, varchar, character varying, bpchar, char, character, name, citext, money,"
    " xml, macaddr, macaddr8",
    "str",
)
_builtin("bytea", "bytes")
_builtin("date", "datetime.date", ("datetime", None))
_builtin(
    "time, timetz, time without time zone, time with time zone", "datetime.time", ("datetime", None)
)
_builtin(
    "timestamp, timestamptz, timestamp without time zone, timestamp with time zone",
    "datetime.datetime",
    ("datetime", None),
)
_builtin("interval", "datetime.timedelta", ("datetime", None))
_builtin("uuid", "UUID", ("uuid", "UUID"))
_builtin("inet", "IPAddress", (".models", "IPAddress"))
_builtin("cidr", "IPNetwork", (".models", "IPNetwork"))
_builtin("json, jsonb", "Any", ("typing", "Any"))
# Types sqlc could not infer (e.g. the result of max()): Any, and not worth a comment.
_builtin("any, anyelement, anyarray, anynonarray, anyenum, unknown", "Any", ("typing", "Any"))

# Names a dataclass field must not take: in a class body a field named like a type
# hides that type from the annotations of the fields after it.
_RESERVED_FIELDS = frozenset({"datetime", "int", "float", "str", "bytes", "bool", "list"})


@dataclass(frozen=True)
class PyType:
    """The Python type of one column or parameter."""

    base: str  # "int", "datetime.date", "Mood", "Any"
    imports: tuple[Import, ...] = ()
    enum: str | None = None  # the StrEnum class, when values must be converted
    dims: int = 0  # array dimensions: list[...] this many times
    nullable: bool = False
    unknown: str | None = None  # the PostgreSQL type, when it has no Python mapping

    def annotation(self, *, sequence: bool = False) -> str:
        """The annotation: `list[...]` for results, `Sequence[...]` (sequence=True) for inputs."""
        text = self.base
        for _ in range(self.dims):
            text = f"Sequence[{text}]" if sequence else f"list[{text}]"
        if self.nullable and text != "Any":
            text += " | None"
        return text

    def annotation_imports(self, *, sequence: bool = False) -> tuple[Import, ...]:
        if sequence and self.dims:
            return (*self.imports, ("collections.abc", "Sequence"))
        return self.imports

    def decode(self, expr: str) -> str:
        """The expression turning the asyncpg value `expr` into this type."""
        if self.enum is None:
            return expr
        names = ["v", *(f"v{i}" for i in range(2, self.dims + 1))]
        inner = f"{self.enum}({names[0]})" if self.dims else f"{self.enum}({expr})"
        for depth in range(self.dims):
            source = expr if depth == self.dims - 1 else names[depth + 1]
            inner = f"[{inner} for {names[depth]} in {source}]"
        if self.nullable:
            return f"None if {expr} is None else {inner}"
        return inner

    def same_as(self, other: PyType) -> bool:
        return (self.base, self.dims, self.nullable) == (other.base, other.dims, other.nullable)


@dataclass(frozen=True)
class Field:
    """One column of a model or row, or one parameter of a query."""

    name: str  # Python identifier
    column: str  # the name in SQL
    type: PyType
    comment: str = ""
    embed: Model | None = None  # sqlc.embed(table): the field holds that table's model


@dataclass(frozen=True)
class Model:
    """A table (or view) of the user's schema."""

    class_name: str
    schema: str
    table: str
    fields: tuple[Field, ...]
    comment: str = ""


@dataclass(frozen=True)
class Enum:
    class_name: str
    schema: str
    name: str
    members: tuple[tuple[str, str], ...]  # (Python name, value)
    comment: str = ""


@dataclass
class Query:
    name: str  # as in `-- name: GetCounter :one`
    cmd: str  # ":one", ":many", ...
    filename: str  # the query file, e.g. "counter.sql"
    path: str  # for messages and the header, e.g. "sql/queries/counter.sql"
    line: int | None
    method: str  # get_counter
    const: str  # GET_COUNTER
    sql: str
    doc: str
    params: list[Field]
    columns: list[Field]
    # The result: a table's model, a generated <Name>Row, or one column's type (scalar).
    model: Model | None = None
    row_class: str | None = None
    params_class: str | None = None  # <Name>Params, for :copyfrom and :batchexec
    copy_table: tuple[str, str] | None = None  # (schema or "", table) for :copyfrom

    @property
    def scalar(self) -> Field | None:
        if self.model is None and self.row_class is None and len(self.columns) == 1:
            return self.columns[0]
        return None


@dataclass
class Catalog:
    default_schema: str
    enums: list[Enum] = field(default_factory=list)
    models: list[Model] = field(default_factory=list)
    _enums: dict[tuple[str, str], Enum] = field(default_factory=dict)
    _models: dict[tuple[str, str], Model] = field(default_factory=dict)

    def enum(self, schema: str, name: str) -> Enum | None:
        return self._enums.get((schema or self.default_schema, name))

    def model(self, schema: str, name: str) -> Model | None:
        return self._models.get((schema or self.default_schema, name))

    def py_type(self, column: dict[str, Any]) -> PyType:
        """Map a sqlc Column (its type, nullability and array dimensions) to a Python type."""
        schema, name = type_name(column.get("type") or {})
        dims = int(column.get("array_dims") or 0)
        if column.get("is_array") and dims == 0:
            dims = 1
        nullable = not column.get("not_null", False)
        if schema in ("", "pg_catalog") or name == "citext":
            builtin = _BUILTINS.get(name.lower())
            if builtin is not None:
                base, imports = builtin
                return PyType(base, imports, dims=dims, nullable=nullable)
        enum = self.enum(schema, name)
        if enum is not None:
            enum_import: tuple[Import, ...] = ((".models", enum.class_name),)
            return PyType(
                enum.class_name, enum_import, enum=enum.class_name, dims=dims, nullable=nullable
            )
        pg_name = f"{schema}.{name}" if schema else name
        return PyType(*_ANY, dims=dims, nullable=nullable, unknown=pg_name or "?")


def type_name(t: dict[str, Any]) -> tuple[str, str]:
    """(schema, name) of a sqlc Identifier: both `{name: "pg_catalog.int4"}` and
    `{schema: "pg_catalog", name: "int4"}` occur."""
    schema = t.get("schema") or ""
    name = t.get("name") or ""
    if not schema and "." in name:
        schema, _, name = name.rpartition(".")
    return schema, name


# --- naming ---------------------------------------------------------------------------


def snake_case(name: str) -> str:
    """GetAuthorByID -> get_author_by_id, minValue -> min_value, "so-so" -> so_so."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    name = re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_")
    return name.lower()


def camel_case(name: str) -> str:
    """all_types -> AllTypes, user-accounts -> UserAccounts."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9a-zA-Z]+", name) if part)


_UNCOUNTABLE = frozenset(
    {"data", "metadata", "news", "series", "species", "information", "equipment", "sheep", "fish"}
)


def singular(word: str) -> str:
    """authors -> author, categories -> category, boxes -> box, status -> status.

    The same idea as sqlc's Go models (which singularize table names), with simpler rules.
    """
    lower = word.lower()
    if lower in _UNCOUNTABLE or len(word) < 3:
        return word
    for plural, one in _IRREGULAR:
        if lower.endswith(plural):
            return word[: len(word) - len(plural)] + _same_case(one, word[-len(plural)])
    if lower.endswith("ies") and len(word) > 4:
        return word[:-3] + _same_case("y", word[-3])
    if lower.endswith(("sses", "shes", "ches", "xes", "zzes", "uses")):
        return word[:-2]
    if lower.endswith(("ss", "us", "is", "os")):
        return word
    if lower.endswith("s"):
        return word[:-1]
    return word


_IRREGULAR = (
    ("people", "person"),
    ("children", "child"),
    ("movies", "movie"),
    ("aliases", "alias"),
    ("indices", "index"),
    ("matrices", "matrix"),
    ("vertices", "vertex"),
)


def _same_case(text: str, like: str) -> str:
    return text[:1].upper() + text[1:] if like.isupper() else text


def identifier(name: str, fallback: str, *, reserved: frozenset[str] = frozenset()) -> str:
    """A snake_case Python identifier for a SQL name; `fallback` when nothing is left."""
    ident = snake_case(name) or fallback
    if ident[0].isdigit():
        ident = f"{fallback.rstrip('_0123456789') or 'x'}_{ident}"
    if keyword.iskeyword(ident) or ident in reserved or ident == "self":
        ident += "_"
    return ident


def unique(names: list[str]) -> list[str]:
    """Suffix repeated names: id, id -> id, id_2 (as sqlc's Go output does)."""
    seen: dict[str, int] = {}
    taken = set(names)
    result = []
    for name in names:
        if name not in seen:
            seen[name] = 1
            result.append(name)
            continue
        n = seen[name]
        while True:
            n += 1
            candidate = f"{name}_{n}"
            if candidate not in taken:
                break
        seen[name] = n
        taken.add(candidate)
        result.append(candidate)
    return result


def enum_member(value: str) -> str:
    name = re.sub(r"[^0-9a-zA-Z]+", "_", value).strip("_").upper()
    if not name:
        return "EMPTY" if value == "" else "VALUE"
    if name[0].isdigit():
        name = f"V_{name}"
    return name


# --- the catalog ------------------------------------------------------------------------


def read_catalog(request: dict[str, Any]) -> Catalog:
    raw = request.get("catalog") or {}
    default_schema = raw.get("default_schema") or "public"
    catalog = Catalog(default_schema)
    user_schemas = [
        s
        for s in raw.get("schemas") or []
        if s.get("name") not in SYSTEM_SCHEMAS and not str(s.get("name", "")).startswith("pg_")
    ]

    def class_name(schema: str, name: str) -> str:
        prefix = "" if schema == default_schema else camel_case(schema)
        return prefix + camel_case(name)

    # Enums first: table columns refer to them.
    for schema in user_schemas:
        schema_name = schema.get("name") or default_schema
        for raw_enum in schema.get("enums") or []:
            values = list(raw_enum.get("vals") or [])
            members = unique([enum_member(v) for v in values])
            enum = Enum(
                class_name=class_name(schema_name, raw_enum["name"]),
                schema=schema_name,
                name=raw_enum["name"],
                members=tuple(zip(members, values, strict=True)),
                comment=raw_enum.get("comment") or "",
            )
            catalog.enums.append(enum)
            catalog._enums[(schema_name, enum.name)] = enum

    for schema in user_schemas:
        schema_name = schema.get("name") or default_schema
        for table in schema.get("tables") or []:
            rel = table.get("rel") or {}
            table_name = rel.get("name") or ""
            words = table_name.rsplit("_", 1)
            words[-1] = singular(words[-1])
            fields = _fields(catalog, table.get("columns") or [])
            model = Model(
                class_name=class_name(schema_name, "_".join(words)),
                schema=schema_name,
                table=table_name,
                fields=tuple(fields),
                comment=table.get("comment") or "",
            )
            catalog.models.append(model)
            catalog._models[(schema_name, table_name)] = model

    _check_unique(
        [(e.class_name, f"enum {e.schema}.{e.name}") for e in catalog.enums]
        + [(m.class_name, f"table {m.schema}.{m.table}") for m in catalog.models]
    )
    return catalog


def _fields(catalog: Catalog, columns: list[dict[str, Any]]) -> list[Field]:
    names = unique(
        [
            identifier(c.get("name") or "", f"column_{i + 1}", reserved=_RESERVED_FIELDS)
            for i, c in enumerate(columns)
        ]
    )
    fields = []
    for name, column in zip(names, columns, strict=True):
        embed = column.get("embed_table")
        if embed:
            schema, table = embed.get("schema") or "", embed.get("name") or ""
            model = catalog.model(schema, table)
            if model is None:  # pragma: no cover - sqlc resolves embeds against the catalog
                raise GenError(f"sqlc.embed({table}): unknown table")
            fields.append(Field(snake_case(table), table, PyType(model.class_name), embed=model))
            continue
        fields.append(
            Field(
                name, column.get("name") or "", catalog.py_type(column), column.get("comment") or ""
            )
        )
    return fields


def _check_unique(names: list[tuple[str, str]], *, path: str | None = None) -> None:
    seen: dict[str, str] = {}
    for name, what in names:
        if name in seen:
            raise GenError(
                f"{what} and {seen[name]} would both generate the Python class {name}; rename one",
                path=path,
            )
        seen[name] = what


# --- queries ----------------------------------------------------------------------------

SUPPORTED_COMMANDS = (
    ":one",
    ":many",
    ":exec",
    ":execrows",
    ":execresult",
    ":copyfrom",
    ":batchexec",
)

_NAME_LINE = re.compile(r"^\s*--\s*name:\s*(\S+)\s+:\w+")


class QueryFiles:
    """Finds the `-- name:` line of a query in its file, for error messages."""

    def __init__(self, queries_dir: str, root: Path) -> None:
        self.queries_dir = queries_dir.rstrip("/") or "."
        self.root = root  # queries_dir is relative to it
        self._lines: dict[str, dict[str, int]] = {}
        self._paths: dict[str, str] = {}

    def path(self, filename: str) -> str:
        """The query file as shown to the user: `queries_dir/filename`."""
        if filename not in self._paths:
            directory = self.root / self.queries_dir
            path = f"{self.queries_dir}/{filename}"
            if not (directory / filename).is_file() and directory.is_dir():
                # sqlc names the file only; look for it below queries_dir.
                matches = sorted(p for p in directory.rglob(Path(filename).name) if p.is_file())
                if matches:
                    path = f"{self.queries_dir}/{matches[0].relative_to(directory).as_posix()}"
            self._paths[filename] = path
        return self._paths[filename]

    def line(self, filename: str, name: str) -> int | None:
        if filename not in self._lines:
            lines: dict[str, int] = {}
            try:
                text = (self.root / self.path(filename)).read_text(encoding="utf-8")
            except OSError:
                text = ""
            for number, line in enumerate(text.splitlines(), start=1):
                match = _NAME_LINE.match(line)
                if match:
                    lines.setdefault(match.group(1), number)
            self._lines[filename] = lines
        return self._lines[filename].get(name)


def read_queries(request: dict[str, Any], catalog: Catalog, files: QueryFiles) -> list[Query]:
    queries: list[Query] = []
    by_name: dict[str, Query] = {}
    by_method: dict[str, Query] = {}
    for raw in request.get("queries") or []:
        name = raw.get("name") or ""
        filename = raw.get("filename") or ""
        path = files.path(filename)
        line = files.line(filename, name)

        def fail(message: str, *, path: str = path, line: int | None = line) -> GenError:
            return GenError(message, path=path, line=line)

        if name in by_name:
            first = by_name[name]
            raise fail(
                f"duplicate query name {name!r} (first defined at {first.path}:{first.line})"
            )
        cmd = raw.get("cmd") or ""
        if cmd not in SUPPORTED_COMMANDS:
            hint = ""
            if cmd == ":execlastid":
                hint = " (PostgreSQL has no last insert id: use `RETURNING id` with :one)"
            elif cmd.startswith(":batch"):
                hint = " (use :many, or :batchexec for executemany)"
            raise fail(
                f"query {name}: {cmd or 'no command'} is not supported{hint}; use one of "
                + ", ".join(SUPPORTED_COMMANDS)
            )
        method = snake_case(name)
        if not method.isidentifier() or keyword.iskeyword(method) or method[0].isdigit():
            raise fail(f"query name {name!r} does not make a Python method name")
        if method == "with_db":
            raise fail(f"query name {name!r} clashes with Queries.with_db; rename the query")
        if method in by_method:
            other = by_method[method]
            raise fail(
                f"queries {other.name} ({other.path}:{other.line}) and {name} would both"
                f" generate the method {method}(); rename one"
            )

        params = _params(catalog, raw.get("params") or [])
        sql = raw.get("text") or ""
        for raw_param, param in zip(_sorted_params(raw), params, strict=True):
            if (raw_param.get("column") or {}).get("is_sqlc_slice"):
                sql, count = _rewrite_slice(sql, int(raw_param.get("number") or 0))
                if count == 0:
                    raise fail(
                        f"query {name}: sqlc.slice({param.column}) must be written as"
                        f" `IN (sqlc.slice({param.column}))`"
                    )
        columns = _fields(catalog, raw.get("columns") or [])
        query = Query(
            name=name,
            cmd=cmd,
            filename=filename,
            path=path,
            line=line,
            method=method,
            const=snake_case(name).upper(),
            sql=sql,
            doc="\n".join(c.strip() for c in raw.get("comments") or []).strip(),
            params=params,
            columns=columns,
        )
        if cmd in (":one", ":many"):
            if not columns:
                raise fail(f"query {name}: {cmd} needs a query that returns columns; use :exec")
            query.model = _whole_model(catalog, raw.get("columns") or [], columns)
            if query.model is None and (len(columns) > 1 or columns[0].embed is not None):
                if len(columns) == 1:
                    query.model = columns[0].embed
                else:
                    query.row_class = f"{camel_case(name)}Row"
        if cmd in (":copyfrom", ":batchexec"):
            if not params:
                raise fail(f"query {name}: {cmd} needs parameters")
            query.params_class = f"{camel_case(name)}Params"
        if cmd == ":copyfrom":
            table = raw.get("insert_into_table") or {}
            if not table.get("name"):
                raise fail(f"query {name}: :copyfrom needs an INSERT INTO table (...) VALUES (...)")
            query.copy_table = (table.get("schema") or "", table["name"])
            for param in params:
                if not param.column:
                    raise fail(f"query {name}: :copyfrom values must all be parameters of columns")
        by_name[name] = query
        by_method[method] = query
        queries.append(query)
    return queries


def _sorted_params(raw: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(raw.get("params") or [], key=lambda p: int(p.get("number") or 0))


def _params(catalog: Catalog, raw_params: list[dict[str, Any]]) -> list[Field]:
    ordered = _sorted_params({"params": raw_params})
    columns = [p.get("column") or {} for p in ordered]
    names = unique(
        [
            identifier(c.get("name") or "", f"column_{int(p.get('number') or i + 1)}")
            for i, (p, c) in enumerate(zip(ordered, columns, strict=True))
        ]
    )
    fields = []
    for name, column in zip(names, columns, strict=True):
        t = catalog.py_type(column)
        if column.get("is_sqlc_slice"):
            t = PyType(t.base, t.imports, t.enum, t.dims + 1, False, t.unknown)
        fields.append(Field(name, column.get("original_name") or column.get("name") or "", t))
    return fields


def _rewrite_slice(sql: str, number: int) -> tuple[str, int]:
    """`x IN ($1)` -> `x = ANY($1)`, `x NOT IN ($1)` -> `x <> ALL($1)`.

    sqlc expands sqlc.slice() only for MySQL and SQLite; for PostgreSQL the text keeps `IN ($1)`.
    """
    n = rf"\$(?:{number})(?!\d)"
    sql, not_in = re.subn(rf"(?i)\bNOT\s+IN\s*\(\s*({n})\s*\)", r"<> ALL(\1)", sql)
    sql, in_ = re.subn(rf"(?i)\bIN\s*\(\s*({n})\s*\)", r"= ANY(\1)", sql)
    return sql, not_in + in_


def _whole_model(
    catalog: Catalog, raw_columns: list[dict[str, Any]], columns: list[Field]
) -> Model | None:
    """The table model when the columns are exactly that table's columns (like `SELECT *`)."""
    if len(columns) < 2:
        return None
    tables = {type_name(c.get("table") or {}) for c in raw_columns}
    if len(tables) != 1:
        return None
    model = catalog.model(*tables.pop())
    if model is None or len(model.fields) != len(columns):
        return None
    for mine, theirs in zip(columns, model.fields, strict=True):
        if mine.embed is not None or mine.column != theirs.column:
            return None
        if not mine.type.same_as(theirs.type):
            return None
    return model
