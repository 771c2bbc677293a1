"""A nightly job names its run after the date (Flow(run_id=...)) and, when the
first attempt fails, simply runs again under the same id."""

from pocoflow import Flow, Node, Store, WorkflowDB

state = {"attempt": 0}


class Export(Node):
    def exec(self, prep_res):
        state["attempt"] += 1
        if state["attempt"] == 1:
            raise ConnectionError("warehouse offline")
        return "exported"

    def post(self, store, prep_res, result):
        store["result"] = result
        return "done"


def main():
    flow = Flow(start=Export(), db_path="nightly.db", flow_name="nightly",
                run_id="nightly-2026-01-31")
    for _ in range(2):
        try:
            store = flow.run(Store())
            print("attempt", state["attempt"], "->", store["result"])
        except Exception as exc:
            print("attempt", state["attempt"], "->", type(exc).__name__)
    run = WorkflowDB("nightly.db").get_run("nightly-2026-01-31")
    print("row:", run["status"], run["total_steps"])


if __name__ == "__main__":
    main()
