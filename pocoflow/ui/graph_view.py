"""The Graph tab: the flow a run ran, drawn with its nodes marked.

Drawn with Graphviz (``st.graphviz_chart``: Streamlit renders DOT in the browser
with its own bundled renderer, so it works with no network), from the same graph
description ``mermaid_from_graph`` draws; the Mermaid text is one click away.
The description comes from the database, so it is checked first
(``mermaid_from_graph`` raises ValueError on a malformed one), every label is
written as a quoted DOT string with its quotes and backslashes escaped (a DOT
string is text, never HTML), and node ids in the DOT are generated. A run
pocoflow 0.2 recorded has no graph: the path it took is drawn from its events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pocoflow.visualize import MARK_STYLES, FlowVisualizer, mermaid_from_graph

Path = tuple[str, ...]

#: run status -> the mark of the node it stands at
STATUS_MARK = {
    "running": "current",
    "failed": "failed",
    "paused": "paused",
    "cancelled": "cancelled",
    "interrupted": "interrupted",
    "queued": "current",
}
LABEL_CHARS = 60


def dot_text(text: str) -> str:
    """*text* inside a DOT double-quoted string: shown as it is, on one line."""
    text = "".join(c if c.isprintable() else " " for c in str(text))
    if len(text) > LABEL_CHARS:
        text = text[: LABEL_CHARS - 1] + "…"
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _attributes(style: str) -> dict[str, str]:
    """DOT attributes of a Mermaid style of :data:`MARK_STYLES`."""
    parts = dict(p.split(":", 1) for p in style.split(",") if ":" in p)
    out = {"fillcolor": parts.get("fill", "#f0f0f0"), "color": parts.get("stroke", "#424242")}
    if "stroke-width" in parts:
        out["penwidth"] = parts["stroke-width"].removesuffix("px")
    out["style"] = "rounded,filled" + (",dashed" if "stroke-dasharray" in parts else "")
    return out


def _attr_list(attrs: Mapping[str, str]) -> str:
    return ", ".join(f'{name}="{dot_text(value)}"' for name, value in attrs.items())


class _Dot:
    def __init__(self, marks: Mapping[Path, str]) -> None:
        self.marks = marks
        self.lines: list[str] = []
        self.count = 0

    def new_id(self) -> str:
        self.count += 1
        return f"n{self.count}"

    def flow(self, description: Mapping[str, Any], path: Path, indent: str) -> str:
        """Draw one flow's nodes and edges; return the id of its start circle."""
        entry = self.new_id()
        self.lines.append(
            f'{indent}{entry} [label="start", shape=circle, style=filled, '
            'fillcolor="#424242", fontcolor="#ffffff", fontsize=9];'
        )
        ids: dict[str, tuple[str, str | None]] = {}  # node id -> (dot id, cluster or None)
        for node in description["nodes"]:
            node_path = (*path, node["id"])
            mark = self.marks.get(node_path)
            nested = node.get("nested")
            if nested is not None:
                cluster = f"cluster_{self.new_id()}"
                attrs = (
                    _attributes(MARK_STYLES[mark])
                    if mark
                    else {
                        "style": "rounded,filled",
                        "fillcolor": FlowVisualizer.NODE_COLORS["Flow"],
                        "color": "#9e9e9e",
                    }
                )
                self.lines.append(f"{indent}subgraph {cluster} {{")
                self.lines.append(
                    f'{indent}    label="{dot_text(node["name"])}"; '
                    f"{'; '.join(_attr_list({k: v}) for k, v in attrs.items())};"
                )
                inner = self.flow(nested, node_path, indent + "    ")
                self.lines.append(f"{indent}}}")
                ids[node["id"]] = (inner, cluster)
            else:
                dot_id = self.new_id()
                attrs = (
                    _attributes(MARK_STYLES[mark])
                    if mark
                    else {
                        "fillcolor": FlowVisualizer.NODE_COLORS.get(
                            str(node.get("type")), "#f0f0f0"
                        )
                    }
                )
                self.lines.append(
                    f'{indent}{dot_id} [label="{dot_text(node["name"])}", {_attr_list(attrs)}];'
                )
                ids[node["id"]] = (dot_id, None)
        start, start_cluster = ids[description["start"]]
        self.lines.append(
            f"{indent}{entry} -> {start}{f' [lhead={start_cluster}]' if start_cluster else ''};"
        )
        for edge in description["edges"]:
            (source, tail), (target, head) = ids[edge["from"]], ids[edge["to"]]
            attrs = []
            if edge["action"] != "default":
                attrs.append(f'label="{dot_text(edge["action"])}"')
            if tail:
                attrs.append(f"ltail={tail}")
            if head:
                attrs.append(f"lhead={head}")
            self.lines.append(
                f"{indent}{source} -> {target}{f' [{chr(44).join(attrs)}]' if attrs else ''};"
            )
        return entry


def dot_from_graph(
    description: Mapping[str, Any],
    marks: Mapping[Path, str] | None = None,
) -> str:
    """Graphviz DOT of a graph description; ValueError if it is malformed."""
    mermaid_from_graph(description)  # checks it, with messages that say where it is wrong
    drawing = _Dot(dict(marks or {}))
    lines = [
        "digraph flow {",
        '    graph [rankdir=TB, compound=true, bgcolor="transparent", fontsize=11];',
        '    node [shape=box, style="rounded,filled", fontsize=11, fillcolor="#f0f0f0"];',
        "    edge [fontsize=10];",
    ]
    drawing.flow(description, (), "    ")
    return "\n".join([*lines, *drawing.lines, "}"])


# ── marks: where the run stands ────────────────────────────────────────────


def _node(description: Mapping[str, Any], path: Path) -> Mapping[str, Any] | None:
    level: Mapping[str, Any] | None = description
    found = None
    for node_id in path:
        if level is None:
            return None
        found = next((n for n in level["nodes"] if n["id"] == node_id), None)
        if found is None:
            return None
        level = found.get("nested")
    return found


def run_marks(
    description: Mapping[str, Any],
    run: Mapping[str, Any],
    steps: list[dict[str, Any]],
    children: list[dict[str, Any]] | None = None,
    steps_of: Callable[[str], list[dict[str, Any]]] | None = None,
) -> dict[Path, str]:
    """Nodes the run finished (``completed``) and the node it stands at (``current``,
    ``failed``, ``paused``, ``cancelled``, ``interrupted``). Node ids come from the
    checkpoints (each names the node after it) or, for a name used once, from the name.
    Inside a nested flow, the marks of its newest run (*children*, newest first, with
    *steps_of* to read their checkpoints)."""
    marks: dict[Path, str] = {}
    by_name: dict[str, list[str]] = {}
    for node in description["nodes"]:
        by_name.setdefault(node["name"], []).append(node["id"])
    for index, step in enumerate(steps):
        ids = by_name.get(step["node_name"], [])
        node_id = None
        if len(ids) == 1:
            node_id = ids[0]
        elif index > 0 and steps[index - 1]["step"] == step["step"] - 1:
            node_id = steps[index - 1].get("next_node")
        elif step["step"] == 0:
            node_id = description["start"]
        if node_id:
            marks[(node_id,)] = "completed"
    state = STATUS_MARK.get(str(run.get("status")))
    at = run.get("next_node")
    if state and at and _node(description, (at,)) is not None:
        marks[(at,)] = state
    for node in description["nodes"]:
        child = next((c for c in children or () if c.get("flow_name") == node["name"]), None)
        if node.get("nested") and child is not None and steps_of is not None:
            inner = run_marks(node["nested"], child, steps_of(child["run_id"]))
            marks.update({(node["id"], *path): s for path, s in inner.items()})
    return {path: s for path, s in marks.items() if _node(description, path) is not None}


def graph_from_events(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The path a run took, as a graph description (for runs recorded without a graph):
    one box per node name, one edge per action taken from one node to the next."""
    order: list[str] = []
    edges: dict[tuple[str, str, str], None] = {}
    previous: tuple[str, str] | None = None  # (node, action) of the last node_end
    for event in events:
        name = event.get("node_name")
        if not name:
            continue
        if event["event"] == "node_start":
            if name not in order:
                order.append(name)
            if previous is not None:
                edges[(previous[0], name, previous[1] or "default")] = None
            previous = None
        elif event["event"] == "node_end":
            previous = (name, event.get("action") or "default")
    if not order:
        return None
    return {
        "start": order[0],
        "nodes": [{"id": n, "name": n, "type": "Node"} for n in order],
        "edges": [{"from": a, "to": b, "action": action} for a, b, action in edges],
    }


# ── view ────────────────────────────────────────────────────────────────────


def render_graph(
    description: dict[str, Any] | None, marks: dict[Path, str], from_events: bool
) -> None:
    import streamlit as st

    if description is None:
        st.info("No graph was recorded for this run, and no node ran.")
        return
    try:
        dot = dot_from_graph(description, marks)
        mermaid = mermaid_from_graph(description, marks=marks)
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        st.text(f"The recorded graph cannot be drawn: {exc}")
        return
    if from_events:
        st.caption(
            "No graph was recorded (pocoflow 0.2): this is the path the run took, "
            "drawn from its events."
        )
    st.graphviz_chart(dot)
    st.caption(
        "Marks: green finished · yellow current · red failed · orange paused · "
        "grey cancelled · purple interrupted"
    )
    with st.expander("Mermaid and DOT text"):
        st.code(mermaid, language=None)
        st.code(dot, language=None)
