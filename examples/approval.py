"""Human in the loop across processes: a run pauses for approval, a "web handler"
approves it, a worker finishes it.

    python examples/approval.py                    # SQLite file in this directory
    python examples/approval.py --reject           # the reviewer asks for a rewrite
    python examples/approval.py --db postgresql+psycopg://user@host/db

A worker takes the submitted run: ``Draft`` writes a press release (a fake LLM,
offline), ``Review`` raises ``Pause("needs approval", draft=...)``, and the run
is checkpointed as ``paused``: no process holds it while it waits, for a
minute or a week. The reviewer's answer arrives as a web request would, in any
process: ``db.resume(run_id, updates={"approved": True})`` puts the run back
in its queue with the answer; a worker writes the answer into the store and
goes on at ``Review`` (``Draft`` does not run again), then ``Publish``.

Here the worker runs in a thread of this script; in production it is
``pocoflow worker examples.approval:build_flow --db URL`` on any machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from pocoflow import Flow, Node, Pause, RunHandle, WorkflowDB


def fake_llm(prompt: str) -> str:
    """An offline stand-in for a model call."""
    topic = prompt.split(":", 1)[-1].strip()
    return f"FOR IMMEDIATE RELEASE: {topic} is now generally available."


class Draft(Node):
    def prep(self, store):
        return store["topic"], store.get("feedback")

    def exec(self, args):
        topic, feedback = args
        text = fake_llm(f"Press release about: {topic}")
        return f"{text} ({feedback})" if feedback else text

    def post(self, store, args, draft):
        store["draft"] = draft
        store["drafts"] = store.get("drafts", 0) + 1


class Review(Node):
    """Waits for a human: the answer comes as store updates through db.resume."""

    def prep(self, store):
        return store["draft"], store.get("approved")

    def exec(self, args):
        draft, approved = args
        if approved is None:
            raise Pause("needs approval", draft=draft)
        return approved

    def post(self, store, args, approved):
        store.pop("approved", None)  # this answer is used; a rewrite asks again
        return "publish" if approved else "rewrite"


class Publish(Node):
    def prep(self, store):
        return store["draft"], store.get("reviewer", "someone")

    def exec(self, args):
        draft, reviewer = args
        return f"{draft} [approved by {reviewer}]"

    def post(self, store, args, published):
        store["published"] = published


def build_flow(db=None) -> Flow:
    draft, review, publish = Draft(), Review(), Publish()
    draft.then("default", review)
    review.then("publish", publish)
    review.then("rewrite", draft)
    return Flow(start=draft, db=db, flow_name="press-release")


def approve(db: WorkflowDB, run_id: str, approved: bool, reviewer: str,
            feedback: str | None = None) -> dict:
    """What a web handler does with a reviewer's click: any process, no flow needed."""
    updates = {"approved": approved, "reviewer": reviewer}
    if feedback:
        updates["feedback"] = feedback
    queue = db.resume(run_id, updates=updates)
    return {"run_id": run_id, "status": "queued", "queue": queue}


def paused_draft(db: WorkflowDB, run_id: str) -> str:
    """The draft the paused run shows its reviewer (the Pause's data, as recorded)."""
    end = [e for e in db.get_events(run_id) if e["event"] == "flow_end"][-1]
    return json.loads(end["detail"])["data"]["draft"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite:///pocoflow-approval-example.db",
                        help="database URL or path (default: %(default)s)")
    parser.add_argument("--topic", default="PocoFlow 0.3", help="what the release is about")
    parser.add_argument("--reject", action="store_true",
                        help="ask for a rewrite once before approving")
    args = parser.parse_args(argv)

    import anyio

    from pocoflow.worker import Worker

    db = WorkflowDB(args.db)
    flow = build_flow(db)
    worker = Worker(flow, concurrency=2)
    thread = threading.Thread(target=anyio.run, args=(worker.run_async,), daemon=True)
    thread.start()
    try:
        run_id = flow.submit({"topic": args.topic})
        handle = RunHandle.for_run(run_id, db)
        print(f"Submitted {run_id}")

        handle.wait(timeout=60)  # returns when the run pauses
        print(f"Status: {handle.status}; the reviewer sees: {paused_draft(db, run_id)!r}")
        if args.reject:
            print("Reviewer: rewrite it, please ->", approve(db, run_id, False, "alice",
                                                              "add a launch date"))
            handle.wait(timeout=60)
            print(f"Status: {handle.status}; the new draft: {paused_draft(db, run_id)!r}")
        print("Reviewer: approved ->", approve(db, run_id, True, "alice"))
        store = handle.wait(timeout=60)
    finally:
        worker.stop()
        thread.join(timeout=60)

    run = db.get_run(run_id)
    print(f"Status: {run['status']} after {run['total_steps']} steps "
          f"({store['drafts']} draft(s))")
    print(f"Published: {store['published']}")
    ran = [e["node_name"] for e in db.get_events(run_id) if e["event"] == "node_end"]
    print(f"Nodes that finished, in order: {ran}")
    return 0 if run["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
