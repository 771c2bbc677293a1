"""A flow's graph as data: stable node ids, a description, and where a run starts.

Node names repeat when a flow uses two instances of one class, so each node
gets an id unique within its flow: its name, suffixed ``#2``, ``#3``... in the
order a breadth-first walk from the start meets them (edges in the order
``then`` added them). The same program always gives the same ids, which is
what lets a resume in another process find the node a run stopped at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pocoflow.node import GraphEdits, Node, Wired

if TYPE_CHECKING:
    from pocoflow.flow import Flow


@dataclass(frozen=True, slots=True)
class Start:
    """Where a run begins, when not at its flow's start node with step 0.

    A resume or a fork starts at ``node`` with step number ``step`` on a store
    that already holds the state. When ``node`` is a nested Flow, ``inner``
    says where that flow's own run starts. ``done`` means every node had run
    (the run only ends, on ``last_action``). ``resumed`` continues the run
    under its existing run_id instead of starting a new one. ``forked_from``
    names the run and step whose checkpoint a new run (a fork) starts from.
    """

    node: Wired | None = None  # None: the flow's start node
    step: int = 0
    resumed: bool = False
    inner: Start | None = None
    done: bool = False
    last_action: str | None = None
    forked_from: tuple[str, int] | None = None


def edges_of(node: Wired) -> list[tuple[str, Wired]]:
    """A node's edges that lead to a node (explicit ends, ``then(a, None)``, left out)."""
    return [(action, target) for action, target in node._successors.items() if target is not None]


def walk(start: Wired) -> list[Wired]:
    """Every node reachable from *start*, breadth first (edges in ``then`` order)."""
    seen: set[int] = set()
    order: list[Wired] = []
    queue = [start]
    while queue:
        node = queue.pop(0)
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        queue.extend(target for _, target in edges_of(node))
    return order


def node_ids(start: Wired) -> dict[int, str]:
    """``id(node) -> node id`` for every node reachable from *start*."""
    ids: dict[int, str] = {}
    taken: dict[str, int] = {}
    for node in walk(start):
        name = node.name
        count = taken.get(name, 0) + 1
        taken[name] = count
        ids[id(node)] = name if count == 1 else f"{name}#{count}"
    return ids


def find_node(start: Wired, node_id: str) -> Wired | None:
    """The node with *node_id* in the graph from *start*, or None."""
    ids = node_ids(start)
    for node in walk(start):
        if ids[id(node)] == node_id:
            return node
    return None


def nested_start(node: Wired) -> Wired | None:
    """The start node of *node* if it is a Flow used as a node, else None."""
    inner = getattr(node, "start", None)
    return inner if isinstance(inner, Wired) else None


def describe(flow: Flow) -> dict[str, Any]:
    """``{"start", "nodes": [{id, name, type, nested?}], "edges": [{from, to, action}]}``.

    Plain JSON data (what the database keeps for the monitor); a nested flow's
    node carries its own description under ``nested``.
    """
    ids = node_ids(flow.start)
    nodes = []
    edges = []
    for node in walk(flow.start):
        entry: dict[str, Any] = {
            "id": ids[id(node)],
            "name": node.name,
            "type": type(node).__name__,
        }
        if nested_start(node) is not None:
            entry["nested"] = describe(node)  # type: ignore[arg-type]
        nodes.append(entry)
        for action, target in edges_of(node):
            edges.append({"from": ids[id(node)], "to": ids[id(target)], "action": action})
    return {"start": ids[id(flow.start)], "nodes": nodes, "edges": edges}


def graph_data(flow: Flow) -> tuple[dict[int, str], dict[str, Any]]:
    """:func:`node_ids` and :func:`describe` of *flow*, worked out again only after an
    edit to a graph (every run of a flow with sinks needs both). Shared between runs:
    read them, never change them."""
    start = flow.start
    cached = flow.__dict__.get("_graph_data")
    if cached is not None and cached[0] == GraphEdits.count and cached[1] is start:
        return cached[2], cached[3]
    edits = GraphEdits.count
    ids, description = node_ids(start), describe(flow)
    flow.__dict__["_graph_data"] = (edits, start, ids, description)
    return ids, description


def validate_graph(start: Wired) -> None:
    """Check every node reachable from *start* once (nested flows too), before a run
    begins, so a misconfigured node fails the run before anything is done."""
    seen: set[int] = set()
    pending = [start]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Node):
            node.check_config()
        else:
            inner = nested_start(node)
            if inner is not None:
                pending.append(inner)
        pending.extend(target for _, target in edges_of(node))
