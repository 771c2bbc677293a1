"""Human review with approval, the 0.2 way (0.2 has no Pause): the review node ends
the flow while it waits for a human; when the reviewer answers, the app loads the
run's last checkpoint and restarts the flow at the review node (resume_from)."""

import os

from pocoflow import Flow, Node, Store, WorkflowDB

DB = "review.db"


def fake_writer_llm(topic, feedback):
    if feedback:
        return f"A short, friendly post about {topic} (revised: {feedback})."
    return f"A post about {topic}."


class DraftPost(Node):
    def prep(self, store):
        return store["topic"], store.get("feedback")

    def exec(self, prep_res):
        return fake_writer_llm(*prep_res)

    def post(self, store, prep_res, draft):
        store["draft"] = draft
        store["revision"] = store["revision"] + 1
        print(f"  drafted v{store['revision']}: {draft}")
        return "review"


class HumanReview(Node):
    def prep(self, store):
        return store.get("decision")

    def exec(self, decision):
        return decision

    def post(self, store, prep_res, decision):
        if decision is None:
            print("  waiting for a human reviewer")
            return "await_human"          # no edge: the flow ends here for now
        store["decision"] = None          # consumed
        print(f"  reviewer said: {decision}")
        return decision                   # "approved" or "rejected"


class Publish(Node):
    def prep(self, store):
        return store["draft"]

    def exec(self, draft):
        return f"published: {draft}"

    def post(self, store, draft, receipt):
        store["published"] = receipt
        return "done"


draft, review, publish = DraftPost(), HumanReview(), Publish()
draft.then("review", review)
review.then("approved", publish)
review.then("rejected", draft)


def new_flow():
    flow = Flow(start=draft, db_path=DB, flow_name="review_post", checkpoint_dir="ckpt")
    flow.on("node_start", lambda name, store: print(f"> {name}"))
    return flow


def latest_run(db, seen):
    """The run this app just made: the one id it had not seen before."""
    fresh = [r for r in db.list_runs() if r["run_id"] not in seen]
    seen.update(r["run_id"] for r in fresh)
    return fresh[0]


def resume_with(db, run, **answer):
    checkpoints = db.get_checkpoints(run["run_id"])
    last = checkpoints[-1]
    store = db.load_checkpoint(run["run_id"], last["step"])
    print(f"restored step {last['step']} ({last['node_name']}), revision {store['revision']}")
    store.update(answer)
    new_flow().run(store, resume_from=review)
    return store


def main():
    db = WorkflowDB(DB)
    seen = set()
    store = Store(data={"topic": "composting", "draft": "", "revision": 0, "decision": None},
                  name="review")
    print("run 1: draft and wait")
    new_flow().run(store)
    run1 = latest_run(db, seen)
    print("run 1:", run1["status"], run1["total_steps"], run1["current_node"])

    print("run 2: rejected with feedback")
    resume_with(db, run1, decision="rejected", feedback="make it friendlier")
    run2 = latest_run(db, seen)
    print("run 2:", run2["status"], run2["total_steps"], run2["current_node"])

    print("run 3: approved")
    final = resume_with(db, run2, decision="approved")
    run3 = latest_run(db, seen)
    print("run 3:", run3["status"], run3["total_steps"], run3["current_node"])
    print(final["published"])
    print("three separate runs:", len({run1["run_id"], run2["run_id"], run3["run_id"]}))

    print("the same, from the JSON checkpoints:")
    files = sorted(os.listdir("ckpt"))
    print("files:", files)
    published = [f for f in files if f.endswith("_Publish.json")][-1]
    restored = Store.restore(os.path.join("ckpt", published))
    print("restored keys:", sorted(restored.keys()), "| published:", restored["published"])


if __name__ == "__main__":
    main()
