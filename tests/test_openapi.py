"""``GET /openapi.json`` through the real Starlette app: a valid OpenAPI 3.1 document that
matches what the app serves."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest
from openapi_spec_validator import validate
from starlette.testclient import TestClient

from flowengine.context import Services
from flowengine.http.app import build_app
from flowengine.http.openapi import describe
from flowengine.models import compile_models
from flowengine.spec.yamlfile import loads
from flowengine.spec.app import App, load_app

DEMO = Path(__file__).parent / "apps" / "openapi_demo"
ERRORS_REF = {"$ref": "#/components/schemas/Errors"}


@pytest.fixture
def app() -> App:
    return load_app(DEMO)


@pytest.fixture
def client(app: App) -> TestClient:
    return TestClient(build_app(app, Services()))


@pytest.fixture
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return response.json()


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["info"] == {
        "title": "openapi-demo",
        "version": "1.0.0",
        "description": "A small app whose endpoints the OpenAPI, drawing and dev-route tests describe.",
    }


def test_every_endpoint_and_only_endpoints_are_described(document: dict[str, Any]) -> None:
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert operations == {
        ("/contacts", "post"), ("/divide", "get"), ("/greet", "get"), ("/hello/{name}", "get"),
        ("/users/{userId}/phone", "post"),
    }  # fmt: skip
    ids = [item[m]["operationId"] for item in document["paths"].values() for m in item]
    assert sorted(ids) == ["addContact", "divide", "greet1", "greet2", "setPhone"]


def test_an_operation_carries_inputs_responses_and_security(document: dict[str, Any]) -> None:
    operation = document["paths"]["/users/{userId}/phone"]["post"]
    assert operation["summary"] == "Store a user's new phone number."
    assert operation["description"] == "Only the signed-in user may change their number."
    assert operation["parameters"] == [
        {"name": "userId", "in": "path", "required": True, "schema": {"type": "integer"}},
        {"name": "phoneNumber", "in": "query", "required": True, "description": "E.164, e.g. +15551234567",
         "schema": {"type": "string", "description": "E.164, e.g. +15551234567"}},
        {"name": "x-request-id", "in": "header", "required": False, "schema": {"type": "string"}},
    ]  # fmt: skip
    assert operation["requestBody"] == {
        "required": True,
        "content": {"application/json": {"schema": {
            "title": "setPhone.body",
            "type": "object",
            "properties": {"note": {"type": "string"}, "primary": {"type": "boolean"}},
            "additionalProperties": False,
            "required": ["primary"],
        }}},
    }  # fmt: skip
    responses = operation["responses"]
    # 201 and 422 come from the flow's return nodes; 413/415 because it reads a body.
    assert list(responses) == ["201", "400", "401", "404", "413", "415", "422", "500"]
    assert responses["201"]["content"]["application/json"]["schema"] == {}
    for status in ["400", "401", "404", "413", "415", "422", "500"]:
        assert responses[status]["content"]["application/json"]["schema"] == ERRORS_REF
    assert operation["security"] == [{"session": []}]


def test_get_endpoints_have_no_body_and_undeclared_path_params_are_text(document: dict[str, Any]) -> None:
    greet = document["paths"]["/greet"]["get"]
    assert "requestBody" not in greet
    assert list(greet["responses"]) == ["200", "400", "401", "404", "500"]
    assert greet["security"] == [{"session": []}, {}]  # session: optional
    hello = document["paths"]["/hello/{name}"]["get"]
    assert hello["parameters"][0] == {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    assert "security" not in hello


def test_components_hold_the_models_the_errors_shape_and_the_session_scheme(
    app: App, document: dict[str, Any]
) -> None:
    components = document["components"]
    assert list(components["schemas"]) == ["contact", "Errors"]
    assert components["schemas"]["contact"] == app.models["contact"].json_schema()
    assert components["securitySchemes"]["session"] == {
        "type": "apiKey", "in": "header", "name": "Session", "description": "a session token",
    }  # fmt: skip


def test_hidden_fields_are_write_only_and_never_in_a_read(app: App) -> None:
    source = "fields: { email: email, password: encrypted, totpSecret: { type: secret, description: sealed } }"
    models, problems = compile_models([("users", loads(source, "models/users.yaml").data, lambda *_: None)])
    assert problems == []
    document = describe(dataclasses.replace(app, models={**app.models, **models}))
    validate(document)
    written = document["components"]["schemas"]["users"]["properties"]
    assert written["totpSecret"] == {"type": "string", "writeOnly": True, "description": "sealed"}
    assert written["password"]["writeOnly"] is True
    read = models["users"].output_schema()["properties"]
    assert "totpSecret" not in read and "password" not in read and "email" in read


def test_a_body_of_a_model_refers_to_its_schema(document: dict[str, Any]) -> None:
    body = document["paths"]["/contacts"]["post"]["requestBody"]
    schema = {"$ref": "#/components/schemas/contact"}
    assert body == {"required": True, "content": {"application/json": {"schema": schema}}}


def test_an_app_without_models_has_only_the_errors_schema(app: App) -> None:
    flows = {name: flow for name, flow in app.flows.items() if name != "addContact"}
    document = describe(dataclasses.replace(app, models={}, flows=flows))
    validate(document)
    assert list(document["components"]["schemas"]) == ["Errors"]


@pytest.mark.parametrize(
    "method, url, kwargs, status",
    [
        ("post", "/users/7/phone?phoneNumber=%2B15551234567", {"json": {"primary": True}}, 401),
        ("get", "/greet?times=many", {}, 400),
        ("get", "/nowhere", {}, 404),
        ("post", "/contacts", {"json": {"email": "nope"}}, 400),
        ("get", "/divide?by=0", {}, 422),
    ],
)
def test_error_answers_match_the_documented_errors_schema(
    client: TestClient, document: dict[str, Any], method: str, url: str, kwargs: dict, status: int
) -> None:
    response = client.request(method, url, **kwargs)
    assert response.status_code == status
    jsonschema.validate(response.json(), document["components"]["schemas"]["Errors"])


def test_a_body_of_a_list_of_models_is_an_array(app: App) -> None:
    flow = dataclasses.replace(app.flows["addContact"], inputs={"body": {"model": "contact", "list": True}})
    document = describe(dataclasses.replace(app, flows={"addContact": flow}))
    validate(document)
    schema = document["paths"]["/contacts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"type": "array", "items": {"$ref": "#/components/schemas/contact"}}


def test_client_keys_are_required_on_every_endpoint(app: App) -> None:
    keyed = dataclasses.replace(app, settings={**app.settings, "client_keys": ["k1"]})
    document = describe(keyed)
    validate(document)
    paths = document["paths"]
    assert paths["/hello/{name}"]["get"]["security"] == [{"clientKey": []}]
    assert paths["/greet"]["get"]["security"] == [{"session": [], "clientKey": []}, {"clientKey": []}]
    assert paths["/users/{userId}/phone"]["post"]["security"] == [{"session": [], "clientKey": []}]


class StubModel:
    """What the models layer provides to this module: a JSON Schema per model (kept, not rebuilt)."""

    SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"],
    }  # fmt: skip

    def json_schema(self) -> dict[str, Any]:
        return self.SCHEMA


def test_changing_a_document_changes_nothing_else(app: App) -> None:
    first = describe(dataclasses.replace(app, models={**app.models, "user": StubModel()}))
    first["components"]["schemas"]["Errors"]["required"].append("extra")
    first["components"]["schemas"]["user"]["required"].append("extra")
    assert StubModel.SCHEMA["required"] == ["email"]
    assert describe(app)["components"]["schemas"]["Errors"]["required"] == ["errors"]
