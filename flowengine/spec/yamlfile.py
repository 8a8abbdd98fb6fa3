"""YAML with its line numbers kept.

Every app file is read with PyYAML's safe constructors (no Python tags, no arbitrary
objects) and turned into plain dicts and lists, while the position of every key and list
item is recorded so that any later check can say ``flows/x.yaml:12:5``. Duplicate keys,
which YAML would silently let the last one win, are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flowengine.errors import Location, SpecError, SpecErrors

Path_ = tuple[Any, ...]


@dataclass
class Document:
    """One YAML file: its data and where each part of it was written."""

    file: str
    data: Any
    marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    problems: list[SpecError] = field(default_factory=list)

    def where(self, *keys: Any) -> Location:
        """The position of the key (or item) at ``keys``, else of its nearest ancestor."""
        for end in range(len(keys), 0, -1):
            mark = self.marks.get(keys[:end])
            if mark is not None:
                return Location(self.file, *mark)
        return Location(self.file, 1, 1)

    def value_where(self, *keys: Any) -> Location:
        """The position of the value at ``keys`` (falls back to its key)."""
        mark = self.marks.get(("=",) + keys)
        return Location(self.file, *mark) if mark else self.where(*keys)


def load(path: Path, display: str | None = None) -> Document:
    """Read one YAML file; a syntax error raises ``SpecErrors`` with its position."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecErrors([SpecError(Location(name), f"cannot read the file: {exc}")]) from exc
    return loads(text, name)


def loads(text: str, file: str) -> Document:
    document = Document(file, None)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        document.data = _convert(loader, node, (), document) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        problem = exc.problem or exc.context or "malformed YAML"
        raise SpecErrors([SpecError(where, f"invalid YAML: {problem}")]) from exc
    except yaml.YAMLError as exc:
        raise SpecErrors([SpecError(Location(file), f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    if document.problems:
        raise SpecErrors(document.problems)
    return document


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _convert(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, document: Document) -> Any:
    document.marks[("=",) + path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                where = Location(document.file, *_mark(key_node))
                document.problems.append(SpecError(where, "a mapping key must be a plain value"))
                continue
            if key in result:
                where = Location(document.file, *_mark(key_node))
                document.problems.append(SpecError(where, f"duplicate key '{key}'"))
            document.marks[path + (key,)] = _mark(key_node)
            result[key] = _convert(loader, value_node, path + (key,), document)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            document.marks[path + (index,)] = _mark(item)
            items.append(_convert(loader, item, path + (index,), document))
        return items
    return loader.construct_object(node, deep=True)
