"""Flows compiled into graphs: the checked, ready-to-run form of ``flows/*.yaml``.

Compiling and checking are one pass. Every node's type is looked up, its params are
validated against the type's schema and compiled (expressions parsed, templates split),
its edges are resolved to node objects, names in expressions are checked, and unreachable
nodes are found. Every problem becomes a ``SpecError`` with file:line; nothing is left to
be discovered per request.
"""

from __future__ import annotations

import difflib
import html
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import jsonschema

from flowengine.errors import SpecError
from flowengine.expressions import Expression, ExpressionError, Template, compile_expression, compile_template
from flowengine.registry import COMMON_KEYS, NodeType, Param, Registry
from flowengine.spec import schema as schemas
from flowengine.spec.yamlfile import Document

#: Names every expression can use; node ids may not take them.
RUN_NAMES = frozenset({"params", "session", "user", "env", "error"})
PARAMS_PARTS = frozenset({"query", "body", "path", "headers", "client"})
RESERVED = RUN_NAMES | {"this", "item", "index", "true", "false", "null"}


# --- compiled values --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Constant:
    value: Any
    names: frozenset[str] = frozenset()
    blocking: bool = False

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class Structure:
    """A mapping or list whose string leaves are expressions (``body: {user: findUser}``)."""

    shape: Callable[[list[Any]], Any]
    parts: tuple[Any, ...]
    names: frozenset[str]
    blocking: bool

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        return self.shape([part.evaluate(scope) for part in self.parts])


def compile_value(raw: Any) -> Expression | Structure | Constant:
    """An expression param: strings are expressions, structures are walked, rest is literal."""
    if isinstance(raw, str):
        return compile_expression(raw)
    if isinstance(raw, dict):
        keys = list(raw)
        parts = tuple(compile_value(raw[key]) for key in keys)
        return _structure(lambda values: dict(zip(keys, values)), parts)
    if isinstance(raw, list):
        return _structure(list, tuple(compile_value(item) for item in raw))
    return Constant(raw)


def _structure(shape: Callable[[list[Any]], Any], parts: tuple[Any, ...]) -> Any:
    if all(isinstance(part, Constant) for part in parts):
        return Constant(shape([part.value for part in parts]))
    names = frozenset().union(*(part.names for part in parts))
    return Structure(shape, parts, names, any(part.blocking for part in parts))


@dataclass
class CompileContext:
    """What a param compiler may need beyond the raw value."""

    node: Mapping[str, Any]
    models: Mapping[str, Any]
    app_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class HtmlTemplate:
    """An HTML template (inline or from a file), compiled at load time; holes are HTML-escaped."""

    template: Template

    @property
    def names(self) -> frozenset[str]:
        return self.template.names

    @property
    def blocking(self) -> bool:
        return self.template.blocking

    @property
    def expressions(self) -> list[Expression]:
        return self.template.expressions

    def evaluate(self, scope: Mapping[str, Any]) -> str:
        return self.template.render(scope, escape=html.escape)


def compile_html_file(raw: str, context: CompileContext) -> HtmlTemplate:
    path = (context.app_dir or Path(".")) / "templates" / raw
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read templates/{raw}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    return HtmlTemplate(compile_template(text))


ParamCompiler = Callable[[Any, CompileContext], Any]

#: How each param kind is compiled. The store adds ``query`` when it is installed.
PARAM_COMPILERS: dict[str, ParamCompiler] = {
    "expression": lambda raw, _: compile_value(raw),
    "template": lambda raw, _: compile_template(raw),
    "literal": lambda raw, _: Constant(raw),
    "html": lambda raw, _: HtmlTemplate(compile_template(raw)),
    "html_file": compile_html_file,
}


# --- graphs -----------------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    """One compiled node; ``edges`` point straight at the next ``Node`` objects."""

    id: str
    type: NodeType
    params: tuple[tuple[str, Any], ...]
    edges: dict[str, Node | None] = field(default_factory=dict)
    error: Node | None = None
    retry: Retry | None = None
    timeout: float | None = None
    blocking: bool = False
    line: int = 0

    def __post_init__(self) -> None:
        # Split once: a run copies the constant params and evaluates only the others.
        self.constants = {name: value.value for name, value in self.params if isinstance(value, Constant)}
        self.dynamic = tuple((name, value) for name, value in self.params if not isinstance(value, Constant))
        #: Runs inline: no worker thread, timeout or retry to set up.
        self.plain = not self.blocking and self.timeout is None and self.retry is None

    def __repr__(self) -> str:
        return f"<Node {self.id} ({self.type.name})>"


@dataclass(frozen=True)
class Retry:
    attempts: int = 1
    backoff: float = 0.1
    max_delay: float = 5.0


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    session: str
    where: Any
    description: str = ""


@dataclass(eq=False)
class Flow:
    """A compiled flow (service)."""

    name: str
    file: str
    description: str
    endpoints: list[Endpoint]
    inputs: dict[str, Any]
    start: Node | None
    nodes: dict[str, Node]
    on_error: Node | None = None
    timeout: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    #: The declared inputs, one transient model per part (set when the app loads).
    input_models: dict[str, Any] = field(default_factory=dict)
    traces: deque = field(default_factory=lambda: deque(maxlen=100))


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m)$")


def seconds(value: Any) -> float | None:
    """'500ms' / '2s' / '1m' / 3 → seconds (the schema has checked the form)."""
    if value is None or isinstance(value, (int, float)):
        return value
    number, unit = _DURATION.match(value).groups()  # type: ignore[union-attr]
    return float(number) * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


# --- compiling one flow ----------------------------------------------------------------


def compile_flow(
    document: Document, registry: Registry, models: Mapping[str, Any], app_dir: Path | None = None
) -> tuple[Flow | None, list[SpecError]]:
    """Check and compile one flow file; returns the flow (None if unusable) and problems."""
    problems = schemas.validate(document, "flow")
    raw = document.data
    if problems or not isinstance(raw, dict):
        return None, problems
    compiler = _FlowCompiler(document, registry, models, app_dir)
    flow = compiler.compile(raw)
    return (None if compiler.problems else flow), compiler.problems


class _FlowCompiler:
    def __init__(self, document: Document, registry: Registry, models: Mapping[str, Any], app_dir: Path | None) -> None:
        self.app_dir = app_dir
        self.document = document
        self.registry = registry
        self.models = models
        self.problems: list[SpecError] = []
        #: An edge to nowhere makes its intended target look unreachable; say it once, not twice.
        self.dangling = False

    def problem(self, message: str, *path: Any, node: str | None = None, value: bool = False) -> None:
        where = self.document.value_where(*path) if value else self.document.where(*path)
        self.problems.append(SpecError(where, message, node))

    def compile(self, raw: dict[str, Any]) -> Flow:
        ids = list(raw["nodes"])
        for node_id in ids:
            if node_id in RESERVED:
                reserved = ", ".join(sorted(RESERVED))
                message = f"'{node_id}' is reserved for expressions ({reserved}); pick another node id"
                self.problem(message, "nodes", node_id, node=node_id)
        self.known_names = RUN_NAMES | set(ids)
        nodes = {}
        for node_id, spec in raw["nodes"].items():
            node = self.node(node_id, spec)
            if node is not None:
                nodes[node_id] = node
        flow = Flow(
            name=raw["service"],
            file=self.document.file,
            description=raw.get("description", ""),
            endpoints=self.endpoints(raw.get("endpoints", [])),
            inputs=raw.get("inputs", {}),
            start=None,
            nodes=nodes,
            timeout=seconds(raw.get("timeout")),
            raw=raw,
        )
        flow.start = self.target(raw["start"], nodes, ids, ("start",), None)
        if "on_error" in raw:
            flow.on_error = self.target(raw["on_error"], nodes, ids, ("on_error",), None)
        for node_id, spec in raw["nodes"].items():
            if node_id in nodes:
                self.link(nodes[node_id], spec, nodes, ids, endpoint=bool(flow.endpoints))
        self.check_reachable(flow, raw)
        return flow

    def endpoints(self, raw: list[dict[str, Any]]) -> list[Endpoint]:
        return [
            Endpoint(
                method=item["method"],
                path=item["path"],
                session=item.get("session", "none"),
                where=self.document.where("endpoints", index),
                description=item.get("description", ""),
            )
            for index, item in enumerate(raw)
        ]

    def node(self, node_id: str, spec: dict[str, Any]) -> Node | None:
        node_type = self.registry.get(spec["type"])
        if node_type is None:
            hint = self.registry.suggest(spec["type"])
            suggestion = f" (did you mean '{hint}'?)" if hint else f" (known types: {', '.join(self.registry.names())})"
            self.problem(f"unknown node type '{spec['type']}'{suggestion}", "nodes", node_id, "type", node=node_id)
            return None
        before = len(self.problems)
        for problem in schemas.check(_node_validator(node_type), spec, self.document, ("nodes", node_id), node_id):
            self.problems.append(problem)
        if len(self.problems) > before:
            return None
        params = []
        for name, param in node_type.params.items():
            if name in spec:
                compiled = self.param(node_id, name, param, spec)
            elif param.default is not None:
                compiled = Constant(param.default)
            else:
                continue
            if compiled is not None:
                params.append((name, compiled))
        retry = spec.get("retry")
        return Node(
            id=node_id,
            type=node_type,
            params=tuple(params),
            retry=Retry(retry.get("attempts", 3), seconds(retry.get("backoff", 0.1)), seconds(retry.get("max_delay", 5)))
            if retry
            else None,
            timeout=seconds(spec.get("timeout")),
            blocking=any(getattr(value, "blocking", False) for _, value in params),
            line=self.document.where("nodes", node_id).line,
        )

    def param(self, node_id: str, name: str, param: Param, spec: dict[str, Any]) -> Any:
        compiler = PARAM_COMPILERS.get(param.kind)
        if compiler is None:
            self.problem(f"param '{name}' is of kind '{param.kind}', which nothing here can compile", "nodes", node_id, name, node=node_id)
            return None
        try:
            compiled = compiler(spec[name], CompileContext(spec, self.models, self.app_dir))
        except ExpressionError as exc:
            self.problem(f"param '{name}': {exc}", "nodes", node_id, name, node=node_id, value=True)
            return None
        except ValueError as exc:
            self.problem(f"param '{name}': {exc}", "nodes", node_id, name, node=node_id, value=True)
            return None
        self.check_names(compiled, node_id, name)
        return compiled

    def check_names(self, compiled: Any, node_id: str, name: str) -> None:
        for unknown in sorted(getattr(compiled, "names", ()) - self.known_names):
            close = difflib.get_close_matches(unknown, sorted(self.known_names), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.problem(f"param '{name}': unknown name '{unknown}'{hint}", "nodes", node_id, name, node=node_id, value=True)
        read = {path[1] for e in _expressions(compiled) for path in e.paths if path[0] == "params" and len(path) > 1}
        for part in sorted(read - PARAMS_PARTS):
            parts = ", ".join(sorted(PARAMS_PARTS))
            self.problem(
                f"param '{name}': 'params.{part}' does not exist; params has {parts}",
                "nodes", node_id, name, node=node_id, value=True,
            )

    def link(self, node: Node, spec: dict[str, Any], nodes: dict[str, Node], ids: list[str], endpoint: bool) -> None:
        outputs = node.type.outputs_of(spec)
        if node.type.dynamic_outputs:  # the schema lets any key through as an output; only declared ones are
            known = [*COMMON_KEYS, *node.type.params, *outputs]
            for key in spec:
                if key not in known:
                    self.dangling = True
                    close = difflib.get_close_matches(str(key), outputs, n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else f" (outputs: {', '.join(outputs)})"
                    self.problem(f"unknown key '{key}'{hint}", "nodes", node.id, key, node=node.id)
        for output in outputs:
            if output in COMMON_KEYS or output in node.type.params:
                self.problem(f"'{output}' cannot name an output", "nodes", node.id, node=node.id)
            elif output in spec:
                node.edges[output] = self.target(spec[output], nodes, ids, ("nodes", node.id, output), node.id)
            else:
                node.edges[output] = None
                if endpoint:
                    self.problem(
                        f"output '{output}' is not wired; every path of an endpoint flow must end in a response",
                        "nodes", node.id, node=node.id,
                    )
        if "error" in spec:
            node.error = self.target(spec["error"], nodes, ids, ("nodes", node.id, "error"), node.id)

    def target(self, name: Any, nodes: dict[str, Node], ids: list[str], path: tuple, node: str | None) -> Node | None:
        if name in nodes:
            return nodes[name]
        if name not in ids:
            self.dangling = True
            close = difflib.get_close_matches(str(name), ids, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (the nodes are: {', '.join(ids)})"
            what = f"edge '{path[-1]}'" if node else f"'{path[-1]}'"
            self.problem(f"{what} goes to unknown node '{name}'{hint}", *path, node=node, value=True)
        return None

    def check_reachable(self, flow: Flow, raw: dict[str, Any]) -> None:
        if self.dangling or len(flow.nodes) < len(raw["nodes"]):
            return  # a broken edge or node hides what it leads to; report that, not its shadow
        seen: set[str] = set()
        todo = [n for n in (flow.start, flow.on_error) if n is not None]
        while todo:
            node = todo.pop()
            if node.id in seen:
                continue
            seen.add(node.id)
            todo.extend(n for n in (*node.edges.values(), node.error) if n is not None)
        for node_id in raw["nodes"]:
            if node_id not in seen:
                self.problem("unreachable: no edge leads to this node", "nodes", node_id, node=node_id)


def _expressions(compiled: Any) -> list[Expression]:
    if isinstance(compiled, Expression):
        return [compiled]
    if isinstance(compiled, Template):
        return compiled.expressions
    if isinstance(compiled, Structure):
        return [e for part in compiled.parts for e in _expressions(part)]
    return [e for e in getattr(compiled, "expressions", ()) if isinstance(e, Expression)]


#: Validators by ``id(node_type)``; the type is kept beside its validator so that an id
#: reused by a later object can never pick up a stale validator.
_VALIDATORS: dict[int, tuple[NodeType, jsonschema.Draft202012Validator]] = {}


def _node_validator(node_type: NodeType) -> jsonschema.Draft202012Validator:
    cached = _VALIDATORS.get(id(node_type))
    if cached is None or cached[0] is not node_type:
        node_schema = node_type.yaml_schema()
        node_schema["$defs"] = schemas.schema("flow")["$defs"]
        cached = _VALIDATORS[id(node_type)] = (node_type, jsonschema.Draft202012Validator(node_schema))
    return cached[1]


__all__ = ["COMMON_KEYS", "Flow", "Node", "compile_flow", "compile_value", "PARAM_COMPILERS"]
