"""YAML with its line numbers kept.

Every app file is read with PyYAML's safe constructors (no Python tags, no arbitrary
objects) and turned into plain dicts and lists, while the position of every key and list
item is recorded so that any later check can say ``flows/x.yaml:12:5``. Duplicate keys,
which YAML would silently let the last one win, are reported, and so is any explicit tag
beyond plain data (``!!python/object`` and friends), on scalars and collections alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flowengine.errors import Location, SpecError, SpecErrors

Path_ = tuple[Any, ...]

#: An app file larger than this is refused before it is parsed.
MAX_FILE_BYTES = 1024 * 1024

_CORE = "tag:yaml.org,2002:"
#: The tags plain data may carry; anything else (``!!python/...``, ``!!set``, ``!custom``) is refused.
_SCALAR_TAGS = frozenset(_CORE + name for name in ("str", "int", "float", "bool", "null", "timestamp"))
_MAPPING_TAG, _SEQUENCE_TAG = _CORE + "map", _CORE + "seq"
#: Most values one file may expand to: aliases could otherwise multiply a few lines into millions.
MAX_VALUES = 100_000


@dataclass
class Document:
    """One YAML file: its data and where each part of it was written."""

    file: str
    data: Any
    marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    problems: list[SpecError] = field(default_factory=list)
    #: Bookkeeping while reading: values built so far, and the collections being built.
    count: int = field(default=0, repr=False)
    building: set[int] = field(default_factory=set, repr=False)

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


class _Stop(Exception):
    """A problem after which the rest of the file cannot be read meaningfully."""

    def __init__(self, error: SpecError) -> None:
        self.error = error


def load(path: Path, display: str | None = None) -> Document:
    """Read one YAML file; a syntax error raises ``SpecErrors`` with its position."""
    name = display or str(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SpecErrors([SpecError(Location(name), f"the file is larger than {MAX_FILE_BYTES} bytes")])
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
        mark, problem = _explain(exc)
        where = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
        raise SpecErrors([SpecError(where, f"invalid YAML: {problem}")]) from exc
    except yaml.YAMLError as exc:
        raise SpecErrors([SpecError(Location(file), f"invalid YAML: {exc}")]) from exc
    except RecursionError:
        message = "the file nests too deeply"
        raise SpecErrors([SpecError(Location(file, 1, 1), message)]) from None
    except _Stop as stop:
        raise SpecErrors([stop.error]) from None
    finally:
        loader.dispose()
    if document.problems:
        raise SpecErrors(document.problems)
    return document


def _explain(exc: yaml.MarkedYAMLError) -> tuple[yaml.Mark | None, str]:
    """PyYAML's parser vocabulary (``<block end>``, tokens) in a builder's words, placed where to look."""
    problem, context = exc.problem or "", exc.context or ""
    if "'\\t'" in problem:
        return exc.problem_mark, "a tab character; indent YAML with spaces only"
    if problem.startswith("expected <block end>"):
        return exc.problem_mark, "this line does not fit the block above it; check its indentation"
    if problem.startswith(("expected ',' or '}'", "expected ',' or ']'")):
        opener, closer = ("{", "}") if "'}'" in problem else ("[", "]")
        if "<stream end>" in problem:
            return exc.context_mark, f"this '{opener}' is never closed with '{closer}'"
        opened = f"line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}" if exc.context_mark else "above"
        return exc.problem_mark, f"expected ',' or '{closer}' to continue the '{opener}' opened at {opened}"
    if problem == "mapping values are not allowed here":
        return exc.problem_mark, "a ': ' inside a plain value; put the value in quotes"
    if context == "while scanning a quoted scalar" and "end of stream" in problem:
        return exc.context_mark, "this quoted text is never closed"
    return exc.problem_mark or exc.context_mark, problem or context or "malformed YAML"


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _refused(node: yaml.Node) -> bool:
    if isinstance(node, yaml.MappingNode):
        return node.tag != _MAPPING_TAG
    if isinstance(node, yaml.SequenceNode):
        return node.tag != _SEQUENCE_TAG
    return node.tag not in _SCALAR_TAGS


def _admit(node: yaml.Node, document: Document) -> None:
    """Stop at a non-data tag, an alias inside itself (``&a [*a]``) or an alias blow-up."""
    where = Location(document.file, *_mark(node))
    if _refused(node):
        tag = node.tag.replace(_CORE, "!!")
        plain = "app files hold plain data (text, numbers, true/false, lists, mappings)"
        raise _Stop(SpecError(where, f"the tag '{tag}' is not allowed; {plain}"))
    if id(node) in document.building:
        raise _Stop(SpecError(where, "an alias refers to the value that contains it"))
    document.count += 1
    if document.count > MAX_VALUES:
        raise _Stop(SpecError(where, f"the file expands to more than {MAX_VALUES} values (through aliases?)"))


def _convert(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, document: Document) -> Any:
    document.marks[("=",) + path] = _mark(node)
    _admit(node, document)
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _CORE + "timestamp":
            return node.value  # dates stay text, as JSON and expressions expect them
        return loader.construct_object(node)
    document.building.add(id(node))
    try:
        if isinstance(node, yaml.MappingNode):
            return _mapping(loader, node, path, document)
        return _sequence(loader, node, path, document)
    finally:
        document.building.discard(id(node))


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, path: Path_, document: Document) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        where = Location(document.file, *_mark(key_node))
        if not isinstance(key_node, yaml.ScalarNode):
            document.problems.append(SpecError(where, "a mapping key must be a plain value"))
            continue
        _admit(key_node, document)
        key = loader.construct_object(key_node)
        if key in result:
            first = document.marks[path + (key,)][0]
            document.problems.append(SpecError(where, f"duplicate key '{key}' (already set at line {first})"))
        document.marks[path + (key,)] = _mark(key_node)
        result[key] = _convert(loader, value_node, path + (key,), document)
    return result


def _sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode, path: Path_, document: Document) -> list[Any]:
    items = []
    for index, item in enumerate(node.value):
        document.marks[path + (index,)] = _mark(item)
        items.append(_convert(loader, item, path + (index,), document))
    return items
