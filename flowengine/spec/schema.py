"""JSON Schema validation that speaks like a colleague.

The app, flow and model files are validated against the published schemas in
``schemas/`` (the same files an editor uses for completion). Each jsonschema error becomes
one ``SpecError`` placed at the key it is about, worded as what was expected.
"""

from __future__ import annotations

import copy
import difflib
import json
from functools import cache
from importlib import resources
from typing import Any, Container, Iterable

import jsonschema

from flowengine.errors import SpecError
from flowengine.registry import NodeType, Registry
from flowengine.spec import envvars
from flowengine.spec.yamlfile import Document

SCHEMA_URL = "https://flowengine.dev/schemas/{}.schema.json"


@cache
def schema(name: str) -> dict[str, Any]:
    """One of the published schemas: 'app', 'flow' or 'model'."""
    text = resources.files("flowengine.spec").joinpath(f"schemas/{name}.schema.json").read_text()
    return json.loads(text)


@cache
def validator_for(name: str) -> jsonschema.Draft202012Validator:
    """The compiled validator of published schema ``name``."""
    return jsonschema.Draft202012Validator(schema(name))


def validate(
    document: Document, name: str, prefix: tuple = (), node: str | None = None, skip: Container[tuple] = ()
) -> list[SpecError]:
    """Check ``document.data`` (or the part at ``prefix``) against schema ``name``."""
    data = _at(document.data, prefix)
    return check(validator_for(name), data, document, prefix, node, skip)


def check(
    validator: jsonschema.protocols.Validator,
    data: Any,
    document: Document,
    prefix: tuple = (),
    node: str | None = None,
    skip: Container[tuple] = (),
) -> list[SpecError]:
    """Validate ``data`` found at ``prefix`` of ``document`` with a ready validator.

    Errors at the paths in ``skip`` are left out: the caller has reported those values.
    """
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = prefix + tuple(error.absolute_path)
        if path in skip:
            continue
        for message, at in _explain(error, path):
            problems.append(SpecError(document.where(*at), message, node))
    return problems


def _at(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


def _explain(error: jsonschema.ValidationError, path: tuple) -> Iterable[tuple[str, tuple]]:
    """One or more (message, path) pairs for a jsonschema error.

    A pattern or a choice of shapes means nothing to a builder as written, so when the
    schema describes the value (its ``description``) the message says what was expected.
    """
    name = f"'{path[-1]}'" if path and isinstance(path[-1], str) else "the value" if path else "the file"
    validator, expected = error.validator, error.validator_value
    described = error.schema.get("description") if isinstance(error.schema, dict) else None
    if validator == "required":
        missing = [key for key in expected if key not in error.instance]
        for key in missing:
            yield f"missing required key '{key}'", path
    elif validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        for key in sorted(set(error.instance) - set(known)):
            yield f"unknown key '{key}'{_did_you_mean(key, known)}", path + (key,)
    elif validator == "type":
        kinds = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_article(kind) for kind in kinds)
        yield f"{name} must be {wanted}, got {_describe(error.instance)}{_quote_hint(kinds, error.instance)}", path
    elif validator in ("enum", "const"):
        options = expected if validator == "enum" else [expected]
        hint = _did_you_mean(str(error.instance), [str(o) for o in options])
        listed = ", ".join(json.dumps(o) for o in options)
        yield f"{name} must be one of {listed}, got {json.dumps(error.instance)}{hint}", path
    elif validator == "pattern" and "propertyNames" in error.schema_path:
        wanted = described or f"a name matching {expected}"
        yield f"'{error.instance}' is not a valid key in {name}: expected {wanted}", path + (error.instance,)
    elif validator == "pattern":
        wanted = described or f"text matching the pattern {expected}"
        yield f"{name} {json.dumps(error.instance)} is not valid: expected {wanted}", path
    elif validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {"minimum": "at least", "maximum": "at most",
                 "exclusiveMinimum": "more than", "exclusiveMaximum": "less than"}  # fmt: skip
        yield f"{name} must be {words[validator]} {expected}, got {error.instance}", path
    elif validator == "minProperties":
        yield f"{name} must have at least {expected} entr{'y' if expected == 1 else 'ies'}", path
    elif validator in ("oneOf", "anyOf") and described:
        yield f"{name} {json.dumps(error.instance)} is not valid: expected {described}", path
    elif validator in ("oneOf", "anyOf"):
        yield f"{name} has the wrong shape: {_best(error)}", path
    elif validator == "propertyNames":
        yield f"{name}: {error.message}", path
    else:
        yield f"{name}: {error.message}", path


def _best(error: jsonschema.ValidationError) -> str:
    best = jsonschema.exceptions.best_match(error.context or [])
    return best.message if best else error.message


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _quote_hint(kinds: list[str], value: Any) -> str:
    """YAML reads a bare yes/no/on/off/true/false as a boolean, which surprises anyone wanting text."""
    if "string" in kinds and isinstance(value, bool):
        return "; YAML reads yes/no/on/off/true/false unquoted as a boolean, so put the text in quotes"
    return ""


def _article(kind: str) -> str:
    words = {"object": "a mapping", "array": "a list", "string": "text", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "empty"}  # fmt: skip
    return words.get(kind, kind)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"text ({json.dumps(value[:40])})"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


EDITOR_SCHEMAS = ("app", "model", "flow")


def editor_schema(name: str, registry: Registry | None = None) -> dict[str, Any]:
    """The schema an editor should use for ``name`` files ('app', 'model' or 'flow').

    The published flow schema leaves a node's keys open: which node types exist is only
    known once an app's registry is built, and loading checks each node against its own
    type then. For an editor, flows spell out every node type of ``registry`` (an app's,
    from ``load_registry``) or, without one, every installed type (``Registry.default()``):
    ``type`` completes from the known names, and once it is set the node's params, outputs
    and their descriptions do.

    The app schema also takes a whole ``${VAR}`` where a setting is typed: loading turns it
    into the integer, number or boolean wanted there, so an editor must not flag it.
    """
    if name not in EDITOR_SCHEMAS:
        raise ValueError(f"no schema named {name!r}; choose one of {', '.join(EDITOR_SCHEMAS)}")
    if name == "app":
        return _taking_references(schema(name))
    published = copy.deepcopy(schema(name))
    if name == "flow":
        types = sorted(registry if registry is not None else Registry.default(), key=lambda t: t.name)
        published["properties"]["nodes"]["additionalProperties"] = _any_node(types)
    return published


def _taking_references(node: Any) -> Any:
    """A copy of schema ``node`` where each integer, number or boolean may also be text that
    is exactly one ``${VAR}`` (text it already takes is left as it is)."""
    if isinstance(node, list):
        return [_taking_references(item) for item in node]
    if not isinstance(node, dict):
        return node
    copied = {key: _taking_references(value) for key, value in node.items()}
    kinds = node.get("type")  # a dict here is a property named 'type', not a schema keyword
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if isinstance(kinds, list) and envvars.CONVERTIBLE_TYPES & set(kinds) and "string" not in kinds:
        copied["type"] = [*kinds, "string"]
        copied["pattern"] = envvars.WHOLE_REFERENCE_PATTERN  # checks strings only: numbers pass as before
    return copied


def _any_node(types: list[NodeType]) -> dict[str, Any]:
    """One node of any of ``types``: each branch applies only to nodes of its own type."""
    return {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": [node_type.name for node_type in types], "description": "the node type"}},
        "allOf": [
            {
                "if": {"properties": {"type": {"const": node_type.name}}, "required": ["type"]},
                "then": node_type.yaml_schema(),
            }
            for node_type in types
        ],
    }
