"""A compiled flow drawn as a diagram: Mermaid (renders on GitHub and in editors) or Graphviz.

Both drawings show the same graph. A Start node carries the flow's endpoints and declared
inputs and leads to the start node (and, dashed, to ``on_error``). A node's shape says its
kind: one that branches (several outputs) is a diamond, one that ends the run is a
terminal, any other is a rounded box. Edges are labelled with their output names; error
edges are dashed; unwired outputs are left out. Nodes come in the order of the YAML, so the
text is stable from one run to the next and diffs well.
"""

from __future__ import annotations

from flowengine.graph import Flow, Node

#: The Start node's id; flow nodes are prefixed (``_id``), so none can take it.
START = "start"

#: A node's kind (see ``_kind``) → its shape in each notation.
MERMAID_SHAPES = {"start": '[/"{}"/]', "branch": '{{"{}"}}', "terminal": '(["{}"])', "step": '("{}")'}
DOT_SHAPES = {"start": "parallelogram", "branch": "diamond", "terminal": "oval", "step": "box, style=rounded"}


def mermaid(flow: Flow) -> str:
    """The flow as a Mermaid ``flowchart TD``."""
    lines = ["flowchart TD", f"    {START}" + MERMAID_SHAPES["start"].format(_mermaid_text(_start_label(flow)))]
    for node in flow.nodes.values():
        label = _mermaid_text(f"{node.id}\n{node.type.name}")
        lines.append(f"    {_id(node)}" + MERMAID_SHAPES[_kind(node)].format(label))
    for source, target, label, dashed in _edges(flow):
        arrow = "-.->" if dashed else "-->"
        text = f"|{_mermaid_text(label)}|" if label else ""
        lines.append(f"    {source} {arrow}{text} {target}")
    return "\n".join(lines)


def dot(flow: Flow) -> str:
    """The flow as a Graphviz ``digraph`` (``dot -Tsvg``)."""
    lines = [f"digraph {_dot_text(flow.name)} {{", "    rankdir=TB;", '    node [fontname="Helvetica"];']
    lines.append(f"    {START} [label={_dot_text(_start_label(flow))}, shape={DOT_SHAPES['start']}];")
    for node in flow.nodes.values():
        label = _dot_text(f"{node.id}\n{node.type.name}")
        lines.append(f"    {_id(node)} [label={label}, shape={DOT_SHAPES[_kind(node)]}];")
    for source, target, label, dashed in _edges(flow):
        attributes = [f"label={_dot_text(label)}"] if label else []
        if dashed:
            attributes.append("style=dashed")
        suffix = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f"    {source} -> {target}{suffix};")
    lines.append("}")
    return "\n".join(lines)


# --- the graph, independent of the notation ---------------------------------------------


def _id(node: Node) -> str:
    """Prefixed, because Mermaid reads a node called ``end`` or ``subgraph`` as a keyword."""
    return f"n_{node.id}"


def _kind(node: Node) -> str:
    """terminal: ends the run; branch: picks one of several outputs; step: anything else."""
    if node.type.terminal:
        return "terminal"
    if len(node.type.outputs) > 1 or node.type.dynamic_outputs:
        return "branch"
    return "step"


def _start_label(flow: Flow) -> str:
    lines = ["Start"]
    lines += [f"{endpoint.method} {endpoint.path}" for endpoint in flow.endpoints]
    for part, declared in flow.inputs.items():
        if isinstance(declared, dict) and "model" in declared:
            lines.append(f"{part}: {declared['model']}{'[]' if declared.get('list') else ''}")
        elif declared:
            lines.append(f"{part}: {', '.join(declared)}")
    return "\n".join(lines)


def _edges(flow: Flow) -> list[tuple[str, str, str, bool]]:
    """(source, target, label, dashed) for every wired edge, in YAML order."""
    edges = []
    if flow.start is not None:
        edges.append((START, _id(flow.start), "", False))
    if flow.on_error is not None:
        edges.append((START, _id(flow.on_error), "on_error", True))
    for node in flow.nodes.values():
        edges += [(_id(node), _id(target), output, False) for output, target in node.edges.items() if target]
        if node.error is not None:
            edges.append((_id(node), _id(node.error), "error", True))
    return edges


# --- escaping ---------------------------------------------------------------------------

#: Mermaid's entity codes for the characters that would end a label or start markup.
_MERMAID = {'"': "#quot;", "#": "#35;", "&": "#38;", "(": "#40;", ")": "#41;", "<": "#60;", ">": "#62;",
            "[": "#91;", "]": "#93;", "{": "#123;", "|": "#124;", "}": "#125;"}  # fmt: skip
_DOT = {'"': '\\"', "\\": "\\\\"}


def _mermaid_text(text: str) -> str:
    return "<br/>".join(_escape(line, _MERMAID) for line in text.split("\n"))


def _dot_text(text: str) -> str:
    return '"' + "\\n".join(_escape(line, _DOT) for line in text.split("\n")) + '"'


def _escape(text: str, table: dict[str, str]) -> str:
    return "".join(table.get(char, char) for char in text)
