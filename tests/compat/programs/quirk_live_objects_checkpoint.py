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


def as_02(data, excluded, store):
    """Normalised: this build leaves a value the codec cannot encode out of the checkpoint
    and lists its key under 'excluded' (with a WARNING log), since a silent
    '<non-serialisable: T>' string would lose data unannounced; 0.2 wrote that string.
    Shown here the way 0.2 wrote it (a no-op under 0.2, which has no 'excluded')."""
    if not excluded:
        return data
    return {key: data[key] if key in data else f"<non-serialisable: {type(store[key]).__name__}>"
            for key in store.keys()  # noqa: SIM118 (0.2's Store had keys(), no __iter__)
            if key in data or key in excluded}


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
            excluded = json.loads(checkpoint.get("excluded") or "[]")
            print("checkpoint:", as_02(json.loads(checkpoint["store_json"]), excluded, store))
    for name in sorted(os.listdir("ckpt")):
        with open(os.path.join("ckpt", name)) as f:
            payload = json.load(f)
        payload["data"] = as_02(payload["data"], payload.pop("excluded", []), store)
        print(name, payload)
    try:
        store.snapshot("manual.json")
        with open("manual.json") as f:
            payload = json.load(f)
        payload["data"] = as_02(payload["data"], payload.pop("excluded", []), store)
        print("snapshot:", payload)
    except Exception as exc:
        print("snapshot failed:", type(exc).__name__)


if __name__ == "__main__":
    main()
