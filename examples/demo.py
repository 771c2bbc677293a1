"""The main demo: a small research flow recorded in a local SQLite file, offline.

    python examples/demo.py [pocoflow.db]

It runs a flow whose writer node fails once (a flaky "model"), then resumes
that run by its run_id: the steps already recorded are not run again. Every
step's events and checkpoint land in the database; look at them with

    pocoflow runs ls pocoflow.db              # the runs
    pocoflow runs show pocoflow.db RUN_ID     # one run's events
    pocoflow monitor pocoflow.db              # in a browser
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from pocoflow import Flow, Node, Store, WorkflowDB

ATTEMPTS = {"write": 0}


def fake_llm(prompt: str) -> str:
    """An offline stand-in for a model call."""
    return f"[model] {prompt[:60]}"


class Plan(Node):
    def prep(self, store):
        return store["topic"]

    def exec(self, topic):
        return [f"{topic}: history", f"{topic}: habitat", f"{topic}: diet"]

    def post(self, store, topic, questions):
        store["questions"] = questions
        store["started"] = datetime.now(timezone.utc)  # checkpoints keep datetimes
        return "research"


class Research(Node):
    """Answers one question per step, appending to a chat-style history."""

    def prep(self, store):
        return store["questions"][len(store["notes"])]

    def exec(self, question):
        return fake_llm(f"Answer briefly: {question}")

    def post(self, store, question, answer):
        store["notes"].append({"q": question, "a": answer})  # only the new item is stored
        return "more" if len(store["notes"]) < len(store["questions"]) else "write"


class Write(Node):
    def prep(self, store):
        return store["notes"]

    def exec(self, notes):
        ATTEMPTS["write"] += 1
        if ATTEMPTS["write"] == 1:
            raise ConnectionError("the model endpoint dropped the connection")
        return fake_llm("Write a report from: " + "; ".join(n["a"] for n in notes))

    def post(self, store, notes, report):
        store["report"] = report
        return None


def build(db_path: str) -> Flow:
    plan, research, write = Plan(), Research(), Write()
    plan.then("research", research)
    research.then("more", research).then("write", write)
    return Flow(start=plan, db_path=db_path, flow_name="research")


def main(db_path: str = "pocoflow.db") -> Store:
    flow = build(db_path)
    store = Store({"topic": "ducks", "notes": []})
    try:
        flow.run(store)
    except ConnectionError as exc:
        print(f"run failed: {exc}")
    db = WorkflowDB(db_path)
    failed = db.list_runs(1, status="failed")[0]
    print(f"run {failed['run_id']} is {failed['status']} at node {failed['current_node']!r} "
          f"after {failed['total_steps']} steps")

    result = build(db_path).resume(failed["run_id"])  # a fresh Flow, as a new process would
    run = db.get_run(failed["run_id"])
    print(f"resumed: {run['status']} in {run['total_steps']} steps; report: {result['report']}")
    print(f"\nrecorded in {db_path}. Look at it with:\n"
          f"  pocoflow runs ls {db_path}\n  pocoflow runs show {db_path} {failed['run_id']}\n"
          f"  pocoflow monitor {db_path}      (then open http://127.0.0.1:8501)")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db_path", nargs="?", default="pocoflow.db",
                        help="the SQLite file to record the runs in (default: pocoflow.db)")
    main(parser.parse_args().db_path)
