"""Flows drawn as Mermaid and Graphviz: exact text, so a change in the drawing is a visible diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowengine.cli import main
from flowengine.drawing import dot, mermaid
from flowengine.graph import Flow, compile_flow
from flowengine.registry import Registry
from flowengine.spec.yamlfile import loads

DEMO = Path(__file__).parent / "apps" / "openapi_demo"

SET_PHONE = """
service: setPhone
endpoints:
  - {method: POST, path: "/users/{userId}/phone", session: required}
inputs:
  path: {userId: {type: integer}}
  query: {phoneNumber: {type: text, required: true}}
start: checkPhone
on_error: failed
nodes:
  checkPhone:
    type: condition
    if: STARTSWITH(params.query.phoneNumber, '+')
    then: keep
    else: badPhone
    error: failed
  keep:
    type: set
    values: {phone: params.query.phoneNumber}
    next: done
  done:
    type: return-success
    body: keep
  badPhone:
    type: return-error
    message: 'Not a "phone" [number]'
  failed:
    type: return-error
    status: 500
    message: failed
"""


def compiled(text: str, models: dict | None = None) -> Flow:
    flow, problems = compile_flow(loads(text, "flows/test.yaml"), Registry.default(), models or {})
    assert not problems, problems
    assert flow is not None
    return flow


def test_mermaid_draws_shapes_labels_and_edges() -> None:
    assert mermaid(compiled(SET_PHONE)) == "\n".join([
        "flowchart TD",
        '    start[/"Start<br/>POST /users/#123;userId#125;/phone<br/>path: userId<br/>query: phoneNumber"/]',
        '    n_checkPhone{"checkPhone<br/>condition"}',
        '    n_keep("keep<br/>set")',
        '    n_done(["done<br/>return-success"])',
        '    n_badPhone(["badPhone<br/>return-error"])',
        '    n_failed(["failed<br/>return-error"])',
        "    start --> n_checkPhone",
        "    start -.->|on_error| n_failed",
        "    n_checkPhone -->|then| n_keep",
        "    n_checkPhone -->|else| n_badPhone",
        "    n_checkPhone -.->|error| n_failed",
        "    n_keep -->|next| n_done",
    ])  # fmt: skip


def test_dot_draws_the_same_graph() -> None:
    assert dot(compiled(SET_PHONE)) == "\n".join([
        'digraph "setPhone" {',
        "    rankdir=TB;",
        '    node [fontname="Helvetica"];',
        '    start [label="Start\\nPOST /users/{userId}/phone\\npath: userId\\nquery: phoneNumber",'
        " shape=parallelogram];",
        '    n_checkPhone [label="checkPhone\\ncondition", shape=diamond];',
        '    n_keep [label="keep\\nset", shape=box, style=rounded];',
        '    n_done [label="done\\nreturn-success", shape=oval];',
        '    n_badPhone [label="badPhone\\nreturn-error", shape=oval];',
        '    n_failed [label="failed\\nreturn-error", shape=oval];',
        "    start -> n_checkPhone;",
        '    start -> n_failed [label="on_error", style=dashed];',
        '    n_checkPhone -> n_keep [label="then"];',
        '    n_checkPhone -> n_badPhone [label="else"];',
        '    n_checkPhone -> n_failed [label="error", style=dashed];',
        '    n_keep -> n_done [label="next"];',
        "}",
    ])  # fmt: skip


SWITCH = """
service: route
inputs:
  body: {model: user, list: true}
start: end
nodes:
  end:
    type: switch
    cases: {big: "1 > 2", small: "1 < 2"}
    big: subgraph
    default: subgraph
  subgraph:
    type: log
    message: hi
"""


def test_mermaid_prefixes_ids_and_omits_unwired_outputs() -> None:
    # 'end' and 'subgraph' are Mermaid keywords, hence the prefix. Neither 'small' nor
    # 'next' is wired (allowed in a flow without endpoints): no edge. A switch branches,
    # so it is a diamond; a body of a model's list shows as 'model[]'.
    assert mermaid(compiled(SWITCH, {"user": object()})) == "\n".join([
        "flowchart TD",
        '    start[/"Start<br/>body: user#91;#93;"/]',
        '    n_end{"end<br/>switch"}',
        '    n_subgraph("subgraph<br/>log")',
        "    start --> n_end",
        "    n_end -->|default| n_subgraph",
        "    n_end -->|big| n_subgraph",
    ])  # fmt: skip


ODD_PATH = """
service: odd
endpoints:
  - {method: GET, path: '/a/"q" [b] (c) <d> #e & |f|'}
start: done
nodes:
  done: {type: return-success}
"""


def test_mermaid_escapes_label_text() -> None:
    first_lines = mermaid(compiled(ODD_PATH)).splitlines()[:2]
    assert first_lines == [
        "flowchart TD",
        '    start[/"Start<br/>GET /a/#quot;q#quot; #91;b#93; #40;c#41; #60;d#62; #35;e #38; #124;f#124;"/]',
    ]


def test_dot_escapes_quotes() -> None:
    start = 'start [label="Start\\nGET /a/\\"q\\" [b] (c) <d> #e & |f|", shape=parallelogram];'
    assert start in dot(compiled(ODD_PATH))


def test_drawing_is_deterministic() -> None:
    assert mermaid(compiled(SET_PHONE)) == mermaid(compiled(SET_PHONE))


@pytest.mark.parametrize("form, first", [("mermaid", "flowchart TD"), ("dot", 'digraph "setPhone" {')])
def test_cli_graph_prints_the_drawing(capsys: pytest.CaptureFixture[str], form: str, first: str) -> None:
    assert main(["graph", "setPhone", str(DEMO), "--format", form]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == first
    assert "n_checkPhone" in out
