"""Mermaid flowcharts of a flow's graph, drawn from its description.

There is one renderer, :func:`mermaid_from_graph`, and it works on the graph
description of :func:`pocoflow.graph.describe` (also stored with every
recorded run as ``graph_json``), so the monitor can draw a run without the
Flow object. ``FlowVisualizer.build_mermaid(flow)`` and ``visualize_flow`` are
``describe`` + render, with pocoflow 0.2.1's signatures.

How a graph is drawn:

- One box per node, labelled with its name; boxes are keyed by the node ids
  of :mod:`pocoflow.graph`, so a node reached by two edges is one box and two
  nodes that share a name are two. Cycles and self-loops are drawn as edges
  back (0.2.1 copied a node per edge and cut cycles at ``max_depth``).
- Edges carry their action; the ``"default"`` action is left unlabelled,
  because it is what a plain ``post`` returns and labelling every arrow of a
  pipeline with it is noise; ``"*"`` (any other action) is shown as ``*``.
- Each flow, the top one and every nested one, has a small ``start`` circle
  with an arrow to its start node, so the start is visible even when it is a
  nested flow (a subgraph has no shape of its own to mark).
- A nested flow is a ``subgraph`` holding its own nodes and edges. Edges of
  the outer flow go to and from the subgraph itself, not to the inner start
  node: to the outer flow the nested flow is one step, and it routes on the
  flow's last action, whichever inner node ended it. The same flow object
  nested at two places is drawn at both, with its own boxes each time.
- Mermaid ids are generated (``n0``, ``n1``...); no user text becomes an id,
  a class name or a style. Every label is quoted, and every character that
  could end the quote or mean something to Mermaid or HTML (quotes, brackets,
  pipes, ``<``, ``>``, ``&``, ``#``, ``;``, ``%``, backticks...) is written as
  a Mermaid entity code (``#34;``); whitespace (newlines included) becomes a
  space; invisible characters (controls, bidi overrides, zero-width, lone
  surrogates) and the two characters of Mermaid's entity placeholders (``ﬂ``,
  ``¶``) are shown as ``\\uXXXX``. Other unicode stays as it is.

The description is validated before anything is drawn: a malformed one (it
may come from a database) raises ValueError saying where it is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from pocoflow.graph import describe, node_ids, walk
from pocoflow.node import DEFAULT_ACTION, Wired

__all__ = ["MARK_STYLES", "FlowVisualizer", "mermaid_from_graph", "visualize_flow"]

DIRECTIONS = ("TD", "TB", "BT", "LR", "RL")

#: node state -> Mermaid style of the ``classDef`` the state's nodes get
MARK_STYLES: Mapping[str, str] = MappingProxyType(
    {
        "current": "fill:#fff59d,stroke:#f57f17,stroke-width:3px",
        "completed": "fill:#c8e6c9,stroke:#2e7d32",
        "failed": "fill:#ffcdd2,stroke:#c62828,stroke-width:3px",
        "paused": "fill:#ffe0b2,stroke:#ef6c00,stroke-dasharray:5 5",
        "cancelled": "fill:#e0e0e0,stroke:#616161,stroke-dasharray:5 5",
        "interrupted": "fill:#d1c4e9,stroke:#4527a0,stroke-dasharray:5 5",
    }
)

_START_STYLE = "fill:#424242,stroke:#424242,color:#ffffff"
_DEFAULT_FILL = "#f0f0f0"
_FLOW_TYPE = "Flow"
_MAX_NESTING = 100  # deeper descriptions are refused rather than overflow the stack
_COLOR = re.compile(r"#[0-9A-Fa-f]{3,8}|[A-Za-z]{3,20}")
# Characters written as they are inside a quoted label; the rest of ASCII becomes
# an entity code, ":" included (Mermaid drops the last ";" of any line matching
# ``style.*:\S*#.*;``, which would garble an entity). The two characters that
# open and close Mermaid's own entity placeholders ("ﬂ°°60¶ß" is decoded to "<",
# even in text that came from entity codes) are shown as \uXXXX.
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 _-.,!?/+=@'*()")
_SHOWN_ESCAPED = frozenset("\ufb02\u00b6")

Path = tuple[str, ...]


class FlowVisualizer:
    """Generate Mermaid flowchart diagrams from a PocoFlow Flow."""

    #: node type name -> fill colour (nested flows use the "Flow" colour)
    NODE_COLORS: ClassVar[dict[str, str]] = {
        "Node": "#e1f5fe",
        "AsyncNode": "#f3e5f5",
        "Flow": "#fff3e0",
    }

    def build_mermaid(
        self,
        flow: Any,
        *,
        include_stats: bool = False,
        max_depth: int = 10,
        direction: str = "TD",
        marks: Mapping[str | Path, str] | None = None,
    ) -> str:
        """Return a Mermaid ``flowchart TD`` string for *flow*.

        *flow* is a :class:`pocoflow.Flow` (or any object whose ``start`` or
        ``start_node`` is the first node). With *include_stats*, nodes that
        have a ``get_stats()`` show its ``"calls"`` count. Nested flows are
        drawn as subgraphs down to *max_depth* levels; deeper ones are single
        boxes (cycles are always drawn whole: 0.2.1 used *max_depth* to stop
        walking them). *direction* and *marks*: see :func:`mermaid_from_graph`.
        """
        start = getattr(flow, "start", None)
        if not isinstance(start, Wired):
            start = getattr(flow, "start_node", None)
            if not isinstance(start, Wired):
                _check_direction(direction)
                return f'flowchart {direction}\n    n0["No start node found"]'
            flow = _Started(start)
        description = describe(flow)
        notes = _stats(start) if include_stats else {}
        return _render(
            description,
            direction=direction,
            marks=marks,
            max_depth=max_depth,
            colors=self.NODE_COLORS,
            notes=notes,
        )


def visualize_flow(flow: Any, **kwargs: Any) -> str:
    """Generate a Mermaid diagram string for a PocoFlow Flow.

    Same as ``FlowVisualizer().build_mermaid(flow, **kwargs)``.
    """
    return FlowVisualizer().build_mermaid(flow, **kwargs)


def mermaid_from_graph(
    description: Mapping[str, Any],
    *,
    direction: str = "TD",
    marks: Mapping[str | Path, str] | None = None,
    max_depth: int | None = None,
) -> str:
    """Mermaid flowchart text for a graph description (``pocoflow.graph.describe``).

    *description* may come from ``json.loads(graph_json)``; it is checked
    first, and a malformed one raises ValueError. *direction* is one of
    ``TD``, ``TB``, ``BT``, ``LR``, ``RL``. *marks* maps a node id to a state
    in :data:`MARK_STYLES` ("current", "completed", "failed", "paused",
    "cancelled", "interrupted"); a node inside a nested flow is named by its
    path of ids, e.g. ``("Publish", "Upload")``, and marking a nested flow's
    own id styles its subgraph. *max_depth* (None: no limit) draws nested
    flows deeper than that as single boxes.
    """
    return _render(
        description,
        direction=direction,
        marks=marks,
        max_depth=max_depth,
        colors=FlowVisualizer.NODE_COLORS,
        notes={},
    )


# ── rendering ───────────────────────────────────────────────────────────────


def _render(
    description: Any,
    *,
    direction: str,
    marks: Mapping[Any, str] | None,
    max_depth: int | None,
    colors: Mapping[str, str],
    notes: Mapping[Path, str],
) -> str:
    _check_direction(direction)
    if max_depth is not None and (
        not isinstance(max_depth, int) or isinstance(max_depth, bool) or max_depth < 0
    ):
        raise ValueError(f"max_depth must be None or an int >= 0, got {max_depth!r}.")
    for type_name, color in colors.items():
        if not isinstance(color, str) or not _COLOR.fullmatch(color):
            raise ValueError(
                f"NODE_COLORS[{type_name!r}] must be a colour like '#e1f5fe' or "
                f"'orange', got {color!r}."
            )
    _check_description(description, "graph description", 0)
    checked_marks = _check_marks(marks, description)
    drawing = _Drawing(colors, notes, max_depth)
    drawing.flow(description, (), 1)
    return "\n".join([f"flowchart {direction}", *drawing.lines, *drawing.styles(checked_marks)])


class _Drawing:
    """The lines of one diagram, and the Mermaid id given to every node path."""

    def __init__(
        self, colors: Mapping[str, str], notes: Mapping[Path, str], max_depth: int | None
    ) -> None:
        self.colors = colors
        self.notes = notes
        self.max_depth = max_depth
        self.lines: list[str] = []
        self.ids: dict[Path, str] = {}
        self.entries: list[str] = []
        self.fills: list[tuple[str, str]] = []  # (mermaid id, fill)
        self.count = 0

    def new_id(self) -> str:
        self.count += 1
        return f"n{self.count - 1}"

    def flow(self, description: Mapping[str, Any], path: Path, depth: int) -> None:
        indent = "    " * depth
        entry = self.new_id()
        self.entries.append(entry)
        self.lines.append(f'{indent}{entry}(("start"))')
        for node in description["nodes"]:
            node_path = (*path, node["id"])
            mermaid_id = self.ids[node_path] = self.new_id()
            label = _text(node["name"]) + self.note(node_path)
            nested = node.get("nested")
            if nested is not None and (self.max_depth is None or depth <= self.max_depth):
                self.lines.append(f'{indent}subgraph {mermaid_id} ["{label}"]')
                self.flow(nested, node_path, depth + 1)
                self.lines.append(f"{indent}end")
                self.fills.append((mermaid_id, self.colors.get(_FLOW_TYPE, _DEFAULT_FILL)))
            else:
                self.lines.append(f'{indent}{mermaid_id}["{label}"]')
                kind = _FLOW_TYPE if nested is not None else node.get("type")
                self.fills.append((mermaid_id, self.colors.get(kind, _DEFAULT_FILL)))
        self.lines.append(f"{indent}{entry} --> {self.ids[(*path, description['start'])]}")
        for edge in description["edges"]:
            source = self.ids[(*path, edge["from"])]
            target = self.ids[(*path, edge["to"])]
            action = edge["action"]
            arrow = "-->" if action == DEFAULT_ACTION else f'-->|"{_text(action)}"|'
            self.lines.append(f"{indent}{source} {arrow} {target}")

    def note(self, path: Path) -> str:
        note = self.notes.get(path)
        return "" if note is None else "<br/>" + _text(note)

    def styles(self, marks: dict[Path, str]) -> Iterator[str]:
        marked: dict[str, str] = {}
        for path, state in marks.items():  # a node in a collapsed flow marks its box
            drawn = next(path[:n] for n in range(len(path), 0, -1) if path[:n] in self.ids)
            if drawn == path or self.ids[drawn] not in marked:
                marked[self.ids[drawn]] = state
        for mermaid_id, fill in self.fills:
            if mermaid_id not in marked:
                yield f"    style {mermaid_id} fill:{fill}"
        yield f"    classDef start {_START_STYLE}"
        yield f"    class {','.join(self.entries)} start"
        for state, style in MARK_STYLES.items():
            ids = [mermaid_id for mermaid_id, s in marked.items() if s == state]
            if ids:
                yield f"    classDef {state} {style}"
                yield f"    class {','.join(ids)} {state}"


def _text(text: str) -> str:
    """*text* made safe inside a quoted Mermaid label (see the module docstring)."""
    out = []
    for char in text:
        if char in _SAFE:
            out.append(char)
        elif char.isspace():
            out.append(" ")
        elif not char.isprintable() or char in _SHOWN_ESCAPED:
            out.append(f"#92;u{ord(char):04x}")  # shown as \uXXXX
        elif char < "\x80":
            out.append(f"#{ord(char)};")
        else:
            out.append(char)
    return "".join(out)


def _stats(start: Wired, path: Path = ()) -> dict[Path, str]:
    """``"Calls: N"`` for every node (nested ones too) that has ``get_stats()``, as 0.2.1."""
    notes: dict[Path, str] = {}
    ids = node_ids(start)
    for node in walk(start):
        node_path = (*path, ids[id(node)])
        if hasattr(node, "get_stats"):
            notes[node_path] = f"Calls: {node.get_stats().get('calls', 0)}"
        inner = getattr(node, "start", None)
        if isinstance(inner, Wired):
            notes.update(_stats(inner, node_path))
    return notes


class _Started:
    """A stand-in flow for an object that names its first node ``start_node``."""

    def __init__(self, start: Wired) -> None:
        self.start = start


# ── checking what we are given ──────────────────────────────────────────────


def _check_direction(direction: Any) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}.")


def _check_description(description: Any, where: str, depth: int) -> None:
    """Raise ValueError unless *description* has the shape ``describe`` gives."""
    if depth > _MAX_NESTING:
        raise ValueError(f"{where}: flows are nested more than {_MAX_NESTING} levels deep.")
    if not isinstance(description, Mapping):
        hint = " (decode graph_json with json.loads first)" if isinstance(description, str) else ""
        raise ValueError(
            f"{where} must be a dict with 'start', 'nodes' and 'edges', got "
            f"{_kind(description)}{hint}."
        )
    missing = [key for key in ("start", "nodes", "edges") if key not in description]
    if missing:
        raise ValueError(
            f"{where} has no {' and no '.join(map(repr, missing))} (keys: "
            f"{sorted(map(str, description))[:10]})."
        )
    nodes, edges = description["nodes"], description["edges"]
    for key, value in (("nodes", nodes), ("edges", edges)):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: '{key}' must be a list, got {_kind(value)}.")
    ids: set[str] = set()
    for index, node in enumerate(nodes):
        here = f"{where}: nodes[{index}]"
        _check_fields(node, here, ("id", "name"))
        if node["id"] in ids:
            raise ValueError(f"{here}: the id {node['id']!r} is used by an earlier node too.")
        ids.add(node["id"])
        if node.get("type") is not None and not isinstance(node["type"], str):
            raise ValueError(f"{here}: 'type' must be a str, got {_kind(node['type'])}.")
        if node.get("nested") is not None:
            _check_description(node["nested"], f"{here} ({node['id']!r}).nested", depth + 1)
    start = description["start"]
    if not isinstance(start, str) or start not in ids:
        raise ValueError(
            f"{where}: 'start' is {start!r}, which is not the id of one of its nodes {_some(ids)}."
        )
    for index, edge in enumerate(edges):
        here = f"{where}: edges[{index}]"
        _check_fields(edge, here, ("from", "to", "action"))
        for end in ("from", "to"):
            if edge[end] not in ids:
                raise ValueError(
                    f"{here}: '{end}' is {edge[end]!r}, which is not the id of "
                    f"one of the nodes {_some(ids)}."
                )


def _check_fields(entry: Any, where: str, fields: tuple[str, ...]) -> None:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be a dict with {list(fields)}, got {_kind(entry)}.")
    for field in fields:
        value = entry.get(field)
        if not isinstance(value, str) or not value:
            raise ValueError(
                f"{where}: {field!r} must be a non-empty str, got "
                f"{'nothing' if field not in entry else _kind(value)}."
            )


def _check_marks(marks: Any, description: Mapping[str, Any]) -> dict[Path, str]:
    """*marks* with every key as a path of node ids; ValueError names a bad entry."""
    if marks is None:
        return {}
    if not isinstance(marks, Mapping):
        raise ValueError(f"marks must be a dict of node id -> state, got {_kind(marks)}.")
    checked: dict[Path, str] = {}
    for key, state in marks.items():
        path = (key,) if isinstance(key, str) else key
        if not (isinstance(path, tuple) and path and all(isinstance(p, str) for p in path)):
            raise ValueError(
                f"marks: a key must be a node id (str) or a tuple of node ids "
                f"(the path into nested flows), got {key!r}."
            )
        if not isinstance(state, str) or state not in MARK_STYLES:
            raise ValueError(
                f"marks[{key!r}]: the state must be one of {list(MARK_STYLES)}, got {state!r}."
            )
        level: Mapping[str, Any] | None = description
        for depth, node_id in enumerate(path):
            found = (
                None
                if level is None
                else next((n for n in level["nodes"] if n["id"] == node_id), None)
            )
            if found is None:
                raise ValueError(
                    f"marks[{key!r}]: there is no node {node_id!r} in "
                    f"{'the flow' if depth == 0 else repr(path[depth - 1])}."
                )
            level = found.get("nested")
        checked[path] = state
    return checked


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _some(ids: set[str]) -> str:
    shown = sorted(ids)[:10]
    return f"{shown}{' ...' if len(ids) > 10 else ''}"
