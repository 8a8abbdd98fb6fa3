"""A flow's declared inputs, compiled into a validator for its requests.

``inputs.query``, ``inputs.path`` and ``inputs.headers`` declare fields (text in the URL,
converted to the declared type); ``inputs.body`` declares fields or names a model. Every
bad field yields one error item naming it; the flow never starts on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jsonschema

from flowengine.errors import ValidationFailed
from flowengine.fields import field_schema

PARTS = ("path", "query", "headers", "body")
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _convert(kind: str, text: Any) -> Any:
    """URL text → the declared type; left as text when it does not convert (the schema then says why)."""
    if not isinstance(text, str):
        return text
    try:
        if kind == "integer":
            return int(text)
        if kind == "decimal":
            return float(text)
    except ValueError:
        return text
    if kind == "boolean":
        lowered = text.lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else text
    return text


@dataclass
class Part:
    name: str
    schema: dict[str, Any]
    validator: jsonschema.Draft202012Validator
    types: dict[str, str]
    model: Any = None


class Inputs:
    """Validates and converts one request's params for one flow."""

    def __init__(self, declared: Mapping[str, Any], models: Mapping[str, Any]) -> None:
        self.parts: list[Part] = []
        for name in PARTS:
            spec = declared.get(name)
            if spec is None:
                continue
            if name == "body" and "model" in spec:
                model = models[spec["model"]]
                self.parts.append(Part(name, model.json_schema(), None, {}, model))  # type: ignore[arg-type]
                continue
            schema = _object_schema(spec)
            types = {field: options["type"] for field, options in spec.items()}
            self.parts.append(Part(name, schema, jsonschema.Draft202012Validator(schema), types))

    def validate(self, params: dict[str, Any]) -> None:
        """Convert and check ``params`` in place; raise ``ValidationFailed`` listing each bad field."""
        items: list[dict[str, Any]] = []
        for part in self.parts:
            value = params.get(part.name)
            if part.model is not None:
                items.extend(_model_items(part, value, params))
                continue
            if part.name != "body":
                value = {k: _convert(part.types[k], v) if k in part.types else v for k, v in (value or {}).items()}
                params[part.name] = value
            elif value is None:
                value = params[part.name] = {}
            items.extend(_items(part, value))
        if items:
            raise ValidationFailed(items)

    def schema_of(self, part: str) -> dict[str, Any] | None:
        for candidate in self.parts:
            if candidate.name == part:
                return candidate.schema
        return None


def _object_schema(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: field_schema(options) for name, options in spec.items()},
        "required": [name for name, options in spec.items() if options.get("required")],
    }


def _model_items(part: Part, value: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        params["body"] = part.model.validate_input(value if value is not None else {})
    except ValidationFailed as exc:
        return [_prefixed(item, "body") for item in exc.items]
    return []


def _prefixed(item: dict[str, Any], part: str) -> dict[str, Any]:
    details = dict(item.get("details") or {})
    if "field" in details:
        details["field"] = f"{part}.{details['field']}"
    return {**item, "details": details}


def _items(part: Part, value: Any) -> list[dict[str, Any]]:
    where = {"body": "body field", "query": "query parameter", "path": "path parameter", "headers": "header"}[part.name]
    items = []
    for error in part.validator.iter_errors(value):
        field = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "required":
            # jsonschema reports each missing field as its own error, each carrying the whole
            # required list: keep one item per field.
            for missing in [k for k in error.validator_value if k not in error.instance]:
                name = ".".join(p for p in (field, missing) if p)
                item = _item(part.name, name, f"{where} '{name}' is required")
                if item not in items:
                    items.append(item)
        elif error.validator == "type" and not field:
            items.append(_item(part.name, "", f"the {part.name} must be a JSON object"))
        else:
            items.append(_item(part.name, field, f"{where} '{field}': {_reason(error)}"))
    return items


def _item(part: str, field: str, message: str) -> dict[str, Any]:
    return {
        "origin": "client_error",
        "code": "validation_error",
        "message": message,
        "details": {"field": f"{part}.{field}" if field else part},
    }


def _reason(error: jsonschema.ValidationError) -> str:
    messages: dict[str, Callable[[Any], str]] = {
        "type": lambda v: f"must be {_TYPE_WORDS.get(v if isinstance(v, str) else v[0], v)}",
        "minimum": lambda v: f"must be at least {v}",
        "maximum": lambda v: f"must be at most {v}",
        "minLength": lambda v: f"must be at least {v} characters long",
        "maxLength": lambda v: f"must be at most {v} characters long",
        "pattern": lambda v: "has the wrong format",
        "enum": lambda v: "must be one of " + ", ".join(map(str, v)),
        "format": lambda v: f"must be a valid {v}",
        "minItems": lambda v: f"must have at least {v} items",
        "maxItems": lambda v: f"must have at most {v} items",
    }
    explain = messages.get(str(error.validator))
    return explain(error.validator_value) if explain else error.message


_TYPE_WORDS = {"string": "text", "integer": "an integer", "number": "a number", "boolean": "true or false",
               "array": "a list", "object": "an object"}  # fmt: skip
