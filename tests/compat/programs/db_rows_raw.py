"""A monitoring script prints pf_events and pf_checkpoints rows as they are: a
successful run, a run whose node succeeds on its second attempt, and a failed run."""

from pocoflow import Flow, Node, Store, WorkflowDB

calls = {"n": 0}


class Ok(Node):
    def exec(self, prep_res):
        return 1

    def post(self, store, prep_res, value):
        store["value"] = value
        return "done"


class Flaky(Node):
    max_retries = 2

    def exec(self, prep_res):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("reset by peer")
        return 2

    def post(self, store, prep_res, value):
        store["value"] = value
        return "done"


class Broken(Node):
    def exec(self, prep_res):
        raise ValueError("bad input")


def main():
    for node, name in ((Ok(), "ok"), (Flaky(), "flaky"), (Broken(), "broken")):
        try:
            Flow(start=node, db_path="raw.db", flow_name=name).run(Store({"value": 0}))
        except ValueError as exc:
            print(f"{name} raised: {exc}")
    db = WorkflowDB("raw.db")
    for run in sorted(db.list_runs(), key=lambda r: r["flow_name"]):
        print(run["flow_name"], run["status"], "total_steps:", run["total_steps"])
        for e in db.get_events(run["run_id"]):
            print("   ", e["event"], e["step"], e["node_name"], e["action"], e["error_msg"])
        for c in db.get_checkpoints(run["run_id"]):
            print("    checkpoint", c["step"], c["node_name"], c["store_json"])


if __name__ == "__main__":
    main()
