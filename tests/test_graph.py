"""Compiling a flow: node types looked up, params checked and compiled, edges resolved to
node objects, names checked, unreachable nodes found; every problem with file:line."""

from __future__ import annotations

import textwrap
from typing import Any

import jsonschema
import pytest

from flowengine import graph
from flowengine.expressions import Expression, Template
from flowengine.graph import Constant, Structure, compile_flow, compile_value, seconds
from flowengine.registry import Param, Registry, node_type
from flowengine.spec.yamlfile import loads

REGISTRY = Registry.default()


def _compile(text: str, registry: Registry = REGISTRY) -> tuple[graph.Flow | None, list[str]]:
    document = loads(textwrap.dedent(text).lstrip("\n"), "flows/f.yaml")
    flow, problems = compile_flow(document, registry, {})
    return flow, [str(problem) for problem in problems]


def _flow(text: str, registry: Registry = REGISTRY) -> graph.Flow:
    flow, problems = _compile(text, registry)
    assert problems == []
    assert flow is not None
    return flow


BRANCH = """
    service: branch
    description: Says yes or no.
    endpoints:
      - method: POST
        path: /branch
        session: required
    start: check
    on_error: failed
    timeout: 2s
    nodes:
      check:
        type: condition
        if: params.query.ok == 'yes'
        then: note
        else: refuse
        error: failed
      note:
        type: log
        message: "said {{ params.query.ok }}"
        next: agree
        retry: { attempts: 2, backoff: 50ms }
        timeout: 1
      agree:
        type: return-success
        body: { answer: true }
      refuse:
        type: return-error
        message: "no"
      failed:
        type: return-error
        status: 500
        message: broken
"""


# --- edges ------------------------------------------------------------------------------


def test_edges_point_straight_at_node_objects() -> None:
    flow = _flow(BRANCH)
    nodes = flow.nodes

    assert flow.start is nodes["check"]
    assert flow.on_error is nodes["failed"]
    assert nodes["check"].edges == {"then": nodes["note"], "else": nodes["refuse"]}
    assert nodes["check"].error is nodes["failed"]
    assert nodes["note"].edges == {"next": nodes["agree"]}
    assert nodes["agree"].edges == {} and nodes["agree"].type.terminal


def test_the_flow_keeps_its_settings() -> None:
    flow = _flow(BRANCH)

    assert (flow.name, flow.file, flow.description, flow.timeout) == ("branch", "flows/f.yaml", "Says yes or no.", 2.0)
    [endpoint] = flow.endpoints
    assert (endpoint.method, endpoint.path, endpoint.session, str(endpoint.where)) == ("POST", "/branch", "required", "flows/f.yaml:4:5")
    note = flow.nodes["note"]
    assert (note.retry, note.timeout, note.line) == (graph.Retry(2, 0.05, 5.0), 1, 17)


def test_an_edge_to_an_unknown_node_is_reported_with_a_suggestion() -> None:
    _, problems = _compile(BRANCH.replace("next: agree", "next: agre").replace("on_error: failed", "on_error: crash"))

    assert problems == [
        "flows/f.yaml:8:11: 'on_error' goes to unknown node 'crash' (the nodes are: check, note, agree, refuse, failed)",
        "flows/f.yaml:20:11: node 'note': edge 'next' goes to unknown node 'agre' (did you mean 'agree'?)",
    ]


def test_an_unwired_output_is_an_error_only_in_an_endpoint_flow() -> None:
    unwired = BRANCH.replace("        else: refuse\n", "")

    _, problems = _compile(unwired)
    assert problems == [
        "flows/f.yaml:11:3: node 'check': output 'else' is not wired; every path of an endpoint flow must end in a response",
        "flows/f.yaml:25:3: node 'refuse': unreachable: no edge leads to this node",
    ]

    internal = unwired.replace("    endpoints:\n      - method: POST\n        path: /branch\n        session: required\n", "")
    flow, problems = _compile(internal.replace("      refuse:\n", "      unused:\n").replace("    on_error: failed\n", ""))
    assert problems == ["flows/f.yaml:20:3: node 'unused': unreachable: no edge leads to this node"]


# --- reachability -----------------------------------------------------------------------


def test_unreachable_nodes_are_reported() -> None:
    _, problems = _compile("""
        service: s
        start: a
        nodes:
          a: { type: log, message: a, next: b }
          b: { type: return-success }
          lost: { type: log, message: lost, next: alsoLost }
          alsoLost: { type: return-success }
    """)

    assert problems == [
        "flows/f.yaml:6:3: node 'lost': unreachable: no edge leads to this node",
        "flows/f.yaml:7:3: node 'alsoLost': unreachable: no edge leads to this node",
    ]


def test_error_edges_on_error_and_loops_count_as_reachable() -> None:
    _flow("""
        service: s
        start: a
        on_error: fallback
        nodes:
          a: { type: log, message: a, next: b, error: recover }
          b: { type: condition, if: "true", then: a, else: done }
          recover: { type: return-error, message: recovered }
          fallback: { type: return-error, message: failed }
          done: { type: return-success }
    """)


def test_a_dangling_edge_does_not_also_report_its_target_unreachable() -> None:
    _, problems = _compile("""
        service: s
        start: a
        nodes:
          a: { type: log, message: a, next: finnish }
          finish: { type: return-success }
    """)

    assert problems == ["flows/f.yaml:4:37: node 'a': edge 'next' goes to unknown node 'finnish' (did you mean 'finish'?)"]


def test_a_broken_node_does_not_make_its_successors_unreachable() -> None:
    _, problems = _compile("""
        service: s
        start: a
        nodes:
          a: { type: log, message: a, next: b }
          b: { type: teleport, next: c }
          c: { type: return-success }
    """)

    [problem] = problems
    assert problem.startswith("flows/f.yaml:5:8: node 'b': unknown node type 'teleport' (known types: ")


# --- switch: outputs named by its cases --------------------------------------------------

SWITCH = """
    service: sizes
    start: pick
    nodes:
      pick:
        type: switch
        cases:
          small: params.query.n < 10
          large: params.query.n >= 10
        small: smallAnswer
        large: largeAnswer
        default: smallAnswer
      smallAnswer: { type: return-success, body: "'small'" }
      largeAnswer: { type: return-success, body: "'large'" }
"""


def test_switch_cases_become_outputs() -> None:
    flow = _flow(SWITCH)
    nodes = flow.nodes

    assert nodes["pick"].edges == {"default": nodes["smallAnswer"], "small": nodes["smallAnswer"], "large": nodes["largeAnswer"]}


def test_a_switch_key_that_is_no_case_is_reported() -> None:
    _, problems = _compile(SWITCH.replace("    large: largeAnswer", "    larg: largeAnswer"))

    assert problems == ["flows/f.yaml:10:5: node 'pick': unknown key 'larg' (did you mean 'large'?)"]


def test_a_switch_case_without_an_edge_is_unwired_in_an_endpoint_flow() -> None:
    text = SWITCH.replace("        large: largeAnswer\n", "").replace("start: pick", "endpoints: [{method: GET, path: /s}]\n    start: pick")

    _, problems = _compile(text)

    assert problems[0] == (
        "flows/f.yaml:5:3: node 'pick': output 'large' is not wired; every path of an endpoint flow must end in a response"
    )


def test_a_switch_case_may_not_take_a_reserved_key() -> None:
    _, problems = _compile(SWITCH.replace("small: params.query.n < 10", "error: params.query.n < 10"))

    assert "flows/f.yaml:4:3: node 'pick': 'error' cannot name an output" in problems


# --- params -----------------------------------------------------------------------------


def test_params_are_compiled_by_kind() -> None:
    flow = _flow(BRANCH)
    check, note, agree, failed = (dict(flow.nodes[n].params) for n in ("check", "note", "agree", "failed"))

    assert isinstance(check["if"], Expression)
    assert isinstance(note["message"], Template)
    assert note["level"] == Constant("info")  # a default
    assert agree["body"] == Constant({"answer": True})
    assert failed["status"] == Constant(500)


def test_names_in_expressions_are_checked_with_a_suggestion() -> None:
    _, problems = _compile("""
        service: s
        start: a
        nodes:
          a: { type: log, message: "{{ sesion.userId }} {{ b.x }}", next: b }
          b: { type: set, values: { y: "a + unknownThing" }, next: c }
          c: { type: return-success }
    """)

    assert problems == [
        "flows/f.yaml:4:28: node 'a': param 'message': unknown name 'sesion' (did you mean 'session'?)",
        "flows/f.yaml:5:27: node 'b': param 'values': unknown name 'unknownThing'",
    ]


def test_a_params_part_that_does_not_exist_is_reported_once() -> None:
    _, problems = _compile("""
        service: s
        start: a
        nodes:
          a: { type: return-success, body: { x: params.qery.a, y: params.qery.b, z: params.body } }
    """)

    assert problems == [
        "flows/f.yaml:4:36: node 'a': param 'body': 'params.qery' does not exist; params has body, client, headers, path, query"
    ]


@pytest.mark.parametrize("node_id", sorted(graph.RESERVED))
def test_a_reserved_name_cannot_be_a_node_id(node_id: str) -> None:
    _, problems = _compile(f"""
        service: s
        start: '{node_id}'
        nodes:
          '{node_id}': {{ type: return-success }}
    """)

    reserved = ", ".join(sorted(graph.RESERVED))
    assert problems == [f"flows/f.yaml:4:3: node '{node_id}': '{node_id}' is reserved for expressions ({reserved}); pick another node id"]


def test_an_unknown_type_with_nothing_close_lists_the_known_ones() -> None:
    @node_type("echo")
    async def echo(ctx, params):
        return "next", None

    @node_type("finish", outputs=())
    async def finish(ctx, params):
        return None, None

    registry = Registry([echo.__flowengine_node__, finish.__flowengine_node__])

    _, problems = _compile("service: s\nstart: a\nnodes:\n  a: { type: teleport }\n  b: { type: fnish }\n", registry)

    assert problems == [
        "flows/f.yaml:4:8: node 'a': unknown node type 'teleport' (known types: echo, finish)",
        "flows/f.yaml:5:8: node 'b': unknown node type 'fnish' (did you mean 'finish'?)",
    ]


def test_each_node_type_is_validated_with_its_own_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    @node_type("shape", params={"size": Param.literal({"type": "integer"})})
    async def shape(ctx, params):
        return "next", None

    definition = shape.__flowengine_node__
    stale = jsonschema.Draft202012Validator({})
    # As if another NodeType had lived at this id before: its validator must not be reused.
    monkeypatch.setitem(graph._VALIDATORS, id(definition), (object(), stale))

    assert graph._node_validator(definition) is not stale
    assert not graph._node_validator(definition).is_valid({"type": "shape", "size": "big"})


# --- compiled values --------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [5, 2.5, True, None, {"a": 1, "b": [1, 2, {"c": None}]}, [], {}, [[1], [True, False]]],
)
def test_literal_structures_fold_into_one_constant(raw: Any) -> None:
    compiled = compile_value(raw)

    assert compiled == Constant(raw)
    assert compiled.evaluate({}) == raw
    assert compiled.names == frozenset() and not compiled.blocking


def test_a_structure_with_expressions_evaluates_its_leaves() -> None:
    compiled = compile_value({"user": "findUser.name", "tags": ["'a'", 2, "LOWER(params.query.t)"], "fixed": {"k": 1}})

    assert isinstance(compiled, Structure)
    assert compiled.names == {"findUser", "params"}
    assert compiled.parts[2] == Constant({"k": 1})  # the literal branch folded on its own
    scope = {"findUser": {"name": "Ann"}, "params": {"query": {"t": "X"}}}
    assert compiled.evaluate(scope) == {"user": "Ann", "tags": ["a", 2, "x"], "fixed": {"k": 1}}


def test_a_string_is_an_expression() -> None:
    compiled = compile_value("1 + 2")

    assert isinstance(compiled, Expression)
    assert compiled.evaluate({}) == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [("500ms", 0.5), ("2s", 2.0), ("1.5s", 1.5), ("1m", 60.0), (3, 3), (0.25, 0.25), (None, None)],
)
def test_durations_are_seconds(value: Any, expected: float | None) -> None:
    assert seconds(value) == expected
