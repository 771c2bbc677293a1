"""Mermaid diagrams of flows (pocoflow.visualize).

What a user relies on: every node is drawn once under its name, edges carry
their actions, cycles and nested flows are drawn as they are, the start is
marked, no node name or action can break the diagram or inject markup, the
monitor can draw a recorded run from its stored graph description (and mark
its nodes), and a malformed description is refused with a clear ValueError.
Every diagram a test makes is also checked by ``parse``: it must be in the
small Mermaid subset the renderer promises (checked once by hand against
Mermaid 11's own parser, see the module docstring of pocoflow.visualize).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pocoflow import Flow, Node, WorkflowDB
from pocoflow.graph import describe
from pocoflow.visualize import (
    MARK_STYLES,
    FlowVisualizer,
    mermaid_from_graph,
    visualize_flow,
)

# ── a strict reader of the Mermaid the renderer writes ────────────────────────

_ID = r"n\d+"
_LABEL = r'"([^"]*)"'
_LINES = {
    "entry": re.compile(rf'({_ID})\(\("start"\)\)'),
    "node": re.compile(rf"({_ID})\[{_LABEL}\]"),
    "subgraph": re.compile(rf"subgraph ({_ID}) \[{_LABEL}\]"),
    "end": re.compile(r"end"),
    "edge": re.compile(rf"({_ID}) -->(?:\|{_LABEL}\|)? ({_ID})"),
    "style": re.compile(rf"style ({_ID}) fill:(#[0-9a-fA-F]{{3,8}}|[A-Za-z]+)"),
    "classDef": re.compile(r"classDef ([a-z]+) ([a-z-]+:[#\w. -]+(?:,[a-z-]+:[#\w. -]+)*)"),
    "class": re.compile(rf"class ({_ID}(?:,{_ID})*) ([a-z]+)"),
}
# inside quotes: nothing Mermaid or HTML reads, except entity codes and our own <br/>
_UNSAFE_IN_LABEL = re.compile(r'["#;<>&|\[\]{}%`\\]')


@dataclass
class Diagram:
    """What a diagram draws, read back from its text."""

    direction: str
    labels: dict[str, str] = field(default_factory=dict)      # mermaid id -> label text
    subgraphs: set[str] = field(default_factory=set)
    entries: set[str] = field(default_factory=set)             # the "start" circles
    parent: dict[str, str | None] = field(default_factory=dict)
    edges: list[tuple[str, str | None, str]] = field(default_factory=list)
    styles: dict[str, str] = field(default_factory=dict)
    classes: dict[str, str] = field(default_factory=dict)      # mermaid id -> class

    def ids(self, label: str) -> list[str]:
        """The Mermaid ids of the boxes and subgraphs labelled *label*."""
        return [mid for mid, text in self.labels.items() if text == label]

    def id(self, label: str) -> str:
        """The one Mermaid id labelled *label*."""
        (found,) = self.ids(label)
        return found

    def named_edges(self) -> set[tuple[str, str | None, str]]:
        """Edges as (from label, action or None, to label); entries are called "start"."""
        def name(mid: str) -> str:
            return "start" if mid in self.entries else self.labels[mid]
        return {(name(a), action, name(b)) for a, action, b in self.edges}

    def start_of(self, scope: str | None) -> str:
        """The label of what the start circle of *scope* (a subgraph id, None: top) points to."""
        (target,) = [self.labels[b] for a, _, b in self.edges
                     if a in self.entries and self.parent[a] == scope]
        return target


def decode(label: str) -> str:
    """The text Mermaid shows for a quoted label."""
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), label)


def parse(text: str) -> Diagram:
    """Read *text*, failing the test if any line is outside the promised subset."""
    lines = text.split("\n")
    header = re.fullmatch(r"flowchart (TD|TB|BT|LR|RL)", lines[0])
    assert header, lines[0]
    diagram = Diagram(header.group(1))
    scopes: list[str | None] = [None]
    defined_classes: set[str] = set()
    for number, line in enumerate(lines[1:], 2):
        body = line.lstrip(" ")
        kind, match = next(((k, m) for k, rx in _LINES.items() if (m := rx.fullmatch(body))),
                           (None, None))
        assert match is not None, f"line {number} is not in the subset: {line!r}"
        depth = len(scopes) if kind != "end" else len(scopes) - 1
        if kind in ("entry", "node", "subgraph", "end", "edge"):
            assert "    " * depth == line[:len(line) - len(body)], f"indent of line {number}"
        else:
            assert 1 == len(scopes), f"line {number} is inside a subgraph"
            assert line.startswith("    "), f"indent of line {number}"
        if kind in ("entry", "node", "subgraph"):
            mid = match.group(1)
            assert mid not in diagram.parent, f"{mid} is defined twice"
            diagram.parent[mid] = scopes[-1]
            if kind == "entry":
                diagram.entries.add(mid)
            else:
                label = match.group(2)
                assert not _UNSAFE_IN_LABEL.search(re.sub(r"#\d+;|<br/>", "", label)), label
                assert label.isprintable(), label
                diagram.labels[mid] = decode(label)
            if kind == "subgraph":
                diagram.subgraphs.add(mid)
                scopes.append(mid)
        elif kind == "end":
            assert len(scopes) > 1, f"line {number}: end without subgraph"
            scopes.pop()
        elif kind == "edge":
            source, action, target = match.groups()
            for mid in (source, target):
                assert mid in diagram.parent, f"line {number}: {mid} used before it is defined"
            if action is not None:
                assert not _UNSAFE_IN_LABEL.search(re.sub(r"#\d+;", "", action)), action
                action = decode(action)
            diagram.edges.append((source, action, target))
        elif kind == "style":
            assert match.group(1) in diagram.parent
            diagram.styles[match.group(1)] = match.group(2)
        elif kind == "classDef":
            defined_classes.add(match.group(1))
        else:
            assert match.group(2) in defined_classes, f"line {number}: class before classDef"
            for mid in match.group(1).split(","):
                assert mid in diagram.parent
                diagram.classes[mid] = match.group(2)
    assert [None] == scopes, "a subgraph is not closed"
    return diagram


def draw(flow: Flow, **kwargs: Any) -> Diagram:
    """visualize_flow, read back; also checks that the description path gives the same text."""
    text = visualize_flow(flow, **kwargs)
    if not kwargs:
        assert text == mermaid_from_graph(describe(flow))
    return parse(text)


def chain(*names: str) -> list[Node]:
    """Nodes called *names*, each going to the next on the default action."""
    nodes = [Node(name=name) for name in names]
    for a, b in itertools.pairwise(nodes):
        a.then("default", b)
    return nodes


# ── shapes of graphs ──────────────────────────────────────────────────────────


def test_linear_flow_is_one_box_per_node_in_order() -> None:
    """A pipeline is drawn top-down, each node once, its default edges unlabelled."""
    load, _, _ = chain("Load", "Clean", "Save")

    diagram = draw(Flow(start=load))

    assert "TD" == diagram.direction
    assert ["Load", "Clean", "Save"] == list(diagram.labels.values())
    assert {("start", None, "Load"), ("Load", None, "Clean"),
            ("Clean", None, "Save")} == diagram.named_edges()


def test_branches_carry_their_actions() -> None:
    """Each named action labels its edge."""
    review = Node(name="Review")
    review.then("approve", Node(name="Publish")).then("reject", Node(name="Archive"))

    diagram = draw(Flow(start=review))

    assert {("start", None, "Review"), ("Review", "approve", "Publish"),
            ("Review", "reject", "Archive")} == diagram.named_edges()


def test_wildcard_edge_is_labelled_with_a_star() -> None:
    """The "*" edge (any other action) shows as *, next to the default edge."""
    route = Node(name="Route")
    route.then("default", Node(name="Usual")).then("*", Node(name="Other"))

    diagram = draw(Flow(start=route))

    assert {("Route", None, "Usual"), ("Route", "*", "Other")} <= diagram.named_edges()
    assert '-->|"*"|' in visualize_flow(Flow(start=route))


def test_a_node_reached_by_two_edges_is_one_box() -> None:
    """A join node is drawn once, with both edges into it (0.2.1 drew it twice)."""
    split, left, right = Node(name="Split"), Node(name="Left"), Node(name="Right")
    join = Node(name="Join")
    split.then("left", left).then("right", right)
    left.then("default", join)
    right.then("default", join)

    diagram = draw(Flow(start=split))

    assert 1 == len(diagram.ids("Join"))
    assert {("Left", None, "Join"), ("Right", None, "Join")} <= diagram.named_edges()


def test_cycles_and_self_loops_are_drawn_as_edges_back() -> None:
    """A loop goes back to the box it came from, however long the cycle (no depth cut)."""
    nodes = chain(*(f"Step{i}" for i in range(15)))
    nodes[-1].then("again", nodes[0])
    nodes[7].then("retry", nodes[7])

    diagram = draw(Flow(start=nodes[0]))

    assert 15 == len(diagram.labels)
    assert {("Step14", "again", "Step0"), ("Step7", "retry", "Step7")} <= diagram.named_edges()


def test_two_nodes_of_one_class_are_two_boxes() -> None:
    """Two instances of a class, or two nodes given the same name, are separate boxes."""

    class Ask(Node):
        pass

    first, second = Ask(), Ask()
    first.then("default", second)
    second.then("default", Node(name="Same")).then("other", Node(name="Same"))

    diagram = draw(Flow(start=first))

    asks, sames = diagram.ids("Ask"), diagram.ids("Same")
    assert 2 == len(asks) == len(sames)
    assert (asks[0], None, asks[1]) in diagram.edges


def test_ids_are_generated_whatever_the_names() -> None:
    """Names that look like Mermaid ids or keywords are labels only."""
    nodes = chain("n0", "end", "subgraph", "flowchart TD", "class")

    diagram = draw(Flow(start=nodes[0]))

    assert ["n0", "end", "subgraph", "flowchart TD", "class"] == list(diagram.labels.values())
    assert all(re.fullmatch(r"n\d+", mid) for mid in diagram.parent)


def test_an_empty_flow_is_its_start_node() -> None:
    """A flow of one node without edges draws that node and its start circle."""
    diagram = draw(Flow(start=Node()))

    assert {("start", None, "Node")} == diagram.named_edges()


# ── nested flows ──────────────────────────────────────────────────────────────


def publish_flow() -> Flow:
    fmt, _ = chain("Format", "Upload")
    return Flow(start=fmt, flow_name="Publish")


def test_nested_flow_is_a_subgraph_holding_its_nodes() -> None:
    """A nested flow is a subgraph with its own start; outer edges go to and from it."""
    inner = publish_flow()
    review, done = Node(name="Review"), Node(name="Done")
    review.then("approve", inner).then("reject", review)
    inner.then("default", done)

    diagram = draw(Flow(start=review))

    publish = diagram.id("Publish")
    assert {publish} == diagram.subgraphs
    assert publish == diagram.parent[diagram.id("Format")] == diagram.parent[diagram.id("Upload")]
    assert diagram.parent[diagram.id("Review")] is None
    assert {("Review", "approve", "Publish"), ("Publish", None, "Done"),
            ("Format", None, "Upload")} <= diagram.named_edges()
    assert "Review" == diagram.start_of(None)
    assert "Format" == diagram.start_of(publish)


def test_flow_nested_twice_is_a_subgraph_in_a_subgraph() -> None:
    """Three levels of flows are three levels of subgraphs; a nested start is marked too."""
    innermost = publish_flow()
    middle = Flow(start=innermost, flow_name="Middle")
    middle.start.then("default", Node(name="After"))
    outer = Flow(start=middle)

    diagram = draw(outer)

    middle_id, publish_id = diagram.id("Middle"), diagram.id("Publish")
    assert {middle_id, publish_id} == diagram.subgraphs
    assert middle_id == diagram.parent[publish_id] == diagram.parent[diagram.id("After")]
    assert publish_id == diagram.parent[diagram.id("Upload")]
    assert "Middle" == diagram.start_of(None)
    assert "Publish" == diagram.start_of(middle_id)
    assert ("Publish", None, "After") in diagram.named_edges()


def test_nested_flow_reached_twice_is_one_subgraph() -> None:
    """One nested flow object reached by two edges of a flow is one subgraph."""
    inner = publish_flow()
    split = Node(name="Split")
    split.then("a", inner).then("b", Node(name="Detour"))
    split.successors["b"].then("default", inner)

    diagram = draw(Flow(start=split))

    assert 1 == len(diagram.ids("Publish")) == len(diagram.ids("Upload"))
    assert {("Split", "a", "Publish"), ("Detour", None, "Publish")} <= diagram.named_edges()


def test_nested_flow_used_at_two_places_is_drawn_at_both() -> None:
    """The same flow nested inside two other flows appears in both, with separate boxes."""
    shared = publish_flow()
    first = Flow(start=shared, flow_name="First")
    second = Flow(start=shared, flow_name="Second")
    first.then("default", second)

    diagram = draw(Flow(start=first))

    publishes = diagram.ids("Publish")
    assert 2 == len(publishes) == len(diagram.ids("Format"))
    assert {diagram.id("First"), diagram.id("Second")} == {diagram.parent[p] for p in publishes}
    assert ("First", None, "Second") in diagram.named_edges()


def test_nested_flow_looping_to_itself() -> None:
    """A nested flow with an edge back to itself is a self-loop on its subgraph."""
    inner = publish_flow()
    inner.then("again", inner)

    diagram = draw(Flow(start=inner))

    assert ("Publish", "again", "Publish") in diagram.named_edges()


# ── escaping ──────────────────────────────────────────────────────────────────

NASTY = [
    'say "hi"',
    'x"] --> evil["pwned',
    "a|b|c",
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "line one\nline two\r\nthree",
    "`markdown` **bold**",
    "semi; colon; click n0 call alert()",
    "%% comment",
    "%%{init: {'theme': 'dark'}}%%",
    "#quot; #lt;script#gt; #35;",
    "&amp; &lt;",
    "[brackets] {braces} (parens) ((circle))",
    "back\\slash",
    "tab\there",
    "naïve café, 日本語, emoji 😀",
    "bidi \u202eevil\u202c zero\u200bwidth",
    "ctrl \x00\x07\x1b",
    "end",
    "subgraph n0",
    "style n0 fill:#f00",
    "classDef x fill:#f00; color: #0f0;",
    "\ufb02\u00b0\u00b060\u00b6\u00dfb\ufb02\u00b0lt\u00b6\u00df",  # Mermaid's entity placeholders
]


def expected_label(name: str) -> str:
    """What a name looks like once drawn: whitespace as spaces, invisible chars as \\uXXXX."""
    return "".join(" " if c.isspace() else c if c.isprintable() and c not in "\ufb02\u00b6"
                   else f"\\u{ord(c):04x}" for c in name)


@pytest.mark.parametrize("name", NASTY)
def test_nasty_names_and_actions_stay_inside_their_quotes(name: str) -> None:
    """Any text is shown as written and cannot end its label or add Mermaid or HTML."""
    node = Node(name=name)
    node.then(name, node)
    node.then("default", Node(name="After"))
    inner = Flow(start=Node(name=name), flow_name=name)
    node.then("nested", inner)

    text = visualize_flow(Flow(start=node))
    diagram = parse(text)

    assert [expected_label(name)] * 3 == [diagram.labels[m] for m in diagram.ids(
        expected_label(name))]
    assert (expected_label(name), expected_label(name), expected_label(name)) \
        in diagram.named_edges()
    assert "<script" not in text.lower()
    assert "<img" not in text.lower()
    assert "%%" not in text
    assert "`" not in text


def test_all_nasty_names_in_one_flow() -> None:
    """A flow of every nasty name, chained by nasty actions, is still well-formed."""
    nodes = [Node(name=name) for name in NASTY]
    for (a, b), action in zip(itertools.pairwise(nodes), NASTY[:-1], strict=True):
        a.then(action, b)

    text = visualize_flow(Flow(start=nodes[0]))
    diagram = parse(text)

    assert [expected_label(n) for n in NASTY] == list(diagram.labels.values())
    assert len(NASTY) == len(diagram.edges)  # the start edge and one per pair
    # header, start circle, then a node, an edge and a style line per name, start class
    assert 1 + 1 + 3 * len(NASTY) + 2 == len(text.split("\n"))


def test_lone_surrogate_in_a_recorded_name_is_shown_escaped() -> None:
    """A name with a lone surrogate (possible in a stored description) gives UTF-8-safe text."""
    description = {"start": "a", "nodes": [{"id": "a", "name": "bad \udc80", "type": "Node"}],
                   "edges": []}

    text = mermaid_from_graph(description)

    assert "bad \\udc80" == parse(text).labels["n1"]
    text.encode("utf-8")


# ── marks, direction, recorded graphs ─────────────────────────────────────────


def review_flow() -> Flow:
    inner = publish_flow()
    review = Node(name="Review")
    review.then("approve", inner).then("reject", review)
    return Flow(start=review)


def test_marks_style_nodes_by_state() -> None:
    """Marked nodes get the class of their state instead of their type colour."""
    flow = review_flow()

    diagram = parse(mermaid_from_graph(describe(flow), marks={
        "Review": "completed", ("Publish", "Upload"): "failed", "Publish": "current"}))

    review, upload, publish = (diagram.id(n) for n in ("Review", "Upload", "Publish"))
    assert {review: "completed", upload: "failed", publish: "current"} == {
        m: c for m, c in diagram.classes.items() if m not in diagram.entries}
    assert set() == {review, upload, publish} & set(diagram.styles)
    assert diagram.id("Format") in diagram.styles


@pytest.mark.parametrize("state", sorted(MARK_STYLES))
def test_every_mark_state_is_drawn(state: str) -> None:
    """Each documented state gives a classDef and a class line."""
    text = mermaid_from_graph(describe(review_flow()), marks={"Review": state})

    assert state == parse(text).classes["n1"]
    assert f"    classDef {state} {MARK_STYLES[state]}" in text.split("\n")


@pytest.mark.parametrize(
    ("marks", "message"),
    [
        ({"Nope": "current"}, "no node 'Nope' in the flow"),
        ({("Publish", "Nope"): "failed"}, "no node 'Nope' in 'Publish'"),
        ({("Review", "Format"): "failed"}, "no node 'Format' in 'Review'"),
        ({"Review": "exploded"}, "the state must be one of"),
        ({"Review": ["current"]}, "the state must be one of"),
        ({3: "current"}, "a key must be a node id"),
        ({(): "current"}, "a key must be a node id"),
        (["Review"], "marks must be a dict"),
    ],
)
def test_bad_marks_are_refused(marks: Any, message: str) -> None:
    """Marks naming a missing node, an unknown state or of the wrong shape raise ValueError."""
    with pytest.raises(ValueError, match=re.escape(message)):
        mermaid_from_graph(describe(review_flow()), marks=marks)


def test_direction() -> None:
    """direction sets the flowchart direction; an unknown one is refused."""
    flow = review_flow()

    assert "LR" == parse(visualize_flow(flow, direction="LR")).direction
    assert "BT" == parse(mermaid_from_graph(describe(flow), direction="BT")).direction
    with pytest.raises(ValueError, match="direction must be one of"):
        mermaid_from_graph(describe(flow), direction="TD; click")


def test_json_round_tripped_description_draws_the_same() -> None:
    """A description that went through JSON (as graph_json does) draws the same diagram."""
    flow = review_flow()
    flow.start.then("*", Node(name='odd "name" <b>'))

    stored = json.loads(json.dumps(describe(flow)))

    assert visualize_flow(flow) == mermaid_from_graph(stored)


def test_recorded_run_is_drawn_from_its_graph_json(tmp_path: Path) -> None:
    """The graph a run recorded in the database draws the flow that ran, and marks work on it."""

    class Approve(Node):
        def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
            return "approve"

    review = Approve(name="Review")
    review.then("approve", publish_flow()).then("reject", review)
    flow = Flow(start=review)
    Flow(start=review, db_path=tmp_path / "runs.db", run_id="viz-1").run({})

    graph_json = WorkflowDB(tmp_path / "runs.db").records.get_run_input("viz-1")["graph_json"]
    text = mermaid_from_graph(json.loads(graph_json), marks={("Publish", "Upload"): "completed"})

    assert visualize_flow(flow, marks={("Publish", "Upload"): "completed"}) == text
    diagram = parse(text)
    assert "completed" == diagram.classes[diagram.id("Upload")]


# ── malformed descriptions ────────────────────────────────────────────────────

GOOD = {"start": "A", "nodes": [{"id": "A", "name": "A", "type": "Node"},
                                {"id": "B", "name": "B", "type": "Node"}],
        "edges": [{"from": "A", "to": "B", "action": "default"}]}


def broken(change: Any) -> dict[str, Any]:
    description = copy.deepcopy(GOOD)
    change(description)
    return description


@pytest.mark.parametrize(
    ("description", "message"),
    [
        (None, "graph description must be a dict"),
        ("{}", "(decode graph_json with json.loads first)"),
        ([], "graph description must be a dict"),
        ({"nodes": [], "edges": []}, "graph description has no 'start'"),
        (broken(lambda d: d.pop("edges")), "has no 'edges'"),
        (broken(lambda d: d.update(nodes={"A": {}})), "'nodes' must be a list, got dict"),
        (broken(lambda d: d.update(edges="A->B")), "'edges' must be a list, got str"),
        (broken(lambda d: d["nodes"].append("C")), "nodes[2] must be a dict"),
        (broken(lambda d: d["nodes"][1].pop("id")), "nodes[1]: 'id' must be a non-empty str, "
                                                    "got nothing"),
        (broken(lambda d: d["nodes"][1].update(id=7)), "nodes[1]: 'id' must be a non-empty str, "
                                                       "got int 7"),
        (broken(lambda d: d["nodes"][1].update(name=None)), "nodes[1]: 'name' must be"),
        (broken(lambda d: d["nodes"][1].update(name="")), "nodes[1]: 'name' must be"),
        (broken(lambda d: d["nodes"][1].update(type=["Node"])), "'type' must be a str"),
        (broken(lambda d: d["nodes"][1].update(id="A")), "nodes[1]: the id 'A' is used by an "
                                                        "earlier node too"),
        (broken(lambda d: d.update(start="Z")), "'start' is 'Z', which is not the id of one of"),
        (broken(lambda d: d.update(start=None)), "'start' is None"),
        (broken(lambda d: d.update(start="A", nodes=[])), "'start' is 'A'"),
        (broken(lambda d: d["edges"].append(None)), "edges[1] must be a dict"),
        (broken(lambda d: d["edges"][0].pop("action")), "edges[0]: 'action' must be a "
                                                        "non-empty str"),
        (broken(lambda d: d["edges"][0].update(to="Z")), "edges[0]: 'to' is 'Z', which is not"),
        (broken(lambda d: d["edges"][0].update(**{"from": ["A"]})), "edges[0]: 'from' must be"),
        (broken(lambda d: d["nodes"][1].update(nested=[1])), "nodes[1] ('B').nested must be a "
                                                             "dict"),
        (broken(lambda d: d["nodes"][1].update(nested={"start": "X", "nodes": [], "edges": []})),
         "nodes[1] ('B').nested: 'start' is 'X'"),
        (broken(lambda d: d["nodes"][1].update(nested=broken(
            lambda e: e["edges"][0].update(to=3)))),
         "nodes[1] ('B').nested: edges[0]: 'to' must be a non-empty str"),
    ],
)
def test_malformed_descriptions_raise_value_error_saying_where(description: Any,
                                                                message: str) -> None:
    """A description not of describe()'s shape raises ValueError naming the faulty part."""
    with pytest.raises(ValueError, match=re.escape(message)):
        mermaid_from_graph(description)


def test_descriptions_nested_absurdly_deep_are_refused() -> None:
    """A description nested thousands of levels deep is a ValueError, not a RecursionError."""
    description = copy.deepcopy(GOOD)
    for _ in range(5000):
        description = {"start": "F", "nodes": [{"id": "F", "name": "F", "nested": description}],
                       "edges": []}

    with pytest.raises(ValueError, match="nested more than 100 levels deep"):
        mermaid_from_graph(description)


def test_extra_keys_are_ignored() -> None:
    """Keys the renderer does not use (a later format's additions) do not stop it."""
    description = broken(lambda d: d.update(version=2))
    description["nodes"][0]["retries"] = 3
    description["edges"][0]["weight"] = 1.5

    assert mermaid_from_graph(GOOD) == mermaid_from_graph(description)


# ── pocoflow 0.2.1 compatibility ──────────────────────────────────────────────


def test_build_mermaid_takes_the_0_2_1_arguments() -> None:
    """FlowVisualizer().build_mermaid(flow, include_stats=..., max_depth=...) still works."""
    flow = review_flow()

    text = FlowVisualizer().build_mermaid(flow, include_stats=False, max_depth=10)

    assert text.startswith("flowchart TD\n")
    assert text == visualize_flow(flow)


def test_type_colours_are_0_2_1s() -> None:
    """Nodes are filled by type as in 0.2.1 (Node, AsyncNode, Flow; others grey)."""

    class Custom(Node):
        pass

    start = Node(name="Plain")
    start.then("default", Custom()).then("x", publish_flow())

    diagram = draw(Flow(start=start))

    assert {"Plain": "#e1f5fe", "Custom": "#f0f0f0", "Publish": "#fff3e0"} == {
        label: diagram.styles[diagram.id(label)] for label in ("Plain", "Custom", "Publish")}


def test_node_colors_can_be_overridden_in_a_subclass() -> None:
    """A FlowVisualizer subclass with its own NODE_COLORS colours nodes with it."""

    class Dark(FlowVisualizer):
        NODE_COLORS: ClassVar[dict[str, str]] = {"Node": "#000000"}

    diagram = parse(Dark().build_mermaid(Flow(start=Node())))

    assert "#000000" == diagram.styles[diagram.id("Node")]


def test_bad_node_color_is_refused() -> None:
    """A colour that is not a colour cannot reach the diagram."""

    class Bad(FlowVisualizer):
        NODE_COLORS: ClassVar[dict[str, str]] = {"Node": "red;click n0 call alert()"}

    with pytest.raises(ValueError, match="must be a colour"):
        Bad().build_mermaid(Flow(start=Node()))


def test_include_stats_shows_call_counts() -> None:
    """With include_stats, nodes that have get_stats() show "Calls: N", as in 0.2.1."""

    class Counted(Node):
        def get_stats(self) -> dict[str, int]:
            return {"calls": 3}

    start = Counted(name="Counted")
    start.then("default", Flow(start=Counted(name="Inner"), flow_name="Sub"))
    flow = Flow(start=start)

    with_stats = parse(visualize_flow(flow, include_stats=True))
    without = parse(visualize_flow(flow))

    assert {"Counted<br/>Calls: 3", "Inner<br/>Calls: 3"} <= set(with_stats.labels.values())
    assert {"Counted", "Inner", "Sub"} == set(without.labels.values())


def test_max_depth_collapses_deeper_nested_flows() -> None:
    """Nested flows deeper than max_depth are single boxes; cycles are never cut."""
    middle = Flow(start=publish_flow(), flow_name="Middle")
    loop = Node(name="Loop")
    loop.then("default", middle)
    middle.then("again", loop)
    flow = Flow(start=loop)

    flat = parse(visualize_flow(flow, max_depth=0))
    one = parse(visualize_flow(flow, max_depth=1))
    marked = parse(visualize_flow(flow, max_depth=1, marks={("Middle", "Publish", "Upload"):
                                                           "failed"}))

    assert (set(), {"Loop", "Middle"}) == (flat.subgraphs, set(flat.labels.values()))
    assert ({one.id("Middle")}, "#fff3e0") == (one.subgraphs, one.styles[one.id("Publish")])
    assert {("Loop", None, "Middle"), ("Middle", "again", "Loop")} <= one.named_edges()
    assert "failed" == marked.classes[marked.id("Publish")]


def test_object_without_start_gives_0_2_1s_error_diagram() -> None:
    """Something without a start node draws the "No start node found" box, as 0.2.1 did."""
    diagram = parse(visualize_flow(object()))

    assert ["No start node found"] == list(diagram.labels.values())


def test_object_with_start_node_is_drawn() -> None:
    """An object whose first node is ``start_node`` (0.2.1 accepted it) is drawn."""

    class Holder:
        def __init__(self, node: Node) -> None:
            self.start_node = node

    load, _ = chain("Load", "Save")

    assert visualize_flow(Flow(start=load)) == visualize_flow(Holder(load))
