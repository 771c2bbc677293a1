"""Cancelling a run from another process: through the database, as the monitor and the
CLI do, the owner's watcher sees the request and the run ends cancelled, checkpointed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pocoflow import Flow, Node, RunNotFoundError, WorkflowDB

WAIT = 30.0

RUNNER = textwrap.dedent('''
    """Step 0 writes a key; step 1 waits (async: sleeps an hour; sync: a 1.5 s exec)."""
    import sys, time, anyio
    from pocoflow import AsyncNode, Flow, Node

    class First(Node):
        def post(self, store, prep_res, exec_res):
            store["first"] = "done"

    class Wait(AsyncNode):
        async def exec_async(self, prep_res):
            print("waiting", flush=True)
            await anyio.sleep(3600)

    class SyncWait(Node):
        def exec(self, prep_res):
            print("waiting", flush=True)
            time.sleep(1.5)
            return "finished its attempt"

        def post(self, store, prep_res, exec_res):
            store["attempt"] = exec_res

    url, run_id, kind = sys.argv[1:4]
    first, last = First(), Node(name="Never")
    wait = Wait() if kind == "async" else SyncWait()
    first.then("default", wait)
    wait.then("default", last)
    store = Flow(start=first, db_url=url, run_id=run_id, flow_name="cancel").run({})
    print("returned", sorted(store.keys()), flush=True)
''')


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_cancel_run_from_another_process_stops_the_run(db_url: str, tmp_path: Path,
                                                       kind: str) -> None:
    """db.cancel_run in this process, on a run another process is running: "requested";
    within a couple of seconds the owner stops (an awaiting node at once, a sync exec after
    its attempt, before the next node) and the run is cancelled with its checkpoints."""
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    WorkflowDB(db_url)
    child = subprocess.Popen([sys.executable, str(script), db_url, "far-run", kind],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "waiting\n" == child.stdout.readline()  # type: ignore[union-attr]
        db = WorkflowDB(db_url)
        asked = time.monotonic()
        assert "requested" == db.cancel_run("far-run")
        output, _ = child.communicate(timeout=WAIT)
        took = time.monotonic() - asked
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert 0 == child.returncode, output
    assert took < WAIT
    run = db.get_run("far-run")
    assert ("cancelled", "cancelled") == (run["status"], run["error_msg"])  # type: ignore[index]
    assert run["cancel_requested_at"] is not None  # type: ignore[index]
    names = [e["node_name"] for e in db.get_events("far-run") if e["event"] == "node_end"]
    if kind == "async":  # cut short where it awaited; its start has a matching end
        assert ["First"] == names
        assert "returned ['first']" in output
        assert [("node_start", "Wait"), ("node_cancel", "Wait"), ("flow_end", None)] == [
            (e["event"], e["node_name"]) for e in db.get_events("far-run")][-3:]
    else:  # the attempt finished and its post ran; the next node never started
        assert ["First", "SyncWait"] == names
        assert "finished its attempt" == db.load_checkpoint("far-run", 1)["attempt"]
    assert "Never" not in {e["node_name"] for e in db.get_events("far-run")}


def test_cancel_run_of_a_stopped_run_marks_it_cancelled_and_of_an_ended_one_does_nothing(
        db_url: str) -> None:
    """A paused or interrupted run (no process runs it) is marked cancelled at once, with
    error_msg "cancelled"; a completed run stays completed; an unknown run id is a
    RunNotFoundError."""
    from pocoflow import Pause

    class Ask(Node):
        def exec(self, prep_res: object) -> None:
            raise Pause("approve?")

    Flow(start=Ask(), db_url=db_url, run_id="paused-run").run({})
    Flow(start=Node(), db_url=db_url, run_id="done-run").run({})
    db = WorkflowDB(db_url)

    assert "cancelled" == db.cancel_run("paused-run")
    paused = db.get_run("paused-run")
    assert ("cancelled", "cancelled") == (paused["status"], paused["error_msg"])  # type: ignore[index]
    assert "completed" == db.cancel_run("done-run")
    assert "completed" == db.get_run("done-run")["status"]  # type: ignore[index]
    with pytest.raises(RunNotFoundError, match="No run 'nope'"):
        db.cancel_run("nope")


def test_a_cancelled_paused_run_can_still_be_resumed(db_url: str) -> None:
    """Cancelling a paused run keeps its checkpoint: a resume later goes on from there."""
    from pocoflow import Pause

    class Ask(Node):
        def prep(self, store: dict[str, object]) -> object:
            return store.get("answer")

        def exec(self, answer: object) -> object:
            if answer is None:
                raise Pause("approve?")
            return answer

        def post(self, store: dict[str, object], prep_res: object, exec_res: object) -> None:
            store["result"] = exec_res

    flow = Flow(start=Ask(), db_url=db_url, run_id="later")
    flow.run({})
    WorkflowDB(db_url).cancel_run("later")
    store = flow.resume("later", updates={"answer": "yes"})

    assert "yes" == store["result"]
    run = WorkflowDB(db_url).get_run("later")
    assert ("completed", None) == (run["status"], run["error_msg"])  # type: ignore[index]
