"""The cookbook's habit of keeping live objects in the Store (the LLM client under
`_llm`, a progress queue) combined with the README's db_path and checkpoint_dir:
0.2 recorded such values as '<non-serialisable: TypeName>' and went on."""

import json
import os
import queue

from pocoflow import Flow, Node, Store, WorkflowDB


class FakeClient:
    def call(self, prompt):
        return prompt.upper()


class Shout(Node):
    def prep(self, store):
        return store["text"], store["_llm"]

    def exec(self, prep_res):
        text, llm = prep_res
        return llm.call(text)

    def post(self, store, prep_res, loud):
        store["loud"] = loud
        store["_progress"].put("shouted")
        return "done"


def main():
    store = Store(data={"text": "hello", "_llm": FakeClient(), "_progress": queue.Queue()},
                  name="live")
    flow = Flow(start=Shout(), db_path="live.db", checkpoint_dir="ckpt", flow_name="live")
    try:
        flow.run(store)
        print("run finished:", store["loud"], store["_progress"].get_nowait())
    except Exception as exc:
        print("run failed:", type(exc).__name__)
    db = WorkflowDB("live.db")
    for run in db.list_runs():
        print("run:", run["status"])
        for checkpoint in db.get_checkpoints(run["run_id"]):
            print("checkpoint:", json.loads(checkpoint["store_json"]))
    for name in sorted(os.listdir("ckpt")):
        with open(os.path.join("ckpt", name)) as f:
            print(name, json.load(f))
    try:
        store.snapshot("manual.json")
        with open("manual.json") as f:
            print("snapshot:", json.load(f))
    except Exception as exc:
        print("snapshot failed:", type(exc).__name__)


if __name__ == "__main__":
    main()
