"""Retrieval results kept as (doc_id, score) tuples; the app reloads them from a
checkpoint and compares with freshly computed lists (JSON has no tuples, so 0.2
gave lists back)."""

import json

from pocoflow import Flow, Node, Store, WorkflowDB


class Retrieve(Node):
    def exec(self, prep_res):
        return [("doc-7", 0.91), ("doc-2", 0.55)]

    def post(self, store, prep_res, hits):
        store["hits"] = hits
        store["best"] = hits[0]
        return "done"


def main():
    store = Store(name="rag")
    Flow(start=Retrieve(), db_path="rag.db", checkpoint_dir="ckpt").run(store)
    db = WorkflowDB("rag.db")
    run_id = db.list_runs()[0]["run_id"]
    loaded = db.load_checkpoint(run_id, 0)
    print("hits:", loaded["hits"])
    print("best:", loaded["best"])
    print("equal to JSON-style lists:", loaded["hits"] == [["doc-7", 0.91], ["doc-2", 0.55]])
    with open("ckpt/step_000_Retrieve.json") as f:
        print("file:", json.load(f)["data"])
    store.snapshot("snap.json")
    print("restored best:", Store.restore("snap.json")["best"])


if __name__ == "__main__":
    main()
