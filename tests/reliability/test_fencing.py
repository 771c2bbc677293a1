"""Fencing: a process that stalls past its lease and loses its run to a resumer cannot write
to that run again when it wakes, and stops with an error that says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pocoflow import Flow, Node, RunTakenOverError, WorkflowDB
from pocoflow.persistence.records import RunRecords

LEASE = 1.0
WAIT = 60.0

STALLER = textwrap.dedent('''
    """A 20-step counting flow; step 7's exec signals the test (a marker file) and
    sleeps, so the test can SIGSTOP the process there."""
    import sys, time
    from pathlib import Path
    from pocoflow import Flow, Node, WorkflowDB, RunTakenOverError

    class Count(Node):
        def __init__(self, marker, who):
            super().__init__(name="Count")
            self.marker, self.who = marker, who

        def prep(self, store):
            return store["n"]

        def exec(self, n):
            if n == 7 and not Path(self.marker).exists():
                Path(self.marker).write_text("at 7")
                time.sleep(2.0)   # the test freezes the process in here
            return n + 1

        def post(self, store, n, result):
            store["n"] = result
            store["trail"] = [*store["trail"], self.who]
            return "again" if result < 20 else "done"

    def build(url, marker, who, lease):
        count = Count(marker, who)
        count.then("again", count)
        db = WorkflowDB(url, lease_seconds=lease)
        return Flow(start=count, db=db, flow_name="fenced", run_id="fenced-run")

    if __name__ == "__main__":
        url, marker, who, lease = sys.argv[1:5]
        try:
            build(url, marker, who, float(lease)).run({"n": 0, "trail": []})
        except RunTakenOverError as exc:
            print("TAKEN OVER:", exc)
            sys.exit(3)
''')


def wait_for(path: Path, child: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child never reached step 7"
        time.sleep(0.02)


def test_a_stalled_owner_cannot_write_after_its_run_was_taken_over(
        db_url: str, tmp_path: Path) -> None:
    """Process A is frozen (SIGSTOP) inside step 7 for longer than the lease; this process
    resumes the run and completes it at 20 steps; A wakes (SIGCONT), finishes its step and
    tries to go on: nothing it writes lands, it exits with RunTakenOverError, and the run
    stays completed at 20 steps with this process's events after the takeover."""
    script, marker = tmp_path / "staller.py", tmp_path / "at7"
    script.write_text(STALLER)
    WorkflowDB(db_url)
    child = subprocess.Popen([sys.executable, str(script), db_url, str(marker), "A",
                              str(LEASE)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, cwd=tmp_path)
    try:
        wait_for(marker, child)
        os.kill(child.pid, signal.SIGSTOP)
        db = WorkflowDB(db_url, lease_seconds=LEASE)
        deadline = time.monotonic() + WAIT
        while db.get_run("fenced-run")["status"] != "interrupted":  # type: ignore[index]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        sys.path.insert(0, str(tmp_path))
        try:
            import staller  # type: ignore[import-not-found]
        finally:
            sys.path.remove(str(tmp_path))
        store = staller.build(db_url, str(marker), "B", LEASE).resume("fenced-run")
        before_wake = db.get_events("fenced-run")
        os.kill(child.pid, signal.SIGCONT)
        output, _ = child.communicate(timeout=WAIT)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.wait()
        sys.modules.pop("staller", None)

    assert 3 == child.returncode, output
    assert "was taken over by another process" in output
    run = db.get_run("fenced-run")
    assert ("completed", 20) == (run["status"], run["total_steps"])  # type: ignore[index]
    assert (20, ["A"] * 7 + ["B"] * 13) == (store["n"], store["trail"])
    assert before_wake == db.get_events("fenced-run")
    assert 20 == db.load_checkpoint("fenced-run", 19)["n"]


def test_a_write_fenced_out_changes_nothing_and_raises(db_url: str) -> None:
    """A run claimed by another owner: the first owner's next step write raises
    RunTakenOverError, and no event, checkpoint or run field of it lands."""
    import anyio

    class Step(Node):
        def post(self, store: dict[str, int], prep_res: object, exec_res: object) -> str:
            store["n"] = store.get("n", 0) + 1
            if store["n"] == 2:  # another process claims the run right now
                records = RunRecords(db_url)
                run = records.get_run("claimed")
                run["status"] = "interrupted"  # type: ignore[index]
                assert records.claim(run)  # type: ignore[arg-type]
            return "again" if store["n"] < 5 else "done"

    step = Step()
    step.then("again", step)
    flow = Flow(start=step, db_url=db_url, run_id="claimed")
    with pytest.raises(RunTakenOverError, match="'claimed' was taken over"):
        anyio.run(flow.run_async, {})

    db = WorkflowDB(db_url)
    run = db.get_run("claimed")
    assert (1, "running") == (run["total_steps"], run["status"])  # type: ignore[index]
    assert [0] == [c["step"] for c in db.get_checkpoints("claimed")]
    assert ["flow_start", "node_start", "node_end"] == [
        e["event"] for e in db.get_events("claimed")]


def test_the_heartbeat_calls_lost_only_a_run_that_another_owner_holds(db_url: str) -> None:
    """The watcher's heartbeat reports a run as taken over only when its row names
    another owner: not for a row not written yet, nor for a run that just ended."""
    from pocoflow.persistence import queries
    from pocoflow.persistence.connect import write_connection

    records = RunRecords(db_url)
    records.create_run("ended", "f")
    records.update_run("ended", status="completed", owner="me:1:a:b")
    records.create_run("other", "f")
    records.update_run("other", owner="someone:2:c:d")
    with write_connection(records.database.engine) as conn, conn.begin():
        lost = queries.heartbeat(conn, {"not-yet-written": "me:1:a:b", "ended": "me:1:a:b",
                                        "other": "me:1:a:b"})

    assert ["other"] == lost


def test_a_group_commit_writes_the_owned_runs_and_nothing_of_a_fenced_out_one(
        db_url: str) -> None:
    """Two runs' steps committed in one transaction, one of them by an owner that lost its
    run: the other's rows land, the lost one's events, checkpoint and run row do not."""
    from pocoflow.persistence import rows
    from pocoflow.persistence.writer import _Ticket

    records = RunRecords(db_url)
    for run_id, owner in (("kept", "me:1:a:1"), ("lost", "someone-else:2:b:2")):
        records.create_run(run_id, "f")
        records.update_run(run_id, owner=owner)

    def step(run_id: str) -> rows.StepWrite:
        return rows.StepWrite(
            run_id, fence=(run_id, "me:1:a:1"),
            event_rows=[rows.event_row(run_id, "node_end", "t", step=0, node_name="n")],
            run_update=rows.step_done(1, "t", "n", None),
            checkpoint=rows.checkpoint_row(run_id, 0, "n", "full", "{}", [], "t"))

    lane = records.database.writer._lanes[0]
    tickets = [_Ticket(step("kept")), _Ticket(step("lost"))]
    lane._commit_batch(tickets)

    assert [None, RunTakenOverError] == [type(t.error) if t.error else None for t in tickets]
    assert (1, 0) == (records.get_run("kept")["total_steps"] or 0,  # type: ignore[index]
                      records.get_run("lost")["total_steps"] or 0)  # type: ignore[index]
    assert (1, 0) == (len(records.get_events("kept")), len(records.get_events("lost")))
    assert [] == records.get_checkpoints("lost")
