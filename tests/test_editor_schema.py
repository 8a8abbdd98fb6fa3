"""``editor_schema``: the JSON Schemas ``flowengine schema`` prints for editors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from flowengine.cli import main
from flowengine.spec.schema import editor_schema, schema

DEMO = Path(__file__).parent / "apps" / "openapi_demo"

FLOW = """
service: greet
start: check
nodes:
  check:
    type: condition
    if: EXISTS(params.query.name)
    then: hello
    else: sorry
  hello:
    type: return-success
    status: 201
    body: {greeting: "'Hello'"}
  sorry:
    type: return-error
    status: 404
    message: nobody
"""


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    flow_schema = editor_schema("flow")
    jsonschema.Draft202012Validator.check_schema(flow_schema)
    return jsonschema.Draft202012Validator(flow_schema)


def test_a_correct_flow_is_valid(validator: jsonschema.Draft202012Validator) -> None:
    assert list(validator.iter_errors(yaml.safe_load(FLOW))) == []


@pytest.mark.parametrize("path", sorted((DEMO / "flows").glob("*.yaml")), ids=lambda p: p.name)
def test_the_demo_flows_are_valid(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == []


def errors_of(validator: jsonschema.Draft202012Validator, node: dict[str, Any]) -> list[str]:
    flow = yaml.safe_load(FLOW)
    flow["nodes"]["check"] = node
    return [error.message for error in validator.iter_errors(flow)]


def test_a_node_with_an_unknown_param_is_rejected(validator: jsonschema.Draft202012Validator) -> None:
    node = {"type": "condition", "if": "true", "then": "hello", "else": "sorry", "iff": "true"}
    assert errors_of(validator, node) == ["Additional properties are not allowed ('iff' was unexpected)"]


def test_a_param_of_the_wrong_type_is_rejected(validator: jsonschema.Draft202012Validator) -> None:
    node = {"type": "return-success", "status": 500}
    assert errors_of(validator, node) == ["500 is greater than the maximum of 299"]


def test_a_missing_required_param_is_rejected(validator: jsonschema.Draft202012Validator) -> None:
    assert errors_of(validator, {"type": "condition", "then": "hello"}) == ["'if' is a required property"]


def test_an_unknown_node_type_is_rejected(validator: jsonschema.Draft202012Validator) -> None:
    (message,) = errors_of(validator, {"type": "conditon", "if": "true"})
    assert message.startswith("'conditon' is not one of [")
    assert "'condition'" in message


def test_every_installed_node_type_has_a_branch() -> None:
    nodes = editor_schema("flow")["properties"]["nodes"]["additionalProperties"]
    names = nodes["properties"]["type"]["enum"]
    assert {"condition", "switch", "set", "log", "return-success", "return-error"} <= set(names)
    assert [branch["if"]["properties"]["type"]["const"] for branch in nodes["allOf"]] == names
    condition = nodes["allOf"][names.index("condition")]["then"]
    assert condition["properties"]["if"]["description"] == "true takes 'then', false takes 'else'"


def test_the_published_flow_schema_is_left_as_it_is() -> None:
    editor_schema("flow")["properties"]["nodes"]["additionalProperties"] = None
    assert schema("flow")["properties"]["nodes"]["additionalProperties"]["required"] == ["type"]


def test_app_is_the_published_schema() -> None:
    assert editor_schema("app") == schema("app")


def test_model_is_the_published_schema() -> None:
    try:
        published = schema("model")
    except FileNotFoundError:
        pytest.skip("model.schema.json is not published yet")
    assert editor_schema("model") == published


def test_an_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no schema named 'flows'; choose one of app, model, flow"):
        editor_schema("flows")


def test_cli_schema_prints_the_editor_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "flow"]) == 0
    assert json.loads(capsys.readouterr().out) == editor_schema("flow")
