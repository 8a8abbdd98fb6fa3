"""``editor_schema``: the JSON Schemas ``flowengine schema`` prints for editors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def test_the_published_app_schema_is_left_as_it_is() -> None:
    editor_schema("app")
    cost = schema("app")["properties"]["auth"]["properties"]["password"]["properties"]["bcrypt_cost"]
    assert (cost["type"], "pattern" in cost) == ("integer", False)  # check converts; it takes no text here


def test_model_is_the_published_schema() -> None:
    try:
        published = schema("model")
    except FileNotFoundError:
        pytest.skip("model.schema.json is not published yet")
    assert editor_schema("model") == published


def test_an_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no schema named 'flows'; choose one of app, model, flow"):
        editor_schema("flows")


def test_cli_schema_prints_the_editor_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no app.yaml here: installed node types only
    assert main(["schema", "flow"]) == 0
    assert json.loads(capsys.readouterr().out) == editor_schema("flow")


# --- an app's own node types (app.yaml's node_modules) ----------------------------------

SHOUT = """\
from flowengine.registry import Param, node_type


@node_type(
    "shout",
    params={"text": Param.template(required=True), "times": Param.literal({"type": "integer", "minimum": 1})},
    outputs=("next",),
)
async def shout(ctx, params):
    return "next", params["text"].upper() * params.get("times", 1)
"""

LOUD = """
service: loud
start: yell
nodes:
  yell:
    type: shout
    text: "{{ params.query.name }}"
    times: 2
    next: done
  done:
    type: return-success
    body: {said: yell}
"""


@pytest.fixture
def shout_app(tmp_path: Path) -> Path:
    """An app folder with its own node type, ``shout``, in ``shout.py``."""
    (tmp_path / "app.yaml").write_text("name: shouting\nnode_modules: [shout]\n")
    (tmp_path / "shout.py").write_text(SHOUT)
    return tmp_path


def printed_validator(argv: list[str], capsys: pytest.CaptureFixture[str]) -> jsonschema.Draft202012Validator:
    """The validator of the schema ``flowengine <argv>`` prints."""
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(printed)
    return jsonschema.Draft202012Validator(printed)


def messages(validator: jsonschema.Draft202012Validator, flow: dict[str, Any]) -> list[str]:
    return sorted(error.message for error in validator.iter_errors(flow))


def test_the_flow_schema_of_an_app_knows_its_own_node_types(shout_app: Path, capsys: pytest.CaptureFixture[str]) -> None:
    validator = printed_validator(["schema", "flow", str(shout_app)], capsys)
    flow = yaml.safe_load(LOUD)
    assert messages(validator, flow) == []

    flow["nodes"]["yell"]["times"] = 0
    flow["nodes"]["yell"]["txt"] = "hi"
    assert messages(validator, flow) == [
        "0 is less than the minimum of 1",
        "Additional properties are not allowed ('txt' was unexpected)",
    ]
    del flow["nodes"]["yell"]["text"]
    assert "'text' is a required property" in messages(validator, flow)


def test_the_flow_schema_of_an_app_still_knows_the_installed_types(shout_app: Path, capsys: pytest.CaptureFixture[str]) -> None:
    validator = printed_validator(["schema", "flow", str(shout_app)], capsys)
    assert messages(validator, yaml.safe_load(FLOW)) == []


def test_without_an_app_its_node_types_are_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    validator = printed_validator(["schema", "flow"], capsys)
    (message,) = messages(validator, yaml.safe_load(LOUD))
    assert message.startswith("'shout' is not one of [")


def test_the_flow_schema_defaults_to_the_app_in_the_current_folder(
    shout_app: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(shout_app)
    validator = printed_validator(["schema", "flow"], capsys)
    assert messages(validator, yaml.safe_load(LOUD)) == []


def test_a_broken_flow_does_not_stop_the_schema(shout_app: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (shout_app / "flows").mkdir()
    (shout_app / "flows" / "loud.yaml").write_text(LOUD.replace("next: done", "next: nowhere"))
    validator = printed_validator(["schema", "flow", str(shout_app)], capsys)
    assert messages(validator, yaml.safe_load(LOUD)) == []


def test_a_broken_app_yaml_is_reported_as_check_reports_it(shout_app: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (shout_app / "app.yaml").write_text("name: shouting\nnode_modules: [shout, whisper]\nflavour: mint\n")

    assert main(["schema", "flow", str(shout_app)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "app.yaml:2:23: node module 'whisper' not found; put whisper.py in the app folder or install the package that has it",
        "app.yaml:3:1: unknown key 'flavour'",
        "Error: 2 problems found",
    ]
    assert main(["check", str(shout_app)]) == 1
    assert capsys.readouterr().err == err


def test_an_app_dir_without_app_yaml_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "flow", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "app.yaml: not found; an app folder needs an app.yaml (at least 'name: my-app')",
        "Error: 1 problem found",
    ]


def test_a_missing_app_dir_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "flow", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err == f"Error: {tmp_path / 'nowhere'} is not a folder\n"


@pytest.mark.parametrize("name", ["app", "model", "test"])
def test_the_other_schemas_take_an_app_dir_and_ignore_its_node_types(
    name: str, shout_app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema", name, str(shout_app)]) == 0
    with_app = capsys.readouterr().out
    assert main(["schema", name]) == 0
    assert capsys.readouterr().out == with_app


def test_the_console_script_prints_the_apps_flow_schema(shout_app: Path) -> None:
    script = Path(sys.executable).with_name("flowengine")
    done = subprocess.run([str(script), "schema", "flow"], cwd=shout_app, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    names = json.loads(done.stdout)["properties"]["nodes"]["additionalProperties"]["properties"]["type"]["enum"]
    assert "shout" in names and "condition" in names


def test_the_readme_snippet_saves_the_apps_schemas(shout_app: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Editor support") :]
    snippet = section[section.index("```sh\n") + 6 : section.index("```", section.index("```sh\n") + 6)]
    environ = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(["sh", "-ec", snippet], cwd=shout_app, env=environ, check=True, timeout=120)
    saved = {path.name for path in (shout_app / ".schemas").iterdir()}
    assert saved == {f"{kind}.schema.json" for kind in ("app", "model", "flow", "test")}
    flow_schema = json.loads((shout_app / ".schemas" / "flow.schema.json").read_text())
    assert list(jsonschema.Draft202012Validator(flow_schema).iter_errors(yaml.safe_load(LOUD))) == []


# --- app.yaml: a whole ${VAR} where a setting is typed ------------------------------------

TYPED_BY_REFERENCES = {
    "name": "typed",
    "auth": {"password": {"bcrypt_cost": "${BCRYPT_COST:-12}"}},
    "sms": {"limits": {"per_hour": "${X}"}},
    "cors": {"credentials": "${C}"},
    "limits": {"timeout": "${TIMEOUT:-}"},  # a duration: a number, or text like 2s
}


@pytest.fixture
def app_validator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> jsonschema.Draft202012Validator:
    monkeypatch.chdir(tmp_path)
    return printed_validator(["schema", "app"], capsys)


def test_the_app_schema_takes_a_whole_reference_where_a_setting_is_typed(
    app_validator: jsonschema.Draft202012Validator,
) -> None:
    assert messages(app_validator, TYPED_BY_REFERENCES) == []
    assert messages(app_validator, {**TYPED_BY_REFERENCES, "auth": {"password": {"bcrypt_cost": 12}}}) == []


@pytest.mark.parametrize(
    "value",
    ["twelve", "${A}${B}", "12${A}", "${A", "$A", "${1X}", "${A:-1}2}", "${A:-1\n}"],
)
def test_the_app_schema_still_refuses_text_that_is_no_whole_reference(
    app_validator: jsonschema.Draft202012Validator, value: str
) -> None:
    app = {"name": "typed", "auth": {"password": {"bcrypt_cost": value}}}
    (message,) = messages(app_validator, app)
    assert message.startswith(f"{value!r} does not match ")


def test_the_app_schema_still_checks_a_typed_value(app_validator: jsonschema.Draft202012Validator) -> None:
    assert messages(app_validator, {"name": "typed", "auth": {"password": {"bcrypt_cost": 3}}}) == [
        "3 is less than the minimum of 10"
    ]
