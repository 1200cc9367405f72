"""Load an OpenAPI document and remember where each part of it sits in the file.

Error messages name a line, so the document is composed node by node (``yaml.compose``) and every
mapping key and sequence item is recorded under its location: a tuple of keys and indexes like a
JSON pointer, e.g. ``("paths", "/jobs", "get", "responses", "200")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import GenError

Location = tuple[str | int, ...]


@dataclass
class Source:
    """The parsed document plus the line (1-based) of every key and item in it."""

    data: Any
    display_path: str
    lines: dict[Location, int] = field(default_factory=dict)

    def line(self, location: Location) -> int | None:
        """The line of `location`, or of its nearest enclosing part the file spells out."""
        for end in range(len(location), -1, -1):
            if (line := self.lines.get(location[:end])) is not None:
                return line
        return None

    def error(self, message: str, location: Location) -> GenError:
        """A GenError about the part of the document at `location`."""
        return GenError(message, path=self.display_path, line=self.line(location))


def load(path: Path, display_path: str) -> Source:
    """Read and parse the document at `path`; problems are GenErrors naming `display_path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GenError("file not found", path=display_path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GenError(f"cannot read the file: {exc}", path=display_path) from None

    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        lines = dict(_node_lines(node, (), display_path)) if node is not None else {}
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise GenError(
            f"invalid YAML: {problem}",
            path=display_path,
            line=mark.line + 1 if mark is not None else None,
        ) from None
    except yaml.YAMLError as exc:
        raise GenError(f"invalid YAML: {exc}", path=display_path) from None
    finally:
        loader.dispose()

    if node is not None:
        lines[()] = node.start_mark.line + 1
    return Source(data=data, display_path=display_path, lines=lines)


class _Loader(yaml.SafeLoader):
    """A safe loader whose mapping keys are the text the file spells (`200:` is the key "200")."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        return {
            _key(key_node): self.construct_object(value_node, deep=deep)
            for key_node, value_node in node.value
        }


def _node_lines(
    node: yaml.Node, location: Location, display_path: str
) -> Iterator[tuple[Location, int]]:
    """The (location, line) of every key and item under `node`; duplicate keys are an error."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                # A YAML merge key: its keys land in this mapping, without lines of their own.
                continue
            key = _key(key_node)
            if key in seen:
                raise GenError(
                    f"duplicate key {key!r}", path=display_path, line=key_node.start_mark.line + 1
                )
            seen.add(key)
            yield (*location, key), key_node.start_mark.line + 1
            yield from _node_lines(value_node, (*location, key), display_path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield (*location, index), item.start_mark.line + 1
            yield from _node_lines(item, (*location, index), display_path)


def _key(node: yaml.Node) -> str:
    """A mapping key as the document is addressed: a string (`200:` and `"200":` alike)."""
    return str(node.value) if isinstance(node, yaml.ScalarNode) else f"<{type(node).__name__}>"
