"""The app described as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

Everything comes from the loaded app, so the document cannot drift from what is served:
each endpoint's parameters and body are the JSON Schemas its requests are validated with,
models are published under ``components.schemas``, and every error answer points at one
shared ``Errors`` schema — the Altogic shape the engine always answers with. Success
statuses are read from the flow's terminal nodes when they state one (``status: 201``).
"""

from __future__ import annotations

import copy
import re
from http import HTTPStatus
from typing import Any

from flowengine.graph import Constant, Endpoint, Flow
from flowengine.http.inputs import Inputs
from flowengine.spec.app import App

OPENAPI_VERSION = "3.1.0"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

ERRORS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error answer: one item per problem (Altogic's shape).",
    "required": ["errors"],
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["origin", "code", "message"],
                "properties": {
                    "origin": {"type": "string", "examples": ["client_error", "server_error"]},
                    "code": {"type": "string", "examples": ["validation_error"]},
                    "message": {"type": "string"},
                    "details": {"description": "more about the error, e.g. {field: 'body.email'}"},
                },
            },
        }
    },
}

ERRORS_REF = {"$ref": "#/components/schemas/Errors"}

SECURITY_SCHEMES = {
    "session": {"type": "apiKey", "in": "header", "name": "Session", "description": "a session token"},
    "clientKey": {"type": "apiKey", "in": "header", "name": "X-Client-Key", "description": "the app's client key"},
}

#: Errors any endpoint can answer with, whatever its flow does.
COMMON_ERRORS = {
    400: "Invalid input: one error item per bad field",
    401: "Missing or invalid session token or client key, or (reauth_required) a session signed in too long ago",
    404: "Not found",
    500: "Internal error; the message carries an error id to look up in the log",
}
BODY_ERRORS = {413: "The request body is too large", 415: "The request body must be JSON"}

_CONVERTOR = re.compile(r"\{([^}:]+):[^}]*\}")
_PATH_PARAM = re.compile(r"\{([^}]*)\}")
_LOCATIONS = {"path": "path", "query": "query", "headers": "header"}


def describe(app: App) -> dict[str, Any]:
    """The OpenAPI document of every endpoint and model of ``app``."""
    paths: dict[str, dict[str, Any]] = {}
    client_keys = bool(app.settings.get("client_keys"))
    for flow in app.flows.values():
        inputs = Inputs(flow.input_models)
        for index, endpoint in enumerate(flow.endpoints):
            path = _CONVERTOR.sub(r"{\1}", endpoint.path)
            operation_id = flow.name if len(flow.endpoints) == 1 else f"{flow.name}{index + 1}"
            paths.setdefault(path, {})[endpoint.method.lower()] = _operation(
                flow, endpoint, operation_id, inputs, client_keys
            )
    schemas = {name: model.json_schema() for name, model in sorted(app.models.items())}
    schemas["Errors"] = ERRORS_SCHEMA
    document = {
        "openapi": OPENAPI_VERSION,
        "info": _info(app),
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }
    return copy.deepcopy(document)  # models' schemas and this module's own stay untouched


def _info(app: App) -> dict[str, Any]:
    info = {"title": app.name, "version": str(app.settings.get("version", "1.0.0"))}
    if app.settings.get("description"):
        info["description"] = app.settings["description"]
    return info


def _operation(flow: Flow, endpoint: Endpoint, operation_id: str, inputs: Inputs, client_keys: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": flow.description or flow.name}
    if endpoint.description:
        operation["description"] = endpoint.description
    parameters = _parameters(endpoint, inputs)
    if parameters:
        operation["parameters"] = parameters
    reads_body = endpoint.method in BODY_METHODS
    body = flow.inputs.get("body") if reads_body else None
    if body is not None:
        operation["requestBody"] = _request_body(body, inputs)
    operation["responses"] = _responses(flow, reads_body)
    security = _security(endpoint.session, client_keys)
    if security:
        operation["security"] = security
    return operation


def _parameters(endpoint: Endpoint, inputs: Inputs) -> list[dict[str, Any]]:
    in_path = _PATH_PARAM.findall(_CONVERTOR.sub(r"{\1}", endpoint.path))
    parameters = []
    for part, location in _LOCATIONS.items():
        schema = inputs.schema_of(part) or {"properties": {}, "required": []}
        fields = schema["properties"]
        names = in_path if part == "path" else list(fields)
        for name in names:
            field = fields.get(name, {"type": "string"})
            required = part == "path" or name in schema.get("required", ())
            shown = name.replace("_", "-") if part == "headers" else name  # see spec.app.field_name
            parameter = {"name": shown, "in": location, "required": required}
            if "description" in field:
                parameter["description"] = field["description"]
            parameters.append({**parameter, "schema": field})
    return parameters


def _request_body(declared: dict[str, Any], inputs: Inputs) -> dict[str, Any]:
    if "model" in declared:
        schema: dict[str, Any] = {"$ref": f"#/components/schemas/{declared['model']}"}
        if declared.get("list"):
            schema = {"type": "array", "items": schema}
        required = True
    else:
        schema = inputs.schema_of("body") or {"type": "object"}
        required = bool(schema.get("required"))
    return {"required": required, "content": _json(schema)}


def _responses(flow: Flow, reads_body: bool) -> dict[str, Any]:
    stated = _stated_statuses(flow)
    errors = {**COMMON_ERRORS, **(BODY_ERRORS if reads_body else {})}
    errors.update({status: _phrase(status) for status in stated if status >= 400 and status not in errors})
    responses: dict[str, Any] = {}
    for status in sorted(s for s in stated if s < 400) or [200]:
        responses[str(status)] = {"description": "The flow's answer, as bare JSON", "content": _json({})}
    for status in sorted(errors):
        responses[str(status)] = {"description": errors[status], "content": _json(ERRORS_REF)}
    return responses


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"Status {status}"


def _stated_statuses(flow: Flow) -> set[int]:
    """The statuses the flow's terminal nodes answer with, where they are written literally."""
    found = set()
    for node in flow.nodes.values():
        status = dict(node.params).get("status") if node.type.terminal else None
        if isinstance(status, Constant) and isinstance(status.value, int):
            found.add(status.value)
    return found


def _security(session: str, client_keys: bool) -> list[dict[str, list[str]]]:
    key: dict[str, list[str]] = {"clientKey": []} if client_keys else {}
    if session in ("required", "fresh"):
        return [{"session": [], **key}]
    if session == "optional":
        return [{"session": [], **key}, key]
    return [key] if key else []
