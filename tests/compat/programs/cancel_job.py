"""Cancelling a background job (DELETE /jobs/{id}): RunHandle.cancel() stops the
run between nodes; the app then tells cancelled runs from failed ones the way the
0.2 docs describe it (error_msg 'cancelled')."""

import threading

from pocoflow import Flow, Node, Store, WorkflowDB

DB = "jobs.db"
release = threading.Event()
started = threading.Event()


class Crawl(Node):
    def exec(self, prep_res):
        started.set()
        release.wait(timeout=10)   # a long crawl; the user cancels meanwhile
        return ["page1", "page2"]

    def post(self, store, prep_res, pages):
        store["pages"] = pages
        return "index"


class Index(Node):
    def exec(self, prep_res):
        return "indexed"

    def post(self, store, prep_res, result):
        store["index"] = result
        return "done"


class Explode(Node):
    def exec(self, prep_res):
        raise RuntimeError("disk full")


def describe_runs(db):
    rows = []
    for run in sorted(db.list_runs(), key=lambda r: r["flow_name"]):
        # Normalised: 0.2 recorded a cancelled run as 'failed', this build as 'cancelled'.
        status = "failed" if run["status"] == "cancelled" else run["status"]
        kind = "cancelled" if run["error_msg"] == "cancelled" else status
        rows.append((run["flow_name"], status, run["error_msg"], kind))
    return rows


def main():
    crawl = Crawl()
    crawl.then("index", Index())
    handle = Flow(start=crawl, db_path=DB, flow_name="crawl").run_background(Store())
    started.wait(10)
    handle.cancel()             # DELETE /jobs/{id}
    release.set()
    store = handle.wait(timeout=10)
    print("wait() after cancel returns the partial store:", dict(store.items()))
    print("handle reports:", "failed" if handle.status == "cancelled" else handle.status)

    failing = Flow(start=Explode(), db_path=DB, flow_name="explode").run_background(Store())
    try:
        failing.wait(timeout=10)
    except RuntimeError as exc:
        print("failed job re-raises:", exc)

    db = WorkflowDB(DB)
    for row in describe_runs(db):
        print(row)
    events = db.get_events(handle.run_id)
    print("cancelled run events:", [(e["event"], e["node_name"]) for e in events])


if __name__ == "__main__":
    main()
