"""Loading an app folder: ``app.yaml``, ``models/*.yaml``, ``flows/*.yaml`` → a checked ``App``.

Loading is all-or-nothing and reports everything at once: each file is parsed, validated
against its schema, and compiled; cross-file rules (unique service names and routes, known
models) are checked last. Any problem raises ``SpecErrors`` listing all of them with
file:line:col, which is exactly what ``flowengine check`` prints.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Mapping

from flowengine.access import check_data_api
from flowengine.errors import Location, SpecError, SpecErrors
from flowengine.graph import Flow, compile_flow
from flowengine.registry import Registry, RegistryError
from flowengine.spec import envvars, schema as schemas, yamlfile
from flowengine.spec.yamlfile import Document


@dataclass
class App:
    """A loaded, checked app: ready to be served."""

    dir: Path
    name: str
    settings: dict[str, Any]
    registry: Registry
    models: dict[str, Any]
    flows: dict[str, Flow]
    documents: dict[str, Document] = field(default_factory=dict)
    #: Built-in authentication (``flowengine.auth.config.AuthConfig``) when app.yaml has ``auth:``.
    auth: Any = None

    def flow(self, name: str) -> Flow:
        return self.flows[name]


def load_app(app_dir: str | Path, environ: Mapping[str, str] | None = None) -> App:
    """Load and check the app in ``app_dir``; raises ``SpecErrors`` with every problem."""
    root = Path(app_dir).resolve()
    environ = os.environ if environ is None else environ
    problems: list[SpecError] = []
    documents: dict[str, Document] = {}

    settings_doc = _read(root, "app.yaml", problems, documents)
    settings = _settings(settings_doc, environ, problems) if settings_doc else {}
    registry = _registry(root, settings, settings_doc, problems)
    auth = _auth(root, settings, settings_doc, problems)
    models = _models(root, problems, documents, with_users=auth is not None)
    if auth is not None and auth.second_factor and settings_doc is not None:
        problems.extend(_second_factor_problems(auth.second_factor, models, settings_doc))
    flows = _flows(root, registry, models, problems, documents)
    app = App(root, settings.get("name", root.name), settings, registry, models, flows, documents, auth)
    if not problems:
        problems.extend(check_data_api(app))
    if problems:
        raise SpecErrors(sorted(problems, key=_order))
    return app


def load_registry(app_dir: str | Path, environ: Mapping[str, str] | None = None) -> Registry:
    """The node types the app in ``app_dir`` can use: installed ones plus app.yaml's ``node_modules``.

    Built as ``load_app`` builds it, from app.yaml alone: models and flows are not read, so a
    broken flow does not hide the node types an editor needs to fix it. Raises ``SpecErrors``
    with app.yaml's problems (unreadable, not the app schema, unset variables, a node module
    that fails to import).
    """
    root = Path(app_dir).resolve()
    problems: list[SpecError] = []
    document = _read(root, "app.yaml", problems, {})
    settings = _settings(document, os.environ if environ is None else environ, problems) if document else {}
    registry = _registry(root, settings, document, problems)
    if problems:
        raise SpecErrors(sorted(problems, key=_order))
    return registry


def _order(problem: SpecError) -> tuple:
    return (problem.where.file, problem.where.line, problem.where.column)


def _read(root: Path, relative: str, problems: list[SpecError], documents: dict[str, Document]) -> Document | None:
    path = root / relative
    if not path.is_file():
        if relative == "app.yaml":
            problems.append(SpecError(Location(relative), "not found; an app folder needs an app.yaml (at least 'name: my-app')"))
        return None
    try:
        document = yamlfile.load(path, relative)
    except SpecErrors as exc:
        problems.extend(exc.errors)
        return None
    documents[relative] = document
    return document


def _files(root: Path, folder: str) -> list[str]:
    base = root / folder
    if not base.is_dir():
        return []
    found = sorted(p for p in base.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [f"{folder}/{p.name}" for p in found]


def _settings(document: Document, environ: Mapping[str, str], problems: list[SpecError]) -> dict[str, Any]:
    if document.data is None:
        document.data = {}
    wholes: dict[tuple, envvars.WholeReference] = {}
    missing = envvars.substitute(document, environ, wholes)  # first, so ${VAR} can fill any setting
    mistyped = envvars.convert(document, wholes, schemas.validator_for("app"))  # "12" → 12 where typed
    found = schemas.validate(document, "app", skip=mistyped)
    problems.extend(missing + list(mistyped.values()) + found)
    return document.data if isinstance(document.data, dict) else {}


def _registry(root: Path, settings: dict[str, Any], document: Document | None, problems: list[SpecError]) -> Registry:
    try:
        registry = Registry.default()
    except (RegistryError, ImportError) as exc:
        problems.append(SpecError(Location("app.yaml"), f"installed node types: {exc}"))
        return Registry()
    for index, module in enumerate(settings.get("node_modules", [])):
        try:
            registry.add_module(_import_local(root, module))
        except Exception as exc:  # whatever an app's own module raises is a problem to report
            where = document.value_where("node_modules", index) if document else Location("app.yaml")
            problems.append(SpecError(where, _module_problem(module, exc)))
    return registry


def _module_problem(module: str, exc: Exception) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name == module:
        return f"node module '{module}' not found; put {module}.py in the app folder or install the package that has it"
    if isinstance(exc, RegistryError):
        return f"node module '{module}': {exc}"
    return f"node module '{module}' failed to import: {type(exc).__name__}: {exc}"


def _import_local(root: Path, module: str) -> Any:
    """Import an app's own node module, looked up in the app folder first.

    A module of that name imported earlier from elsewhere (another app's ``nodes.py``, say)
    is dropped first, so each app gets its own file.
    """
    import sys

    if str(root) in sys.path:
        sys.path.remove(str(root))
    sys.path.insert(0, str(root))
    top = module.split(".")[0]
    loaded = sys.modules.get(top)
    ours = (root / f"{top}.py").is_file() or (root / top / "__init__.py").is_file()
    if ours and loaded is not None and not str(getattr(loaded, "__file__", "") or "").startswith(str(root)):
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
    return importlib.import_module(module)


def _auth(root: Path, settings: dict[str, Any], document: Document | None, problems: list[SpecError]) -> Any:
    """The checked ``auth:`` section, or None when the app has no built-in authentication.

    An app has it when app.yaml has an ``auth:`` section, or when the app extends the
    built-in users with ``models/users.yaml`` (then with every default).
    """
    section = settings.get("auth", {} if _has_users(root) else None)
    if not isinstance(section, dict) or document is None:
        return None
    from flowengine.auth.config import load_config

    try:
        config, found = load_config(section, document.value_where, root)
    except (TypeError, ValueError, KeyError):  # a value the schema check has already reported
        return None
    problems.extend(found)
    return config


def _second_factor_problems(name: str, models: Mapping[str, Any], document: Document) -> list[SpecError]:
    """``auth.second_factor`` must name a boolean field of users."""
    users = models.get("users")
    field = users.fields.get(name) if users is not None else None
    if field is not None and field.type == "boolean":
        return []
    known = [n for n, f in users.fields.items() if f.type == "boolean"] if users is not None else []
    hint = difflib.get_close_matches(name, known, n=1)
    message = f"second_factor '{name}' is not a boolean field of users" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    return [SpecError(document.value_where("auth", "second_factor"), message)]


def _has_users(root: Path) -> bool:
    return any((root / "models" / f"users{suffix}").is_file() for suffix in (".yaml", ".yml"))


def _models(root: Path, problems: list[SpecError], documents: dict[str, Document], with_users: bool) -> dict[str, Any]:
    try:
        from flowengine import models as model_compiler
    except ImportError:  # the data layer is optional while an app has no models
        return {}
    loaded = []
    for relative in _files(root, "models"):
        if PurePath(relative).stem.startswith("_"):
            problems.append(SpecError(Location(relative), "model names starting with '_' are reserved for flowengine's own models"))
            continue
        document = _read(root, relative, problems, documents)
        if document is not None:
            loaded.append(document)
    if with_users:  # the built-in users model, extended by the app's models/users.yaml
        loaded = _with_built_in_users(loaded, problems)
    models, found = model_compiler.compile_documents(loaded)
    problems.extend(found)
    return models


def _with_built_in_users(loaded: list[Document], problems: list[SpecError]) -> list[Document]:
    from flowengine.auth.users import USERS, users_document

    own = next((d for d in loaded if PurePath(d.file).stem == USERS), None)
    users, found = users_document(own)
    problems.extend(found)
    return [d for d in loaded if d is not own] + [users]


def _flows(
    root: Path,
    registry: Registry,
    models: dict[str, Any],
    problems: list[SpecError],
    documents: dict[str, Document],
) -> dict[str, Flow]:
    flows: dict[str, Flow] = {}
    routes: dict[tuple[str, str], tuple[str, Location]] = {}
    for relative in _files(root, "flows"):
        document = _read(root, relative, problems, documents)
        if document is None:
            continue
        flow, found = compile_flow(document, registry, models, root)
        problems.extend(found)
        if flow is None:
            continue
        if flow.name in flows:
            where = document.value_where("service")
            problems.append(SpecError(where, f"service '{flow.name}' is already defined in {flows[flow.name].file}"))
            continue
        problems.extend(_check_inputs(document, flow, models))
        for endpoint in flow.endpoints:
            key = (endpoint.method, _route_shape(endpoint.path))
            if key in routes:
                service, where = routes[key]
                message = f"route {endpoint.method} {endpoint.path} is already served by service '{service}' at {where}"
                problems.append(SpecError(endpoint.where, message))
            else:
                routes[key] = (flow.name, endpoint.where)
        flows[flow.name] = flow
    problems.extend(_check_references(flows, models, documents))
    return flows


def _check_references(flows: dict[str, Flow], models: dict[str, Any], documents: dict[str, Document]) -> list[SpecError]:
    """Params that name a service or a model must name one that exists."""
    problems = []
    known = {"service": flows, "model": models}
    for flow in flows.values():
        document = documents[flow.file]
        for node_id, spec in flow.raw["nodes"].items():
            node = flow.nodes[node_id]
            for name, param in node.type.params.items():
                value = spec.get(name)
                if param.refers_to is None or value is None or value in known[param.refers_to]:
                    continue
                close = difflib.get_close_matches(str(value), list(known[param.refers_to]), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                where = document.value_where("nodes", node_id, name)
                problems.append(SpecError(where, f"unknown {param.refers_to} '{value}'{hint}", node_id))
    return problems


def _route_shape(path: str) -> str:
    """``/users/{id}`` and ``/users/{userId}`` are the same route."""
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/") or "/")


def _check_inputs(document: Document, flow: Flow, models: dict[str, Any]) -> list[SpecError]:
    """Compile the flow's declared inputs into transient models; check path parameters."""
    problems = []
    for part, spec in flow.inputs.items():
        if part == "body" and "model" in spec:
            model = _body_model(document, spec, models, problems)
        else:
            model = _inline_model(document, flow, part, spec, problems)
        if model is not None:
            flow.input_models[part] = model
    for endpoint in flow.endpoints:
        declared = set(flow.inputs.get("path", {}))
        for name in re.findall(r"\{([^}]*)\}", endpoint.path):
            if name not in declared and flow.inputs.get("path") is not None:
                listed = ", ".join(sorted(declared)) or "nothing"
                message = f"path parameter '{name}' is not declared in inputs.path (it declares: {listed})"
                problems.append(SpecError(endpoint.where, message))
    return problems


def _body_model(document: Document, spec: dict[str, Any], models: dict[str, Any], problems: list[SpecError]) -> Any:
    name = spec["model"]
    if name in models:
        return ListOf(models[name]) if spec.get("list") else models[name]
    close = difflib.get_close_matches(name, list(models), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else "" if models else " (the app has no models in models/)"
    problems.append(SpecError(document.value_where("inputs", "body", "model"), f"unknown model '{name}'{hint}"))
    return None


def _inline_model(document: Document, flow: Flow, part: str, fields: dict[str, Any], problems: list[SpecError]) -> Any:
    from flowengine.models import compile_model

    names = {field_name(name): name for name in fields} if part == "headers" else {}

    def where(*keys: Any) -> Location:  # the model compiler speaks of ("fields", name, ...)
        return document.where("inputs", part, *(names.get(k, k) for k in keys[1:]))

    declared = {field_name(name): spec for name, spec in fields.items()} if names else fields
    model, found = compile_model(f"{flow.name}.{part}", {"transient": True, "fields": declared}, where)
    problems.extend(found)
    if model is not None:
        model.noun = NOUNS[part]
    return model


#: How messages name a field of each part of a request.
NOUNS = {"query": "query parameter", "path": "path parameter", "headers": "header", "body": "body field"}


def field_name(header: str) -> str:
    """``X-Request-Id`` is declared as a field ``x_request_id`` (a header name is no identifier)."""
    return header.lower().replace("-", "_")


@dataclass(frozen=True)
class ListOf:
    """A body that is a list of objects of one model."""

    model: Any

    @property
    def name(self) -> str:
        return self.model.name

    def json_schema(self) -> dict[str, Any]:
        return {"type": "array", "items": self.model.json_schema()}

    def validate_input(self, values: Any) -> list[Any]:
        from flowengine.errors import ValidationFailed

        if not isinstance(values, list):
            raise ValidationFailed([{"origin": "client_error", "code": "validation_error",
                                     "message": f"the body must be a list of {self.model.name} objects",
                                     "details": {"field": ""}}])  # fmt: skip
        items, cleaned = [], []
        for index, value in enumerate(values):
            try:
                cleaned.append(self.model.validate_input(value))
            except ValidationFailed as exc:
                items.extend({**i, "details": {**i.get("details", {}), "field": f"{index}.{i['details']['field']}"}} for i in exc.items)
        if items:
            raise ValidationFailed(items)
        return cleaned
