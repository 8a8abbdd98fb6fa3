"""Testing flows and node types: a node harness and the YAML flow-test runner.

A node author checks one node type without an app::

    output, value = await run_node("slugify", {"text": "Héllo, {{ who }}!"}, scope={"who": "Wörld"})

Params are written as in a flow file and compiled by the real param compilers (expressions
parsed, templates split, literals checked against the type's schema), then evaluated and
passed to the type's ``run`` on embedded services.

A builder writes flow tests in ``flows/tests/*.yaml`` (or a ``tests:`` list in a flow file)::

    flow: checkPhone
    cases:
      - name: a US mobile passes
        query: { phoneNumber: "+14155552671" }   # also body, path, headers, session, user
        cache: { "attempts:+14155552671": 2 }    # cache entries present before the run
        data: { users: [{ _id: u1, email: ada@example.com }] }   # objects stored before the run
        stubs: { textCode: { output: next, value: { id: x } } }   # or { error: { code: down } }
        functions: { RANDBETWEEN: 123456 }        # fixed function results
        expect:
          status: 200
          body: { mobile: true }                  # a subset: extra keys in the answer are fine
          path: [answer]                          # the node ids run, in order
          # also: error (a code), sms and email (outbox messages), cache (entries after the run),
          # data (every object of a model stored after the run, each a subset, in any order)

Each case runs the app's real input validation and interpreter on fresh embedded services
(in-process cache, outboxes, SQLite in a temporary folder), and reports where the run left
the expected path and what differed in the answer.
"""

from __future__ import annotations

import ast
import asyncio
import json
import sys
import tempfile
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, TextIO

import jsonschema
import yaml

from flowengine.context import RunContext, Services
from flowengine.errors import FlowError, Location, SpecError, SpecErrors, ValidationFailed
from flowengine.expressions import Expression, ExpressionError
from flowengine.functions import FUNCTIONS
from flowengine.graph import PARAM_COMPILERS, RUN_NAMES, CompileContext, Constant, Flow, seconds
from flowengine.graph import _expressions as expressions_in
from flowengine.interpreter import DEFAULT_STEP_LIMIT, Step, run_flow
from flowengine.messaging.outbox import outbox_key
from flowengine.registry import NodeType, Registry
from flowengine.spec import schema as schemas
from flowengine.spec import yamlfile
from flowengine.spec.app import App, load_app
from flowengine.spec.yamlfile import Document
from flowengine.types import Reply

if TYPE_CHECKING:  # the data layer is optional while an app has no models
    from flowengine.models import Model
    from flowengine.store.store import Store

# --- the node harness -------------------------------------------------------------------


def harness_services(**overrides: Any) -> Services:
    """Embedded services for a node under test: in-process cache, SMS and email outboxes."""
    from flowengine.cache import MemoryCache
    from flowengine.messaging.outbox import EmailOutbox, SmsOutbox

    cache = overrides.get("cache") or MemoryCache("test")
    return Services(**{"cache": cache, "sms": SmsOutbox(cache), "email": EmailOutbox(cache), **overrides})


async def run_node(
    node: str | Callable[..., Any],
    params: Mapping[str, Any] | None = None,
    *,
    services: Services | None = None,
    scope: Mapping[str, Any] | None = None,
    modules: Iterable[str] = (),
) -> tuple[str | None, Any]:
    """Run one node of type ``node`` (a name, or the decorated function) and return ``(output, value)``.

    ``params`` are written as in YAML (``{"if": "params.body.age >= 18"}``); ``scope`` holds
    the names expressions read (``params``, ``session``, earlier node ids). A bad param raises
    ``SpecErrors``; a ``FlowError`` from the node propagates, as does any crash.
    """
    node_type = _node_type(node, modules)
    names = {"params": {"query": {}, "path": {}, "headers": {}, "body": {}}, "session": None, "user": None,
             "env": {}, **(scope or {})}  # fmt: skip
    compiled = compile_params(node_type, dict(params or {}), known=set(names))
    ctx = RunContext(services or harness_services(), names, "harness")
    ctx.node = node_type.name
    return await node_type.run(ctx, {name: value.evaluate(names) for name, value in compiled.items()})


def _node_type(node: str | Callable[..., Any], modules: Iterable[str]) -> NodeType:
    declared = getattr(node, "__flowengine_node__", None)
    if isinstance(declared, NodeType):
        return declared
    registry = Registry.default(modules)
    found = registry.get(str(node))
    if found is None:
        hint = registry.suggest(str(node))
        raise LookupError(f"unknown node type '{node}'" + (f" (did you mean '{hint}'?)" if hint else ""))
    return found


def compile_params(node_type: NodeType, params: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """Check ``params`` against the type's schema and compile them, as a flow file's node is."""
    spec = {"type": node_type.name, **params}
    document = yamlfile.loads(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), f"<{node_type.name}>")
    node_schema = {**node_type.yaml_schema(), "$defs": schemas.schema("flow")["$defs"]}
    problems = schemas.check(jsonschema.Draft202012Validator(node_schema), spec, document, node=node_type.name)
    compiled: dict[str, Any] = {}
    for name, param in node_type.params.items():
        if name not in params:
            if param.default is not None:
                compiled[name] = Constant(param.default)
            continue
        try:
            compiled[name] = PARAM_COMPILERS[param.kind](params[name], CompileContext(spec, {}))
        except (ExpressionError, ValueError) as exc:
            problems.append(SpecError(document.value_where(name), f"param '{name}': {exc}", node_type.name))
            continue
        for unknown in sorted(getattr(compiled[name], "names", frozenset()) - known - RUN_NAMES):
            message = f"param '{name}': unknown name '{unknown}' (pass it in scope=)"
            problems.append(SpecError(document.value_where(name), message, node_type.name))
    if problems:
        raise SpecErrors(sorted(problems, key=lambda p: (p.where.line, p.where.column)))
    return compiled


# --- flow tests: the file format ----------------------------------------------------------

_OBJECT = {"type": "object"}
_MESSAGES = {"type": "array", "items": _OBJECT, "description": "outbox messages in sending order; each a subset"}
_OBJECTS = {
    "type": "object",
    "additionalProperties": {
        "type": "array",
        "items": {**_OBJECT, "properties": {"_id": {"type": "string", "pattern": "\\S", "description": "non-blank text"}}},
    },
}

CASE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "expect"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "query": _OBJECT,
        "path": _OBJECT,
        "headers": _OBJECT,
        "client": {"type": "object", "additionalProperties": False, "properties": {"ip": {"type": "string"}},
                   "description": "who is asking (params.client); ip defaults to 127.0.0.1"},  # fmt: skip
        "body": {"description": "the JSON body"},
        "session": {"type": ["object", "null"]},
        "user": {"type": ["object", "null"]},
        "cache": {**_OBJECT, "description": "cache entries present before the run"},
        "data": {**_OBJECTS, "description": "model -> objects stored before the run, in order (each may give its _id)"},
        "stubs": {
            "type": "object",
            "description": "node id -> the result the node gives instead of running",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "output": {"type": "string"},
                    "value": {},
                    "error": {
                        "type": "object",
                        "required": ["code"],
                        "additionalProperties": False,
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "status": {"type": "integer", "minimum": 400, "maximum": 599},
                        },
                    },
                },
            },
        },
        "functions": {
            "type": "object",
            "description": "function name -> the result every call gives",
            "propertyNames": {"pattern": "^[A-Z][A-Z0-9_]*$"},
        },
        "expect": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                "status": {"type": "integer", "minimum": 100, "maximum": 599},
                "body": {"description": "a subset of the JSON answer"},
                "path": {"type": "array", "items": {"type": "string"}, "description": "node ids run, in order"},
                "error": {"type": "string", "description": "a code among the answer's errors"},
                "sms": _MESSAGES,
                "email": _MESSAGES,
                "cache": {**_OBJECT, "description": "entries after the run; null: absent"},
                "data": {**_OBJECTS, "description": "model -> every object stored after the run, each a subset, any order"},
            },
        },
    },
}

FILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "flowengine flow tests",
    "type": "object",
    "required": ["flow", "cases"],
    "additionalProperties": False,
    "properties": {
        "flow": {"type": "string", "description": "the service under test"},
        "description": {"type": "string"},
        "cases": {"type": "array", "minItems": 1, "items": CASE_SCHEMA},
    },
}

#: The file's own keys first; each case is then checked on its own, so that every case's problems show.
_FILE = jsonschema.Draft202012Validator(
    {**FILE_SCHEMA, "properties": {**FILE_SCHEMA["properties"], "cases": {"type": "array", "minItems": 1}}}
)
_CASE = jsonschema.Draft202012Validator(CASE_SCHEMA)


@dataclass
class Case:
    """One named flow test."""

    name: str
    flow: str
    where: Location
    spec: dict[str, Any]

    @property
    def expect(self) -> dict[str, Any]:
        return self.spec["expect"]

    @property
    def id(self) -> str:
        return f"{self.where.file}::{self.name}"


@dataclass
class Suite:
    """A loaded app and its flow tests, ready to run."""

    app: App
    cases: list[Case]
    #: Problems in the test files (only with ``load_suite(strict=False)``); their cases are left out.
    problems: list[SpecError] = field(default_factory=list)


def load_suite(app_dir: str | Path, strict: bool = True) -> Suite:
    """Load the app and every flow test; ``SpecErrors`` lists every problem in either.

    With ``strict=False`` a test file's problems are kept on the suite instead (the pytest
    plugin reports them per file); the app's own problems always raise.
    """
    app = load_app(app_dir)
    problems: list[SpecError] = []
    cases: list[Case] = []
    for relative, document in _test_documents(app, problems):
        cases.extend(_cases(app, relative, document, problems))
    problems.sort(key=lambda p: (p.where.file, p.where.line, p.where.column))
    if problems and strict:
        raise SpecErrors(problems)
    _allow_fixed_functions(app, {name for case in cases for name in case.spec.get("functions", {})})
    return Suite(app, cases, problems)


def _test_documents(app: App, problems: list[SpecError]) -> Iterable[tuple[str, Document]]:
    for relative, document in sorted(app.documents.items()):
        if relative.startswith("flows/") and isinstance(document.data, dict) and "tests" in document.data:
            yield relative, document
    folder = app.dir / "flows" / "tests"
    for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else ():
        relative = f"flows/tests/{path.name}"
        try:
            yield relative, yamlfile.load(path, relative)
        except SpecErrors as exc:
            problems.extend(exc.errors)


def _cases(app: App, relative: str, document: Document, problems: list[SpecError]) -> list[Case]:
    if relative.startswith("flows/tests/"):
        found = schemas.check(_FILE, document.data, document)
        if found:
            problems.extend(found)
            return []
        flow, prefix = document.data["flow"], ("cases",)
        if flow not in app.flows:
            problems.append(SpecError(document.value_where("flow"), f"unknown service '{flow}'{_hint(flow, app.flows)}"))
            return []
    else:
        flow, prefix = document.data["service"], ("tests",)
    cases, names = [], set()
    for index, spec in enumerate(document.data[prefix[0]]):
        at = (*prefix, index)
        before = len(problems)
        problems.extend(schemas.check(_CASE, spec, document, at))
        if isinstance(spec, dict):
            problems.extend(_check_case(app.flows[flow], spec, document, at))
            problems.extend(_check_data(app, spec, document, at))
        if len(problems) > before:
            continue
        if spec["name"] in names:
            problems.append(SpecError(document.value_where(*at, "name"), f"a case named '{spec['name']}' comes earlier"))
        names.add(spec["name"])
        cases.append(Case(spec["name"], flow, document.where(*at), spec))
    return cases


def _check_case(flow: Flow, spec: dict[str, Any], document: Document, at: tuple) -> list[SpecError]:
    """What a schema cannot know: node ids, their outputs, function names (on whatever is well-formed)."""
    problems = []
    for node_id, stub in _mapping(spec.get("stubs")).items():
        if not isinstance(stub, dict):
            continue
        node = flow.nodes.get(node_id)
        if node is None:
            message = f"stub for unknown node '{node_id}'{_hint(node_id, flow.nodes)}"
            problems.append(SpecError(document.where(*at, "stubs", node_id), message))
            continue
        outputs = node.type.outputs_of(flow.raw["nodes"][node_id])
        output = stub.get("output", outputs[0] if outputs else None)
        if "error" in stub or output in outputs:
            continue
        if outputs:
            message = f"node '{node_id}' ({node.type.name}) has no output '{output}' (outputs: {', '.join(outputs)})"
        else:
            message = f"node '{node_id}' ({node.type.name}) ends the run: stub it with an 'error', or not at all"
        problems.append(SpecError(document.where(*at, "stubs", node_id), message))
    for name in _mapping(spec.get("functions")):
        if name not in FUNCTIONS:
            problems.append(SpecError(document.where(*at, "functions", name), f"unknown function '{name}'{_hint(name, FUNCTIONS)}"))
    path = _mapping(spec.get("expect")).get("path")
    for index, node_id in enumerate(path if isinstance(path, list) else []):
        if isinstance(node_id, str) and node_id not in flow.nodes:
            message = f"path: unknown node '{node_id}'{_hint(node_id, flow.nodes)}"
            problems.append(SpecError(document.value_where(*at, "expect", "path", index), message))
    return problems


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _hint(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --- flow tests: stored data -------------------------------------------------------------


def _check_data(app: App, spec: dict[str, Any], document: Document, at: tuple) -> list[SpecError]:
    """Both ``data`` keys name stored models; each seed object is one the store would take."""
    problems = []
    expected = _mapping(spec.get("expect")).get("data")
    for keys, named in ((("data",), spec.get("data")), (("expect", "data"), expected)):
        for name in _mapping(named):
            if (problem := _stored_model_problem(app, name)) is not None:
                problems.append(SpecError(document.where(*at, *keys, name), f"data: {problem}"))
    seeded: dict[str, list[dict[str, Any]]] = {}  # model -> the objects seeded before, as stored
    for name, objects in _mapping(spec.get("data")).items():
        if _stored_model_problem(app, name) is not None or not isinstance(objects, list):
            continue
        for index, values in enumerate(objects):
            for keys, message in _seed_problems(app.models[name], values, _run_names(app, spec), seeded):
                problems.append(SpecError(document.where(*at, "data", name, index, *keys), f"data: {message}"))
    return problems


def _stored_model_problem(app: App, name: str) -> str | None:
    model = app.models.get(name)
    if model is None:
        return f"unknown model '{name}'{_hint(name, app.models)}"
    if model.transient:
        return f"model '{name}' is transient: its objects are never stored"
    return None


def _seed_problems(model: Model, values: Any, names: Mapping[str, Any],
                   seeded: dict[str, list[dict[str, Any]]]) -> list[tuple[tuple, str]]:  # fmt: skip
    """What the store would refuse in one seed object, as (keys in the object, message) pairs.

    The model's own validation and rules word the problems; the database starts empty, so
    unique values and references are checked against the objects seeded before this one.
    """
    if not isinstance(values, dict):
        return []  # the schema reported it
    try:
        clean = model.validate({k: v for k, v in values.items() if k != "_id"}, scope=names)
        model.check_rules(clean)
    except ValidationFailed as exc:
        return [(_keys(item["details"]["field"]), item["message"]) for item in exc.items]
    clean["_id"] = values.get("_id")
    problems = list(_conflicts(model, clean, seeded))
    seeded.setdefault(model.name, []).append(clean)
    return problems


def _conflicts(model: Model, clean: dict[str, Any], seeded: dict[str, list[dict[str, Any]]]) -> Iterable[tuple[tuple, str]]:
    """A unique value taken, or a reference to no object, among the objects seeded before."""
    earlier = seeded.get(model.name, [])
    for name in ("_id", *(name for name, f in model.fields.items() if f.unique)):
        if clean.get(name) is not None and any(other.get(name) == clean[name] for other in earlier):
            yield (name,), f"another {model.name} object already has this {name}"
    for name, f in model.fields.items():
        value = clean.get(name)
        if f.type == "reference" and value is not None and all(o["_id"] != value for o in seeded.get(f.model or "", [])):
            yield (name,), f"field '{name}' refers to a {f.model} object that does not exist (seed it before this one)"


def _keys(field: str) -> tuple:
    """A validation item's field (``address.zip``, ``tags.0``) as document keys."""
    return tuple(int(part) if part.isdigit() else part for part in field.split(".") if part)


async def _seed(store: Store, data: Mapping[str, list[dict[str, Any]]], names: Mapping[str, Any]) -> None:
    """Store a case's objects through the real store, in the order written."""
    for model, objects in data.items():
        for values in objects:
            fields = {k: v for k, v in values.items() if k != "_id"}
            await store.create(model, fields, scope=names, id=values.get("_id"))


async def _all_objects(store: Store, model: str) -> list[dict[str, Any]]:
    from flowengine.store.store import MAX_LIMIT

    return await store.find_many(model, limit=MAX_LIMIT)  # a case stores a handful


def _objects(model: str, expected: list[dict[str, Any]], stored: list[dict[str, Any]]) -> list[str]:
    """How the stored objects differ from the expected ones: each expected object is a subset of
    the stored one it fits best (the one with its ``_id``, if it gives one)."""
    where = f"data.{model}"
    if len(stored) != len(expected):
        summary = [{k: v for k, v in o.items() if k not in ("createdAt", "updatedAt")} for o in stored]
        return [f"{where}: expected {len(expected)} object(s), {len(stored)} stored: {_show(summary)}"]
    failures, left = [], list(stored)
    for index, wanted in enumerate(expected):
        match = min(left, key=lambda o: (wanted.get("_id", o["_id"]) != o["_id"], len(differences(wanted, o, ""))))
        left.remove(match)
        failures.extend(differences(wanted, match, f"{where}[{index}]"))
    return failures


# --- flow tests: fixed function results ---------------------------------------------------

#: The fixed results of the case running in this context (function name -> result).
_FIXED: ContextVar[Mapping[str, Any]] = ContextVar("flowengine_fixed_functions", default=MappingProxyType({}))


def _allow_fixed_functions(app: App, names: set[str]) -> None:
    """Rebind the app's expressions that call ``names`` to a table where a case can fix them.

    Done once per loaded suite, on that suite's own compiled app: production expressions and
    expressions that call none of ``names`` keep the plain function table.
    """
    if not names:
        return
    table = {**FUNCTIONS, **{name: _fixable(name, FUNCTIONS[name]) for name in names}}
    for flow in app.flows.values():
        for node in flow.nodes.values():
            for _, value in node.params:
                for expression in expressions_in(value):
                    if _called(expression) & names:
                        expression._functions = table  # a fresh evaluator picks the table up
                        expression._idle.clear()


def _fixable(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        fixed = _FIXED.get()
        return fixed[name] if name in fixed else real(*args)

    call.blocking = getattr(real, "blocking", False)  # type: ignore[attr-defined]
    return call


def _called(expression: Expression) -> set[str]:
    return {n.func.id for n in ast.walk(expression.tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


# --- flow tests: running a case ----------------------------------------------------------


@dataclass
class Outcome:
    """What one case did, and every way it differed from what was expected."""

    case: Case
    status: int
    body: Any
    steps: list[Step]
    #: The error the run ended with, if it did.
    error: FlowError | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def path(self) -> list[str]:
        return [step.node for step in self.steps]


async def run_case(suite: Suite, case: Case) -> Outcome:
    """Run one case on fresh embedded services and compare the run with its expectations."""
    app = suite.app
    flow = app.flows[case.flow]
    spec = case.spec
    with tempfile.TemporaryDirectory(prefix="flowengine-test-") as data_dir:
        services = await _embedded_services(app, Path(data_dir))
        try:
            for key, value in spec.get("cache", {}).items():
                await services.cache.set(key, value)
            await _seed(services.store, spec.get("data", {}), _run_names(app, spec))
            scope: dict[str, Any] = {}
            flow.traces.clear()
            token = _FIXED.set(spec.get("functions", {}))
            try:
                reply, error = await _answer(app, flow, services, spec, scope)
            finally:
                _FIXED.reset(token)
            steps = list(flow.traces[0].steps) if flow.traces else []
            outcome = Outcome(case, reply.status, reply.body, steps, error)
            outcome.failures = await _compare(outcome, services, scope)
        finally:
            await services.close()
    return outcome


#: bcrypt's lowest cost: a case checks what a hash matches, not how long it took to make.
_BCRYPT_COST = 4


async def _embedded_services(app: App, data_dir: Path) -> Services:
    """The app's services on their embedded defaults, SQLite and files in ``data_dir``."""
    from flowengine.runtime import open_services, start_services

    settings = dict(app.settings)
    for service in ("cache", "database", "storage"):  # no URL: in-process cache, SQLite, local files
        settings[service] = {**(settings.get(service) or {}), "url": None}
    for channel in ("sms", "email"):
        settings[channel] = {**(settings.get(channel) or {}), "provider": "outbox"}
    auth = app.auth and replace(app.auth, bcrypt_cost=_BCRYPT_COST)
    services = open_services(replace(app, settings=settings, auth=auth), data_dir=data_dir)
    services.settings = app.settings
    if services.store is not None:  # encrypted fields of an app without auth
        services.store.bcrypt_rounds = _BCRYPT_COST
    await start_services(services)
    return services


async def _answer(
    app: App, flow: Flow, services: Services, spec: dict[str, Any], scope: dict[str, Any]
) -> tuple[Reply, FlowError | None]:
    """What the endpoint would answer (inputs checked, session required, time limit, error shape), and the error."""
    from flowengine.http.app import DEFAULT_TIMEOUT
    from flowengine.http.inputs import Inputs

    limits = app.settings.get("limits", {})
    params = {part: {name: _text(value) for name, value in spec.get(part, {}).items()} for part in ("query", "path")}
    params["headers"] = {name.lower(): _text(value) for name, value in spec.get("headers", {}).items()}
    params["body"] = spec.get("body")
    params["client"] = {"ip": spec.get("client", {}).get("ip", "127.0.0.1")}
    scope.update(params=params, **_run_names(app, spec))
    timeout = flow.timeout or seconds(limits.get("timeout")) or DEFAULT_TIMEOUT
    try:
        # A case's session stands for a fresh one: how recent a sign-in is, is the server's to check.
        if flow.endpoints and scope["session"] is None and all(e.session in ("required", "fresh") for e in flow.endpoints):
            raise FlowError("missing_session_token", "A session token is required", status=401, origin="session_token_error")
        Inputs(flow.input_models).validate(params)
        async with asyncio.timeout(timeout):
            result = await run_flow(flow, services, scope, step_limit=limits.get("steps", DEFAULT_STEP_LIMIT),
                                    stubs=_stubs(flow, spec.get("stubs", {})))  # fmt: skip
    except TimeoutError:
        late = FlowError("timeout", f"The endpoint did not answer within {timeout:g}s", status=504)
        return Reply(late.status, late.body()), late
    except FlowError as exc:
        return Reply(exc.status, exc.body()), exc
    return (result if isinstance(result, Reply) else Reply(200, result)), None


def _run_names(app: App, spec: Mapping[str, Any]) -> dict[str, Any]:
    """What a case's run (and its seeds' defaults) read besides params: session, user, env."""
    return {"session": spec.get("session"), "user": spec.get("user"), "env": app.settings.get("env", {})}


def _text(value: Any) -> Any:
    """A URL value as a client sends it: text (a list for a repeated key)."""
    if isinstance(value, list):
        return [_text(item) for item in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _stubs(flow: Flow, specs: Mapping[str, Mapping[str, Any]]) -> dict[str, Callable[..., Any]] | None:
    if not specs:
        return None
    return {node_id: _stub(spec, flow.nodes[node_id].type.outputs) for node_id, spec in specs.items()}


def _stub(spec: Mapping[str, Any], outputs: tuple[str, ...]) -> Callable[..., Any]:
    """A stand-in giving the stub's result (its ``output`` defaults to the type's first)."""
    output = spec.get("output", outputs[0] if outputs else None)

    async def stub(ctx: RunContext, params: Mapping[str, Any]) -> tuple[str | None, Any]:
        error = spec.get("error")
        if error is not None:
            message = error.get("message", f"stubbed failure ({error['code']})")
            raise FlowError(error["code"], message, status=error.get("status", 500))
        return output, spec.get("value")

    return stub


# --- flow tests: comparing ----------------------------------------------------------------


async def _compare(outcome: Outcome, services: Services, scope: dict[str, Any]) -> list[str]:
    expect = outcome.case.expect
    failures = []
    if "path" in expect and outcome.path != expect["path"]:
        failures.append(_divergence(expect["path"], outcome, scope))
    if "status" in expect and outcome.status != expect["status"]:
        failures.append(f"status: expected {expect['status']}, got {outcome.status}{_reason(outcome)}")
    if "body" in expect:
        failures.extend(differences(expect["body"], outcome.body, "body"))
    if "error" in expect:
        failures.extend(_error_code(expect["error"], outcome.body))
    for channel in ("sms", "email"):
        if channel in expect:
            sent = list(reversed(await services.cache.items(outbox_key(channel))))
            failures.extend(_messages(channel, expect[channel], sent))
    for key, value in expect.get("cache", {}).items():
        failures.extend(differences(value, await services.cache.get(key), f"cache[{key!r}]"))
    for model, objects in expect.get("data", {}).items():
        failures.extend(_objects(model, objects, await _all_objects(services.store, model)))
    if failures and "path" not in expect:
        failures.append(f"path taken: {_arrows(outcome.path)}")
    return failures


def _divergence(expected: list[str], outcome: Outcome, scope: dict[str, Any]) -> str:
    """Where the run left the expected path, and why, in a builder's words."""
    steps, taken = outcome.steps, outcome.path
    i = next((i for i, (a, b) in enumerate(zip(expected, taken)) if a != b), min(len(expected), len(taken)))
    if not taken:
        failure = outcome.error
        why = f" ({failure.code}: {failure.message})" if failure is not None else ""
        where = f"no node ran{why}" + (f", expected '{expected[0]}' first" if expected else "")
    elif i == 0 and expected:
        where = f"the run started at '{taken[0]}', expected '{expected[0]}'"
    elif i < len(taken) and i < len(expected):
        how = _exit(steps[i - 1], outcome, scope)
        where = f"diverged at '{taken[i - 1]}': it {how} and went to '{taken[i]}', expected '{expected[i]}'"
    elif i < len(expected):
        how = _exit(steps[-1], outcome, scope)
        where = f"the run stopped at '{taken[-1]}': it {how}, expected it to go on to '{expected[i]}'"
    else:
        where = f"the run went on after '{expected[-1]}' to '{taken[i]}'" if expected else "expected no node to run"
    return f"path: {where}\n  expected: {_arrows(expected)}\n  taken:    {_arrows(taken)}"


def _exit(step: Step, outcome: Outcome, scope: dict[str, Any]) -> str:
    """How a step left its node: the output it took, or the error it raised."""
    if step.error is None:
        return f"took '{step.output}'" if step.output else "ended the run"
    error = scope.get("error") or {}  # the last error an error edge or on_error received
    failure = outcome.error
    if error.get("node") == step.node:
        detail = f"{error.get('code')}: {error.get('message')}"
    elif failure is not None and failure.code == step.error:
        detail = f"{failure.code}: {failure.message}"
    else:
        detail = step.error
    return f"failed ({detail})"


def _reason(outcome: Outcome) -> str:
    errors = outcome.body.get("errors") if isinstance(outcome.body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return f" ({errors[0].get('code')}: {errors[0].get('message')})"
    return ""


def differences(expected: Any, actual: Any, where: str) -> list[str]:
    """How ``actual`` fails to contain ``expected``: mappings are subsets, lists match item by item."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected a mapping, got {_show(actual)}"]
        found = []
        for key, value in expected.items():
            if key not in actual:
                found.append(f"{where}.{key}: expected {_show(value)}, missing")
            else:
                found.extend(differences(value, actual[key], f"{where}.{key}"))
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {_show(expected)}, got {_show(actual)}"]
        return [line for i, (e, a) in enumerate(zip(expected, actual)) for line in differences(e, a, f"{where}[{i}]")]
    same = expected is actual if isinstance(expected, bool) or isinstance(actual, bool) else expected == actual
    return [] if same else [f"{where}: expected {_show(expected)}, got {_show(actual)}"]


def _error_code(code: str, body: Any) -> list[str]:
    errors = body.get("errors") if isinstance(body, dict) else None
    codes = [item.get("code") for item in errors or [] if isinstance(item, dict)]
    if code in codes:
        return []
    return [f"error: expected code '{code}', got " + (f"codes {codes}" if codes else "a success answer")]


def _messages(channel: str, expected: list[dict[str, Any]], sent: list[dict[str, Any]]) -> list[str]:
    if len(sent) != len(expected):
        summary = [{k: m.get(k) for k in ("to", "body", "subject") if k in m} for m in sent]
        return [f"{channel}: expected {len(expected)} message(s), {len(sent)} sent: {_show(summary)}"]
    return [line for i, (e, a) in enumerate(zip(expected, sent)) for line in differences(e, a, f"{channel}[{i}]")]


def _show(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _arrows(path: list[str]) -> str:
    return " → ".join(path) if path else "(nothing)"


# --- flow tests: the report ---------------------------------------------------------------


def describe(outcome: Outcome) -> str:
    """One case's result as the report prints it."""
    mark = "PASS" if outcome.passed else "FAIL"
    lines = [f"  {mark}  {outcome.case.name}" + ("" if outcome.passed else f"  ({outcome.case.where.file}:{outcome.case.where.line})")]
    for failure in outcome.failures:
        lines.extend("        " + line for line in failure.splitlines())
    return "\n".join(lines)


async def run_suite(suite: Suite, out: TextIO = sys.stdout, select: str | None = None) -> bool:
    """Run every case (whose name contains ``select``), print the report; True when all pass."""
    cases = [c for c in suite.cases if not select or select.lower() in c.name.lower()]
    if not cases:
        print("no flow tests found (flows/tests/*.yaml, or 'tests:' in a flow file)", file=out)
        return True
    passed = failed = 0
    current = None
    for case in cases:
        if case.where.file != current:
            current = case.where.file
            print(f"{current} ({case.flow})", file=out)
        outcome = await run_case(suite, case)
        print(describe(outcome), file=out)
        passed, failed = passed + outcome.passed, failed + (not outcome.passed)
    print(f"\n{passed} passed, {failed} failed", file=out)
    return failed == 0
