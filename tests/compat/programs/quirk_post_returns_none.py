"""post() methods that end without `return`, as people write the last node of a
pipeline (and, by accident, a middle one): hooks and the run database show the
action post returned."""

from pocoflow import Flow, Node, Store, WorkflowDB


class Clean(Node):
    def prep(self, store):
        return store["raw"]

    def exec(self, raw):
        return raw.strip().lower()

    def post(self, store, raw, text):
        store["text"] = text          # no return


class Count(Node):
    def prep(self, store):
        return store["text"]

    def exec(self, text):
        return len(text.split())

    def post(self, store, text, n):
        store["words"] = n            # no return


def main():
    clean, count = Clean(), Count()
    clean.then("default", count)
    flow = Flow(start=clean, db_path="runs.db")
    flow.on("node_end", lambda name, action, elapsed, store: print(f"{name} -> {action!r}"))
    store = Store({"raw": "  Hello Big World  "})
    flow.run(store)
    print("text:", store["text"], "| words:", store.get("words", "never counted"))
    db = WorkflowDB("runs.db")
    run = db.list_runs()[0]
    print("steps:", run["total_steps"])
    events = db.get_events(run["run_id"])
    print("actions:", [e["action"] for e in events if e["event"] == "node_end"])


if __name__ == "__main__":
    main()
