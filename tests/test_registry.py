"""Node types: declared by a decorator that checks them at import, assembled into a registry
that refuses duplicates, found through entry points and an app's own ``node_modules``."""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import pytest

from flowengine.cli import main
from flowengine.registry import ENTRY_POINT_GROUP, NodeType, Param, Registry, RegistryError, node_type
from flowengine.spec.app import load_app

CUSTOM_NODES = Path(__file__).parent / "apps" / "custom_nodes"
BUILT_INS = {"condition", "switch", "set", "log", "return-success", "return-error"}


def _module(name: str, source: str) -> ModuleType:
    """A module made from source text, so its functions carry ``name`` as their module."""
    module = ModuleType(name)
    exec(textwrap.dedent(source), module.__dict__)
    return module


ECHO = """
    from flowengine.registry import Param, node_type

    @node_type("echo", params={"text": Param.template(required=True)})
    async def echo(ctx, params):
        "Say the text back."
        return "next", params["text"]
"""


# --- the decorator ----------------------------------------------------------------------


def test_the_decorator_attaches_a_checked_definition() -> None:
    @node_type("greet", params={"name": Param.expression(required=True)}, outputs=("next", "missing"))
    async def greet(ctx, params):
        """Greet someone by name."""
        return "next", params["name"]

    definition = greet.__flowengine_node__
    assert isinstance(definition, NodeType)
    assert (definition.name, definition.outputs, definition.module) == ("greet", ("next", "missing"), __name__)
    assert definition.description == "Greet someone by name."
    assert definition.run is greet
    assert not definition.terminal


def test_a_node_type_without_outputs_is_terminal() -> None:
    @node_type("stop", outputs=())
    async def stop(ctx, params):
        return None, None

    assert stop.__flowengine_node__.terminal


def _declare(name: str = "fine", run=None, **options) -> None:
    async def default_run(ctx, params):
        return "next", None

    node_type(name, **options)(run or default_run)


def _sync_run(ctx, params):
    return "next", None


async def _one_arg(ctx):
    return "next", None


async def _three_args(ctx, params, extra):
    return "next", None


WHERE = f"node type 'fine' ({__name__})"


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"run": _sync_run}, f"{WHERE}: run must be 'async def run(ctx, params)'"),
        ({"run": _one_arg}, f"{WHERE}: run must take exactly (ctx, params)"),
        ({"run": _three_args}, f"{WHERE}: run must take exactly (ctx, params)"),
        ({"outputs": ("Next",)}, f"{WHERE}: output 'Next' is not a plain lower-case name"),
        ({"outputs": ("not found",)}, f"{WHERE}: output 'not found' is not a plain lower-case name"),
        ({"outputs": ("for",)}, f"{WHERE}: output 'for' is not a plain lower-case name"),
        ({"outputs": ("next", "error")}, f"{WHERE}: output 'error' clashes with a key every node has"),
        ({"outputs": ("next", "next")}, f"{WHERE}: outputs ('next', 'next') repeat a name"),
        ({"params": {"type": Param.expression()}}, f"{WHERE}: param 'type' clashes with a key or an output"),
        ({"params": {"next": Param.expression()}}, f"{WHERE}: param 'next' clashes with a key or an output"),
        ({"params": {"x": Param("sql")}}, f"{WHERE}: param 'x' has unknown kind 'sql'"),
        ({"dynamic_outputs": "cases"}, f"{WHERE}: dynamic_outputs names no param"),
    ],
)
def test_a_wrong_declaration_fails_at_import(declaration: dict, message: str) -> None:
    with pytest.raises(RegistryError) as raised:
        _declare(**declaration)

    assert str(raised.value) == message


def test_a_param_schema_must_be_a_valid_json_schema() -> None:
    with pytest.raises(RegistryError) as raised:
        _declare(params={"x": Param.literal({"type": "texts"})})

    assert str(raised.value).startswith(f"{WHERE}: param 'x' schema: ")


@pytest.mark.parametrize("name", ["Send-sms", "send_sms", "send sms", "-send", "send-", "send--sms", "9lives", ""])
def test_a_type_name_must_be_kebab_case(name: str) -> None:
    with pytest.raises(RegistryError) as raised:
        _declare(name)

    assert str(raised.value) == f"node type '{name}' ({__name__}): the name must be kebab-case, like 'send-sms'"


def test_else_is_an_output_name_even_though_python_reserves_it() -> None:
    _declare(outputs=("then", "else"))


# --- the registry -----------------------------------------------------------------------


def test_a_module_adds_every_type_it_declares() -> None:
    registry = Registry()
    registry.add_module(_module("echo_nodes", ECHO))

    assert registry.names() == ["echo"]
    assert "echo" in registry
    assert registry.get("echo").module == "echo_nodes"
    assert registry.get("missing") is None


def test_adding_the_same_module_twice_is_harmless() -> None:
    module = _module("echo_nodes", ECHO)
    registry = Registry()
    registry.add_module(module)
    registry.add_module(module)

    assert [t.name for t in registry] == ["echo"]


def test_one_type_name_in_two_modules_is_refused_naming_both() -> None:
    registry = Registry()
    registry.add_module(_module("first_nodes", ECHO))

    with pytest.raises(RegistryError) as raised:
        registry.add_module(_module("second_nodes", ECHO))

    assert str(raised.value) == "node type 'echo' is defined twice: in first_nodes and in second_nodes"
    assert registry.get("echo").module == "first_nodes"


def test_a_module_is_found_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "named_echo_nodes", _module("named_echo_nodes", ECHO))
    registry = Registry()

    registry.add_module("named_echo_nodes")

    assert registry.names() == ["echo"]


def test_submodules_a_package_imports_are_collected() -> None:
    package = ModuleType("family")
    package.echo = _module("family.echo", ECHO)
    package.unrelated = sys  # another package's module is not walked

    registry = Registry()
    registry.add_module(package)

    assert registry.names() == ["echo"]


def test_entry_points_find_the_built_in_library() -> None:
    assert "flowengine_nodes" in {entry.value for entry in entry_points(group=ENTRY_POINT_GROUP)}

    registry = Registry.default()

    assert BUILT_INS <= set(registry.names())
    assert registry.get("condition").module == "flowengine_nodes.flow"
    assert registry.get("return-error").module == "flowengine_nodes.responses"


def test_default_adds_extra_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "extra_echo_nodes", _module("extra_echo_nodes", ECHO))

    registry = Registry.default(extra_modules=["extra_echo_nodes"])

    assert "echo" in registry
    assert BUILT_INS <= set(registry.names())


def test_a_module_redefining_a_built_in_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    source = ECHO.replace('"echo"', '"log"')
    monkeypatch.setitem(sys.modules, "my_log_nodes", _module("my_log_nodes", source))

    with pytest.raises(RegistryError) as raised:
        Registry.default(extra_modules=["my_log_nodes"])

    assert str(raised.value) == "node type 'log' is defined twice: in flowengine_nodes.flow and in my_log_nodes"


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("conditon", "condition"), ("return-sucess", "return-success"), ("logg", "log"), ("swich", "switch"), ("teleport", None)],
)
def test_suggest_offers_the_closest_name(typo: str, suggestion: str | None) -> None:
    assert Registry.default().suggest(typo) == suggestion


# --- the schema a node type publishes ---------------------------------------------------


def test_a_node_schema_lists_params_outputs_and_common_keys() -> None:
    schema = Registry.default().get("return-error").yaml_schema()

    assert schema["required"] == ["type", "message"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["status"] == {"type": "integer", "minimum": 400, "maximum": 599}
    assert {"type", "description", "error", "retry", "timeout", "code", "details"} <= set(schema["properties"])


def test_dynamic_outputs_come_from_a_param() -> None:
    switch = Registry.default().get("switch")

    assert switch.outputs_of({"cases": {"small": "x < 1", "large": "x >= 1"}}) == ("default", "small", "large")
    assert switch.outputs_of({"cases": "not a mapping"}) == ("default",)
    assert switch.yaml_schema()["additionalProperties"] == {"type": "string"}


# --- an app's own node module -----------------------------------------------------------


def test_an_app_node_module_is_loaded_from_the_app_folder() -> None:
    app = load_app(CUSTOM_NODES, environ={})

    shout = app.registry.get("shout")
    assert (shout.module, shout.description) == ("shout", "Upper-case a text; the node's result is the loud text.")
    assert BUILT_INS <= set(app.registry.names())
    assert app.flows["yell"].start.type is shout


def test_an_app_node_module_passes_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(CUSTOM_NODES)]) == 0
    assert capsys.readouterr().out == "ok: 1 flows, 1 endpoints, 0 models\n"


def test_an_app_node_runs_through_flowengine_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(CUSTOM_NODES)

    code = main(["run", "yell", "--query", "text=hi"])

    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith('status: 200\n{\n  "text": "HI"\n}\n')
    assert [line.split()[:3] for line in out.splitlines()[-2:]] == [["loud", "shout", "next"], ["answer", "return-success", "(end)"]]
