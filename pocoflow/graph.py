"""A flow's graph as data: stable node ids and a description for the monitor.

Node names repeat when a flow uses two instances of one class, so each node
gets an id unique within its flow: its name, suffixed ``#2``, ``#3``... in the
order a breadth-first walk from the start meets them (edges in the order
``then`` added them). The same program always gives the same ids, which is
what lets a resume in another process find the node a run stopped at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pocoflow.node import Wired

if TYPE_CHECKING:
    from pocoflow.flow import Flow


def node_ids(start: Wired) -> dict[int, str]:
    """``id(node) -> node id`` for every node reachable from *start*."""
    ids: dict[int, str] = {}
    taken: dict[str, int] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        if id(node) in ids:
            continue
        name = node.name
        count = taken.get(name, 0) + 1
        taken[name] = count
        ids[id(node)] = name if count == 1 else f"{name}#{count}"
        queue.extend(node._successors.values())
    return ids


def find_node(start: Wired, node_id: str) -> Wired | None:
    """The node with *node_id* in the graph from *start*, or None."""
    ids = node_ids(start)
    for node in walk(start):
        if ids[id(node)] == node_id:
            return node
    return None


def walk(start: Wired) -> list[Wired]:
    """Every node reachable from *start*, breadth first."""
    seen: set[int] = set()
    order: list[Wired] = []
    queue = [start]
    while queue:
        node = queue.pop(0)
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        queue.extend(node._successors.values())
    return order


def describe(flow: Flow) -> dict[str, Any]:
    """``{"start", "nodes": [{id, name, type, nested}], "edges": [{from, to, action}]}``."""
    ids = node_ids(flow.start)
    nodes = []
    edges = []
    for node in walk(flow.start):
        entry: dict[str, Any] = {"id": ids[id(node)], "name": node.name,
                                 "type": type(node).__name__}
        inner = getattr(node, "start", None)
        if isinstance(inner, Wired):
            entry["nested"] = describe(node)  # type: ignore[arg-type]
        nodes.append(entry)
        for action, target in node._successors.items():
            edges.append({"from": ids[id(node)], "to": ids[id(target)], "action": action})
    return {"start": ids[id(flow.start)], "nodes": nodes, "edges": edges}
