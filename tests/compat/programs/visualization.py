"""Visualization: pocoflow.utils' Mermaid helpers, and the cookbook's own walk of
the graph (node._successors, flow.start) to draw Mermaid and D3-style JSON."""

import json

from pocoflow import Flow, FlowVisualizer, Node, visualize_flow
from pocoflow.utils import FlowVisualizer as UtilsFlowVisualizer
from pocoflow.utils import visualize_flow as utils_visualize_flow


class ValidateOrder(Node):
    def exec(self, prep_res):
        return "valid"

    def post(self, store, prep_res, verdict):
        store["validated"] = True
        return "default" if verdict == "valid" else "invalid"


class ProcessPayment(Node):
    def exec(self, prep_res):
        return "paid"


class ShipOrder(Node):
    def exec(self, prep_res):
        return "shipped"

    def post(self, store, prep_res, result):
        return "done"


class RejectOrder(Node):
    def exec(self, prep_res):
        return "rejected"


class RetryPayment(Node):
    def exec(self, prep_res):
        return "retry"


def order_flow():
    validate, pay, ship, reject, retry = (ValidateOrder(), ProcessPayment(), ShipOrder(),
                                          RejectOrder(), RetryPayment())
    validate.then("default", pay)
    validate.then("invalid", reject)
    pay.then("default", ship)
    pay.then("declined", retry)
    retry.then("default", pay)        # a cycle
    ship.then("*", None)              # any action ends the flow
    return Flow(start=validate, flow_name="orders")


def build_mermaid(flow):
    """The cookbook's walker: ids by visiting order, edges labelled by action."""
    ids, visited, lines = {}, set(), ["graph LR"]

    def get_id(node):
        if node not in ids:
            ids[node] = f"N{len(ids) + 1}"
        return ids[node]

    def walk(node, parent=None, action=None):
        if parent is not None:
            lines.append(f"    {parent} -->|{action}| {get_id(node)}")
        if node in visited:
            return
        visited.add(node)
        lines.append(f"    {get_id(node)}['{type(node).__name__}']")
        for act, nxt in node._successors.items():
            if nxt is not None:
                walk(nxt, get_id(node), act)

    walk(flow.start)
    return "\n".join(lines)


def flow_to_json(flow):
    nodes, links, ids = [], [], {}

    def walk(node):
        if node in ids:
            return ids[node]
        ids[node] = len(ids) + 1
        nodes.append({"id": ids[node], "name": node.name})
        for action, nxt in node._successors.items():
            if nxt is not None:
                links.append({"source": ids[node], "target": walk(nxt), "action": action})
        return ids[node]

    walk(flow.start)
    return {"nodes": nodes, "links": links}


def main():
    flow = order_flow()
    print("=== cookbook Mermaid ===")
    print(build_mermaid(flow))
    print("=== D3 JSON ===")
    print(json.dumps(flow_to_json(flow), indent=1))
    print("=== pocoflow.utils ===")
    print("same objects:", FlowVisualizer is UtilsFlowVisualizer,
          visualize_flow is utils_visualize_flow)
    print("colours:", FlowVisualizer.NODE_COLORS)
    # Normalised: 0.2.1's FlowVisualizer looked for a `successors` attribute that 0.2
    # nodes do not have, so it drew the start node alone; this build draws the whole
    # graph. Only what both promise is printed: a flowchart naming the start node.
    for diagram in (visualize_flow(flow),
                    FlowVisualizer().build_mermaid(flow, include_stats=True, max_depth=3)):
        lines = diagram.splitlines()
        print("first line:", lines[0], "| names the start node:", "ValidateOrder" in diagram,
              "| is a string:", isinstance(diagram, str))
    print("no start node:", visualize_flow(object()).splitlines()[0])


if __name__ == "__main__":
    main()
