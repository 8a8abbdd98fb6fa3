"""Node types: how they are declared and how an app's set of them is assembled.

A node type is one small unit: a name, its parameters, its named outputs and an async
``run(ctx, params)`` returning ``(output, value)``. Declare one with the decorator::

    @node_type("condition", outputs=("then", "else"),
               params={"if": Param.expression(required=True)})
    async def condition(ctx, params):
        return ("then" if params["if"] else "else"), None

The decorator checks the declaration when the module is imported and attaches a frozen
``NodeType`` to the function. A ``Registry`` is then built explicitly from modules: the
built-in library and third-party packages arrive through the ``flowengine.nodes`` entry
point group, an app's own modules through ``app.yaml``. Two types with one name are an
error, never a silent override.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import keyword
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Iterable, Mapping

import jsonschema

from flowengine.types import NodeFunction

ENTRY_POINT_GROUP = "flowengine.nodes"

#: Keys every node may carry besides its params and outputs.
COMMON_KEYS = frozenset({"type", "description", "error", "retry", "timeout"})

#: How a parameter's YAML value is read. ``expression``: every string inside it is an
#: expression (``if: ISMOBILEPHONE(params.query.phoneNumber)``); ``template``: a string with
#: ``{{ expr }}`` holes; ``literal``: taken as written and checked against its schema.
#: Other kinds (``query``) are added by the modules that compile them.
#: ``html`` is a template whose holes are HTML-escaped; ``html_file`` names such a template
#: in the app's ``templates/`` folder, read and compiled at load time.
PARAM_KINDS = {"expression", "template", "literal", "query", "html", "html_file"}

#: A file under the app's templates/ folder: path segments that never start with a dot,
#: so no name can climb out of the folder.
TEMPLATE_NAME = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$"

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_OUTPUT = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Param:
    """One parameter of a node type."""

    kind: str
    schema: Mapping[str, Any] = field(default_factory=dict)
    required: bool = False
    default: Any = None
    description: str = ""
    #: For a literal naming something of the app: "service" or "model" (checked at load).
    refers_to: str | None = None

    @classmethod
    def expression(cls, required: bool = False, default: Any = None, description: str = "") -> Param:
        return cls("expression", {}, required, default, description)

    @classmethod
    def template(cls, required: bool = False, default: Any = None, description: str = "") -> Param:
        return cls("template", {"type": "string"}, required, default, description)

    @classmethod
    def literal(
        cls,
        schema: Mapping[str, Any],
        required: bool = False,
        default: Any = None,
        description: str = "",
    ) -> Param:
        return cls("literal", schema, required, default, description)

    @classmethod
    def reference(cls, to: str, required: bool = True, description: str = "") -> Param:
        """A literal name of one of the app's services or models."""
        return cls("literal", {"type": "string"}, required, None, description, refers_to=to)

    @classmethod
    def html(cls, required: bool = False, description: str = "") -> Param:
        """A template of HTML: its ``{{ }}`` holes are HTML-escaped."""
        return cls("html", {"type": "string"}, required, None, description)

    @classmethod
    def html_file(cls, required: bool = False, description: str = "") -> Param:
        return cls("html_file", {"type": "string", "pattern": TEMPLATE_NAME}, required, None, description)

    @classmethod
    def query(cls, required: bool = False, description: str = "") -> Param:
        return cls("query", {"type": "string"}, required, None, description)

    def yaml_schema(self) -> dict[str, Any]:
        """The JSON Schema of the value a builder writes in YAML."""
        schema = dict(self.schema)
        if self.description:
            schema["description"] = self.description
        return schema


@dataclass(frozen=True)
class NodeType:
    """A checked node-type declaration."""

    name: str
    run: NodeFunction
    params: Mapping[str, Param]
    outputs: tuple[str, ...]
    description: str
    module: str
    #: A param whose keys are extra outputs of each node (``switch`` uses ``cases``).
    dynamic_outputs: str | None = None

    def outputs_of(self, spec: Mapping[str, Any]) -> tuple[str, ...]:
        """The outputs one node of this type has, given its YAML."""
        extra = spec.get(self.dynamic_outputs) if self.dynamic_outputs else None
        return self.outputs + tuple(extra) if isinstance(extra, dict) else self.outputs

    @property
    def terminal(self) -> bool:
        """A terminal node ends the run (it has no outputs to follow)."""
        return not self.outputs

    def yaml_schema(self) -> dict[str, Any]:
        """The JSON Schema of one node of this type in a flow file."""
        properties: dict[str, Any] = {
            "type": {"const": self.name},
            "description": {"type": "string"},
            "error": {"type": "string", "description": "node to run when this one fails"},
            "retry": {"$ref": "#/$defs/retry"},
            "timeout": {"$ref": "#/$defs/duration"},
        }
        for output in self.outputs:
            properties[output] = {"type": "string", "description": f"node to run after '{output}'"}
        for name, param in self.params.items():
            properties[name] = param.yaml_schema()
        extra: Any = {"type": "string"} if self.dynamic_outputs else False
        return {
            "type": "object",
            "description": self.description,
            "properties": properties,
            "required": ["type", *(n for n, p in self.params.items() if p.required)],
            "additionalProperties": extra,
        }


class RegistryError(Exception):
    """A node type declared wrongly, or two types with one name."""


def node_type(
    name: str,
    *,
    params: Mapping[str, Param] | None = None,
    outputs: Iterable[str] = ("next",),
    description: str = "",
    dynamic_outputs: str | None = None,
):
    """Declare a node type; the declaration is checked now, at import time."""

    def declare(run: NodeFunction) -> NodeFunction:
        definition = NodeType(
            name=name,
            run=run,
            params=dict(params or {}),
            outputs=tuple(outputs),
            description=description or inspect.getdoc(run) or "",
            module=run.__module__,
            dynamic_outputs=dynamic_outputs,
        )
        _check(definition)
        run.__flowengine_node__ = definition  # type: ignore[attr-defined]
        return run

    return declare


def _check(definition: NodeType) -> None:
    where = f"node type '{definition.name}' ({definition.module})"
    if not _NAME.match(definition.name):
        raise RegistryError(f"{where}: the name must be kebab-case, like 'send-sms'")
    if not inspect.iscoroutinefunction(definition.run):
        raise RegistryError(f"{where}: run must be 'async def run(ctx, params)'")
    if len(inspect.signature(definition.run).parameters) != 2:
        raise RegistryError(f"{where}: run must take exactly (ctx, params)")
    for output in definition.outputs:
        if not _OUTPUT.match(output) or keyword.iskeyword(output) and output != "else":
            raise RegistryError(f"{where}: output {output!r} is not a plain lower-case name")
        if output in COMMON_KEYS:
            raise RegistryError(f"{where}: output {output!r} clashes with a key every node has")
    if definition.dynamic_outputs and definition.dynamic_outputs not in definition.params:
        raise RegistryError(f"{where}: dynamic_outputs names no param")
    if len(set(definition.outputs)) != len(definition.outputs):
        raise RegistryError(f"{where}: outputs {definition.outputs} repeat a name")
    for param_name, param in definition.params.items():
        if param_name in COMMON_KEYS or param_name in definition.outputs:
            raise RegistryError(f"{where}: param {param_name!r} clashes with a key or an output")
        if param.refers_to not in (None, "service", "model"):
            raise RegistryError(f"{where}: param {param_name!r} refers to {param.refers_to!r}; use 'service' or 'model'")
        if param.kind not in PARAM_KINDS:
            raise RegistryError(f"{where}: param {param_name!r} has unknown kind {param.kind!r}")
        try:
            jsonschema.Draft202012Validator.check_schema(param.schema)
        except jsonschema.SchemaError as exc:
            raise RegistryError(f"{where}: param {param_name!r} schema: {exc.message}") from exc


class Registry:
    """The node types one app can use, by name."""

    def __init__(self, types: Iterable[NodeType] = ()) -> None:
        self._types: dict[str, NodeType] = {}
        for definition in types:
            self.add(definition)

    def add(self, definition: NodeType) -> None:
        existing = self._types.get(definition.name)
        if existing is not None and existing.run is not definition.run:
            raise RegistryError(
                f"node type '{definition.name}' is defined twice: "
                f"in {existing.module} and in {definition.module}"
            )
        self._types[definition.name] = definition

    def add_module(self, module: ModuleType | str) -> None:
        """Add every node type a module (and the submodules it imports) declares."""
        if isinstance(module, str):
            module = importlib.import_module(module)
        for definition in _collect(module):
            self.add(definition)

    def get(self, name: str) -> NodeType | None:
        return self._types.get(name)

    def suggest(self, name: str) -> str | None:
        """The closest known type name, for 'did you mean ...'."""
        matches = difflib.get_close_matches(name, self._types, n=1)
        return matches[0] if matches else None

    def names(self) -> list[str]:
        return sorted(self._types)

    def __iter__(self):
        return iter(self._types.values())

    def __contains__(self, name: object) -> bool:
        return name in self._types

    @classmethod
    def default(cls, extra_modules: Iterable[str] = ()) -> Registry:
        """The installed node types (entry points) plus an app's own modules."""
        registry = cls()
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            registry.add_module(entry.load())
        for module in extra_modules:
            registry.add_module(module)
        return registry


def _collect(module: ModuleType) -> list[NodeType]:
    found: list[NodeType] = []
    prefix = module.__name__ + "."
    for value in vars(module).values():
        definition = getattr(value, "__flowengine_node__", None)
        if isinstance(definition, NodeType):
            found.append(definition)
        elif isinstance(value, ModuleType) and value.__name__.startswith(prefix):
            found.extend(_collect(value))
    return found
