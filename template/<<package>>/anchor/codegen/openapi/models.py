"""Generate the pydantic models of an API's schemas with datamodel-code-generator.

The generator runs as a library on a minimal document (just the schemas, including the inline ones
the spec module hoisted), into a temporary directory together with its model metadata: that maps
every components/schemas key to the class it became (``Field`` becomes ``FieldModel``,
``job-status`` becomes ``JobStatus``), which is how the server interface names the models.
"""

from __future__ import annotations

import ast
import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GenError


@dataclass(frozen=True)
class Models:
    """The source of models.py and what the server interface needs to know about it."""

    source: str
    # components/schemas key -> class name in models.py.
    class_names: dict[str, str] = field(default_factory=dict)
    # class name -> {enum value: member name}, for parameter defaults.
    enum_members: dict[str, dict[Any, str]] = field(default_factory=dict)


def generate_models(
    schemas: dict[str, Any], *, openapi_version: str, header: str, display_path: str
) -> Models:
    """The models of `schemas` (components/schemas plus hoisted inline schemas)."""
    if not schemas:
        return Models(
            source=f'{header}\n"""The API defines no schemas, so there are no models."""\n'
        )

    # Imported here: it takes a while, and only rendering needs it.
    from datamodel_code_generator import InputFileType, PythonVersion, generate
    from datamodel_code_generator.enums import DataModelType
    from datamodel_code_generator.format import Formatter

    document = {
        "openapi": openapi_version,
        "info": {"title": "models", "version": "0"},
        "paths": {},
        "components": {"schemas": schemas},
    }
    with tempfile.TemporaryDirectory(prefix="anchor-openapi-") as tmp:
        output, metadata = Path(tmp) / "models.py", Path(tmp) / "models.json"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                generate(
                    document,
                    input_file_type=InputFileType.OpenAPI,
                    output=output,
                    emit_model_metadata=metadata,
                    output_model_type=DataModelType.PydanticV2BaseModel,
                    target_python_version=PythonVersion.PY_311,
                    use_annotated=True,
                    field_constraints=True,
                    snake_case_field=True,
                    allow_population_by_field_name=True,
                    use_standard_collections=True,
                    use_union_operator=True,
                    use_specialized_enum=True,
                    disable_timestamp=True,
                    use_double_quotes=True,
                    formatters=[Formatter.BUILTIN],
                    custom_file_header=header,
                )
        except GenError:
            raise
        except Exception as exc:  # the generator's own errors are about the user's schemas
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GenError(
                f"cannot generate models from the schemas: {message}", path=display_path
            ) from None
        source = output.read_text(encoding="utf-8")
        entries = json.loads(metadata.read_text(encoding="utf-8"))["models"]

    prefix = "#/components/schemas/"
    class_names = {
        entry["source_ref"][len(prefix) :]: entry["class_name"]
        for entry in entries
        if entry["source_ref"].startswith(prefix) and "/" not in entry["source_ref"][len(prefix) :]
    }
    return Models(
        source=source.rstrip("\n") + "\n",
        class_names=class_names,
        enum_members=_enum_members(source),
    )


def _enum_members(source: str) -> dict[str, dict[Any, str]]:
    """``{class name: {value: member name}}`` for every class in `source` with constant members."""
    members: dict[str, dict[Any, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if (
                isinstance(statement, ast.Assign)
                and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)
                and isinstance(statement.value, ast.Constant)
            ):
                members.setdefault(node.name, {})[statement.value.value] = statement.targets[0].id
    return members
