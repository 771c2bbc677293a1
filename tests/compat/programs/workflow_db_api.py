"""WorkflowDB used directly, as a monitoring script or a custom runner would:
every 0.2 method, then plain sqlite3 queries against the pf_* tables."""

import json
import sqlite3
from pathlib import Path

from pocoflow import Flow, Node, Store, WorkflowDB
from pocoflow.db import WorkflowDB as DbModuleWorkflowDB

RUN_KEYS_02 = {"run_id", "flow_name", "status", "started_at", "completed_at", "total_steps",
               "current_node", "error_msg"}
EVENT_KEYS_02 = {"id", "run_id", "step", "node_name", "event", "action", "elapsed_ms",
                 "error_msg", "ts"}
CHECKPOINT_KEYS_02 = {"id", "run_id", "step", "node_name", "store_json", "created_at"}


class Count(Node):
    def prep(self, store):
        return store["n"]

    def exec(self, n):
        return n + 1

    def post(self, store, n, result):
        store["n"] = result
        return "again" if result < 3 else "stop"


def main():
    print("same class from pocoflow.db:", WorkflowDB is DbModuleWorkflowDB)
    db = WorkflowDB("data/monitor.db")          # parent folders are created
    # quirk_attributes.py prints db_path raw (the path as given, in 0.2 and here).
    print("db_path:", db.db_path.name, "| file exists:", Path("data/monitor.db").exists())

    # a custom runner records its own run
    db.create_run("batch-0001", flow_name="nightly_batch")
    db.create_run("batch-0001", flow_name="ignored")      # same id: ignored
    row = db.get_run("batch-0001")
    # Normalised: this build's rows carry extra columns; only 0.2's are printed.
    print("0.2 keys present:", RUN_KEYS_02 <= set(row))
    print("new run:", row["flow_name"], row["status"], row["total_steps"], row["current_node"],
          row["completed_at"], row["error_msg"], "| started_at set:", bool(row["started_at"]))
    db.save_event("batch-0001", "flow_start", node_name="Extract", ts="2026-01-01T00:00:00+00:00")
    db.save_event("batch-0001", "node_start", step=0, node_name="Extract",
                  ts="2026-01-01T00:00:01+00:00")
    db.update_run("batch-0001", current_node="Extract")
    db.save_event("batch-0001", "node_end", step=0, node_name="Extract", action="load",
                  elapsed_ms=12.5, ts="2026-01-01T00:00:02+00:00")
    db.save_checkpoint("batch-0001", 0, "Extract", Store({"rows": 3, "source": "s3://bucket"}))
    db.save_checkpoint("batch-0001", 0, "Extract", Store({"rows": 4, "source": "s3://bucket"}))
    db.save_event("batch-0001", "node_error", step=1, node_name="Load", error_msg="quota",
                  ts="2026-01-01T00:00:03+00:00")
    db.update_run("batch-0001", status="failed", error_msg="quota", total_steps=1,
                  completed_at="2026-01-01T00:00:04+00:00")
    row = db.get_run("batch-0001")
    print("after updates:", row["status"], row["error_msg"], row["total_steps"],
          row["current_node"], row["completed_at"])
    for event in db.get_events("batch-0001"):
        print("  event:", event["event"], event["step"], event["node_name"], event["action"],
              event["elapsed_ms"], event["error_msg"], event["ts"])
    print("0.2 event keys present:", EVENT_KEYS_02 <= set(db.get_events("batch-0001")[0]))
    checkpoints = db.get_checkpoints("batch-0001")
    print("checkpoints (replaced, not duplicated):", len(checkpoints))
    print("0.2 checkpoint keys present:", CHECKPOINT_KEYS_02 <= set(checkpoints[0]))
    print("store_json:", json.loads(checkpoints[0]["store_json"]))
    store = db.load_checkpoint("batch-0001", 0)
    print("loaded:", type(store).__name__, store._name, dict(store.items()))
    try:
        db.load_checkpoint("batch-0001", 7)
    except KeyError:
        print("missing checkpoint -> KeyError")
    print("unknown run:", db.get_run("nope"), db.get_events("nope"), db.get_checkpoints("nope"))

    # a flow records into the same file; a second WorkflowDB object sees it
    count = Count()
    count.then("again", count)
    Flow(start=count, db_path="data/monitor.db", flow_name="counter").run(Store({"n": 0}))
    other = WorkflowDB(Path("data") / "monitor.db")
    runs = other.list_runs()
    print("runs:", sorted((r["flow_name"], r["status"]) for r in runs))
    print("list_runs(limit=1):", len(other.list_runs(limit=1)))
    counter = next(r for r in runs if r["flow_name"] == "counter")
    print("counter run:", counter["status"], counter["total_steps"], counter["current_node"],
          "| completed_at set:", bool(counter["completed_at"]))
    for event in other.get_events(counter["run_id"]):
        if event["event"] == "node_end":
            print("  node_end", event["step"], event["node_name"], event["action"],
                  isinstance(event["elapsed_ms"], float))

    # plain SQL, as 0.2's docs describe the three tables
    conn = sqlite3.connect("data/monitor.db")
    for table, keys in (("pf_runs", RUN_KEYS_02), ("pf_events", EVENT_KEYS_02),
                        ("pf_checkpoints", CHECKPOINT_KEYS_02)):
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        print(f"{table} has 0.2's columns:", keys <= columns)
    print("sql runs:", conn.execute(
        "SELECT flow_name, status FROM pf_runs ORDER BY flow_name").fetchall())
    print("sql events of the counter:", conn.execute(
        "SELECT event, node_name FROM pf_events WHERE run_id = ? ORDER BY id",
        (counter["run_id"],)).fetchall())
    print("sql checkpoint count:", conn.execute(
        "SELECT COUNT(*) FROM pf_checkpoints WHERE run_id = ?", (counter["run_id"],)).fetchone())
    conn.close()


if __name__ == "__main__":
    main()
