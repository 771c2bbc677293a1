"""Resume after a crash, following the 0.2 README: find the failed run, restore
the store from its last checkpoint, work out the node after it from the event log,
and run again from there with resume_from."""

import json

from pocoflow import Flow, Node, Store, WorkflowDB

flaky_service = {"up": False}


class FetchOrders(Node):
    def exec(self, prep_res):
        return [{"id": 1, "amount": 120.5}, {"id": 2, "amount": 80.0}, {"id": 3, "amount": 42.25}]

    def post(self, store, prep_res, orders):
        store["orders"] = orders
        return "parse"


class ComputeTotals(Node):
    def prep(self, store):
        return store["orders"]

    def exec(self, orders):
        return {"count": len(orders), "total": sum(o["amount"] for o in orders)}

    def post(self, store, orders, totals):
        store["totals"] = totals
        return "enrich"


class EnrichWithFX(Node):
    max_retries = 2
    retry_delay = 0.01

    def prep(self, store):
        return store["totals"]["total"]

    def exec(self, total):
        if not flaky_service["up"]:
            raise ConnectionError("FX service unavailable")
        return round(total * 0.92, 2)

    def post(self, store, total, total_eur):
        store["total_eur"] = total_eur
        return "save"


class SaveReport(Node):
    def prep(self, store):
        return store["totals"], store["total_eur"]

    def exec(self, prep_res):
        totals, eur = prep_res
        return f"{totals['count']} orders, {totals['total']:.2f} USD = {eur:.2f} EUR"

    def post(self, store, prep_res, report):
        store["report"] = report
        return "done"


fetch, compute, enrich, save = FetchOrders(), ComputeTotals(), EnrichWithFX(), SaveReport()
fetch.then("parse", compute)
compute.then("enrich", enrich)
enrich.then("save", save)
NODES = {n.name: n for n in (fetch, compute, enrich, save)}


def main():
    flow = Flow(start=fetch, db_path="pocoflow.db", flow_name="orders_report")
    try:
        flow.run(Store(data={"orders": []}, name="orders"))
    except ConnectionError as exc:
        print("run crashed:", exc)

    db = WorkflowDB("pocoflow.db")
    failed = next(r for r in db.list_runs() if r["status"] == "failed")
    print("failed run:", failed["flow_name"], failed["current_node"], failed["error_msg"])
    checkpoints = db.get_checkpoints(failed["run_id"])
    print("checkpoints:", [(c["step"], c["node_name"]) for c in checkpoints])
    last = checkpoints[-1]
    print("last checkpoint data:", json.loads(last["store_json"]))
    store = db.load_checkpoint(failed["run_id"], step=last["step"])

    node_ends = [e for e in db.get_events(failed["run_id"]) if e["event"] == "node_end"]
    last_end = node_ends[-1]
    resume_node = NODES[last_end["node_name"]].next_node(last_end["action"])
    print(f"resuming at {resume_node.name} (after {last_end['node_name']} -> {last_end['action']})")

    flaky_service["up"] = True
    resumed = Flow(start=fetch, db_path="pocoflow.db", flow_name="orders_report")
    trail = []
    resumed.on("node_start", lambda name, store: trail.append(name))
    resumed.run(store, resume_from=resume_node)
    print("ran:", trail)
    print("report:", store["report"])

    runs = db.list_runs()
    print("statuses:", sorted(r["status"] for r in runs))
    done = next(r for r in runs if r["status"] == "completed")
    print("resumed run steps:", done["total_steps"],
          "| new run id:", done["run_id"] != failed["run_id"])


if __name__ == "__main__":
    main()
