"""Resume: a stopped run continues from its last checkpoint, under its own run_id, without
re-running a committed step: after a failure, a cancel, a Pause and a SIGKILLed process."""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from pocoflow import (
    AsyncNode,
    AsyncWorkflowDB,
    Flow,
    FlowConfigError,
    Node,
    Pause,
    ResumeError,
    RunNotFoundError,
    Store,
    WorkflowDB,
)

WAIT = 60.0  # generous upper bound for another thread/process to reach a point


class Step(Node):
    """Counts its exec calls, fails while its name is in *faults*, appends itself to trail."""

    def __init__(self, name: str, calls: Counter[str], faults: set[str]) -> None:
        super().__init__(name=name)
        self.calls, self.faults = calls, faults

    def exec(self, prep_res: Any) -> None:
        self.calls[self.name] += 1
        if self.name in self.faults:
            raise RuntimeError(f"boom in {self.name}")

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        record(store, self.name)


def record(store: Any, name: str) -> None:
    store["trail"] = [*store.get("trail", []), name]
    store[name] = len(store["trail"])


class AsyncStep(AsyncNode):
    """Step's async twin."""

    def __init__(self, name: str, calls: Counter[str], faults: set[str]) -> None:
        super().__init__(name=name)
        self.calls, self.faults = calls, faults

    async def exec_async(self, prep_res: Any) -> None:
        await anyio.sleep(0)
        self.calls[self.name] += 1
        if self.name in self.faults:
            raise RuntimeError(f"boom in {self.name}")

    async def post_async(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        record(store, self.name)


def chain(nodes: list[Node], db: Any, name: str = "chain") -> Flow:
    for first, second in itertools.pairwise(nodes):
        first.then("default", second)
    return Flow(nodes[0], db=db, flow_name=name)


def steps(calls: Counter[str], faults: set[str], names: str = "ABCD",
          kind: type[Node] = Step) -> list[Node]:
    return [kind(n, calls, faults) for n in names]


def event_list(db: WorkflowDB, run_id: str) -> list[tuple[Any, ...]]:
    return [(e["event"], e["step"], e["node_name"]) for e in db.get_events(run_id)]


FAIL_AT_C_THEN_RESUME = [
    ("flow_start", None, "A"),
    ("node_start", 0, "A"), ("node_end", 0, "A"),
    ("node_start", 1, "B"), ("node_end", 1, "B"),
    ("node_start", 2, "C"), ("node_error", 2, "C"), ("flow_end", 2, None),
    ("flow_resume", 2, "C"),
    ("node_start", 2, "C"), ("node_end", 2, "C"),
    ("node_start", 3, "D"), ("node_end", 3, "D"), ("flow_end", 4, None),
]


# ── after a failure ─────────────────────────────────────────────────────────


def test_resume_after_failure_continues_at_the_failed_node(db_url: str) -> None:
    """The failed node re-runs, earlier nodes do not; same run_id, events appended with
    flow_resume, step numbering continued, final store right, status completed."""
    db = WorkflowDB(db_url)
    calls: Counter[str] = Counter()
    faults = {"C"}
    flow = chain(steps(calls, faults), db)
    with pytest.raises(RuntimeError, match="boom in C"):
        flow.run({"input": 1})
    [run] = db.list_runs()
    run_id = run["run_id"]
    assert "failed" == run["status"]

    faults.clear()
    store = flow.resume(run_id)

    assert {"A": 1, "B": 1, "C": 2, "D": 1} == dict(calls)
    assert {"input": 1, "trail": ["A", "B", "C", "D"], "A": 1, "B": 2, "C": 3, "D": 4} == \
        store.as_dict()
    assert [run_id] == [r["run_id"] for r in db.list_runs()]
    run = db.get_run(run_id)
    assert ("completed", 4, None) == (run["status"], run["total_steps"], run["error_msg"])
    assert FAIL_AT_C_THEN_RESUME == event_list(db, run_id)
    assert [0, 1, 2, 3] == [c["step"] for c in db.get_checkpoints(run_id)]
    assert store.as_dict() == db.load_checkpoint(run_id, 3).as_dict()


@pytest.mark.anyio
async def test_resume_async_after_failure_of_async_nodes(db_url: str) -> None:
    """resume_async on asyncio and trio: same guarantees with AsyncNodes and AsyncWorkflowDB."""
    db = AsyncWorkflowDB(db_url)
    calls: Counter[str] = Counter()
    faults = {"C"}
    flow = chain(steps(calls, faults, kind=AsyncStep), db)
    with pytest.raises(RuntimeError, match="boom in C"):
        await flow.run_async({"input": 1})
    [run] = await db.list_runs()
    faults.clear()
    store = await flow.resume_async(run["run_id"])
    assert {"A": 1, "B": 1, "C": 2, "D": 1} == dict(calls)
    assert ["A", "B", "C", "D"] == store["trail"]
    assert "completed" == (await db.get_run(run["run_id"]))["status"]
    events = [(e["event"], e["step"], e["node_name"])
              for e in await db.get_events(run["run_id"])]
    assert FAIL_AT_C_THEN_RESUME == events


def test_resume_after_failure_at_the_first_node_starts_from_the_input(db_url: str) -> None:
    """A run that failed before any checkpoint resumes at its start node with its input."""
    db = WorkflowDB(db_url)
    calls: Counter[str] = Counter()
    faults = {"A"}
    flow = chain(steps(calls, faults, "AB"), db)
    with pytest.raises(RuntimeError, match="boom in A"):
        flow.run(Store({"input": [1, (2, 3)]}))
    [run] = db.list_runs()
    faults.clear()
    store = flow.resume(run["run_id"])
    assert {"A": 2, "B": 1} == dict(calls)
    assert {"input": [1, (2, 3)], "trail": ["A", "B"], "A": 1, "B": 2} == store.as_dict()
    assert [0, 1] == [c["step"] for c in db.get_checkpoints(run["run_id"])]


# ── after a cancel ──────────────────────────────────────────────────────────


class Waiter(AsyncNode):
    """Awaits for an hour while *hold* is set (telling *entered* first)."""

    def __init__(self, calls: Counter[str], hold: threading.Event,
                 entered: threading.Event) -> None:
        super().__init__(name="W")
        self.calls, self.hold, self.entered = calls, hold, entered

    async def exec_async(self, prep_res: Any) -> None:
        self.calls["W"] += 1
        if self.hold.is_set():
            self.entered.set()
            await anyio.sleep(3600)

    async def post_async(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["trail"] = [*store.get("trail", []), "W"]


def test_resume_after_cancel_while_an_async_node_awaits(db_url: str) -> None:
    """A background run cancelled while an AsyncNode awaits ends 'cancelled'; resuming it
    while it was live is refused, and after the cancel it completes without re-running A."""
    db = WorkflowDB(db_url)
    calls: Counter[str] = Counter()
    hold, entered = threading.Event(), threading.Event()
    hold.set()
    flow = chain([Step("A", calls, set()), Waiter(calls, hold, entered),
                  Step("D", calls, set())], db)
    handle = flow.run_background({"input": 1})
    try:
        assert entered.wait(WAIT)
        with pytest.raises(ResumeError, match="still running"):
            flow.resume(handle.run_id)
    finally:
        handle.cancel()
    partial = handle.wait(WAIT)
    assert ["A"] == partial["trail"]
    assert "cancelled" == handle.status == db.get_run(handle.run_id)["status"]

    hold.clear()
    store = flow.resume(handle.run_id)
    assert {"A": 1, "W": 2, "D": 1} == dict(calls)
    assert {"input": 1, "trail": ["A", "W", "D"], "A": 1, "D": 3} == store.as_dict()
    run = db.get_run(handle.run_id)
    assert ("completed", 3) == (run["status"], run["total_steps"])
    assert ["flow_start", "flow_end", "flow_resume", "flow_end"] == \
        [e["event"] for e in db.get_events(handle.run_id) if e["event"].startswith("flow")]


@pytest.mark.anyio
async def test_resume_async_after_the_caller_cancels_the_run(db_url: str) -> None:
    """On asyncio and trio, a run cancelled by its caller's scope while an AsyncNode awaits
    is recorded 'cancelled'; resume_async completes it without re-running A."""
    calls: Counter[str] = Counter()
    hold, entered = threading.Event(), threading.Event()
    hold.set()
    flow = chain([AsyncStep("A", calls, set()), Waiter(calls, hold, entered),
                  AsyncStep("D", calls, set())], AsyncWorkflowDB(db_url))
    flow.run_id = "cancel-me"
    async with anyio.create_task_group() as group:
        group.start_soon(flow.run_async, {"input": 1})
        with anyio.fail_after(WAIT):
            while not entered.is_set():
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    assert "cancelled" == (await flow.db.get_run("cancel-me"))["status"]
    hold.clear()
    store = await flow.resume_async("cancel-me")
    assert {"A": 1, "W": 2, "D": 1} == dict(calls)
    assert ["A", "W", "D"] == store["trail"]
    assert "completed" == (await flow.db.get_run("cancel-me"))["status"]


# ── after a Pause, in another Flow object (as another process would) ────────


class Approve(Node):
    """Pauses until the store says ``approved``; counts its calls."""

    def __init__(self, calls: Counter[str]) -> None:
        super().__init__(name="Approve")
        self.calls = calls

    def prep(self, store: Any) -> Any:
        self.calls["Approve"] += 1
        return store.get("approved")

    def post(self, store: Any, approved: Any, exec_res: Any) -> None:
        if not approved:
            raise Pause("needs approval", ticket=7)
        store["trail"] = [*store.get("trail", []), f"Approve:{approved}"]


def approval_flow(db_url: str, calls: Counter[str]) -> Flow:
    return chain([Step("A", calls, set()), Approve(calls), Step("D", calls, set())],
                 WorkflowDB(db_url), "approval")


def test_resume_after_pause_with_updates_in_a_new_flow_object(db_url: str) -> None:
    """A paused run resumed by a Flow built anew, with updates=: the pausing node sees the
    update, earlier nodes do not re-run, the run completes under its run_id."""
    calls: Counter[str] = Counter()
    first = approval_flow(db_url, calls)
    paused = first.run({"input": 1})
    assert ["A"] == paused["trail"]
    db = WorkflowDB(db_url)
    [run] = db.list_runs()
    assert "paused" == run["status"]
    flow_end = db.get_events(run["run_id"])[-1]
    assert {"reason": "needs approval", "data": {"ticket": 7}} == json.loads(flow_end["detail"])

    second = approval_flow(db_url, calls)
    store = second.resume(run["run_id"], updates={"approved": "yes"})
    assert {"A": 1, "Approve": 2, "D": 1} == dict(calls)
    assert ["A", "Approve:yes", "D"] == store["trail"]
    assert "yes" == store["approved"]
    assert "completed" == db.get_run(run["run_id"])["status"]
    [resumed] = [e for e in db.get_events(run["run_id"]) if e["event"] == "flow_resume"]
    assert ["approved"] == json.loads(resumed["detail"])["updated_keys"]
    assert "yes" == db.load_checkpoint(run["run_id"], 2)["approved"]


class Log(Step):
    """Step that appends to ``store["log"]`` in place (never assigns it), naming the
    transient ``client`` it used."""

    def prep(self, store: Any) -> Any:
        return store["client"]

    def post(self, store: Any, client: Any, exec_res: Any) -> None:
        store["log"].append(f"{self.name} via {client.name}")


def test_run_resumed_twice_keeps_transient_keys_out_and_in_place_appends(db_url: str) -> None:
    """A run that fails, is resumed, fails again and is resumed again completes: each resume
    re-supplies the transient client through updates=, in-place list appends after a resume
    are checkpointed, steps keep counting, every checkpoint loads right."""
    db = WorkflowDB(db_url)
    calls: Counter[str] = Counter()
    faults = {"B", "D"}
    flow = chain([Log(n, calls, faults) for n in "ABCDE"], db)
    with pytest.raises(RuntimeError, match="boom in B"):
        flow.run(Store({"log": [], "client": SimpleNamespace(name="c1")}, transient={"client"}))
    [run] = db.list_runs()
    run_id = run["run_id"]
    faults.discard("B")
    with pytest.raises(RuntimeError, match="boom in D"):
        flow.resume(run_id, updates={"client": SimpleNamespace(name="c2")})
    assert "failed" == db.get_run(run_id)["status"]
    faults.clear()
    store = flow.resume(run_id, updates={"client": SimpleNamespace(name="c3")})

    assert {"A": 1, "B": 2, "C": 1, "D": 2, "E": 1} == dict(calls)
    assert ["A via c1", "B via c2", "C via c2", "D via c3", "E via c3"] == store["log"]
    assert "completed" == db.get_run(run_id)["status"]
    assert 2 == [e["event"] for e in db.get_events(run_id)].count("flow_resume")
    checkpoints = db.get_checkpoints(run_id)
    assert [0, 1, 2, 3, 4] == [c["step"] for c in checkpoints]
    for step in range(5):
        loaded = db.load_checkpoint(run_id, step)
        assert store["log"][: step + 1] == loaded["log"]
        assert "client" not in loaded
        assert {"client"} == set(loaded.transient)


def test_a_run_failed_at_its_first_node_keeps_its_transient_key_when_resumed(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A run that fails before its first checkpoint goes on from its input: the key its
    store declared transient is transient there too, so the live client given again in
    updates= is used, never checkpointed, and no 'cannot encode' warning is logged
    (it was, as the key had become an ordinary one)."""
    db = WorkflowDB(db_url)
    calls: Counter[str] = Counter()
    faults = {"A"}
    flow = chain([Log(n, calls, faults) for n in "AB"], db)
    live = SimpleNamespace(name="c1", lock=threading.Lock())  # no codec encodes it
    with pytest.raises(RuntimeError, match="boom in A"):
        flow.run(Store({"log": [], "client": live}, transient={"client"}))
    [run] = db.list_runs()
    assert [] == db.get_checkpoints(run["run_id"])
    faults.clear()
    with caplog.at_level(logging.WARNING, logger="pocoflow"):
        store = flow.resume(run["run_id"], updates={
            "client": SimpleNamespace(name="c2", lock=threading.Lock())})

    assert ["A via c2", "B via c2"] == store["log"]
    assert [] == [r.getMessage() for r in caplog.records if "encode" in r.getMessage()]
    for checkpoint in db.get_checkpoints(run["run_id"]):
        assert ["client"] == json.loads(checkpoint["excluded"])


# ── what cannot be resumed ──────────────────────────────────────────────────


def test_resume_of_a_completed_run_raises_resume_error(db_url: str) -> None:
    """A completed run has nothing to resume: ResumeError (a RuntimeError) naming the run,
    and the run is left completed with no new events."""
    db = WorkflowDB(db_url)
    calls: Counter[str] = Counter()
    flow = chain(steps(calls, set(), "AB"), db)
    flow.run({})
    [run] = db.list_runs()
    before = db.get_events(run["run_id"])
    with pytest.raises(ResumeError, match=run["run_id"]) as caught:
        flow.resume(run["run_id"])
    assert isinstance(caught.value, RuntimeError)
    assert "completed" in str(caught.value)
    assert {"A": 1, "B": 1} == dict(calls)
    assert before == db.get_events(run["run_id"])
    assert "completed" == db.get_run(run["run_id"])["status"]


def test_resume_of_an_unknown_run_raises_run_not_found(db_url: str) -> None:
    """An unknown run_id is a RunNotFoundError, which is a KeyError, naming the run."""
    flow = chain(steps(Counter(), set(), "AB"), WorkflowDB(db_url))
    with pytest.raises(RunNotFoundError, match="no-such-run") as caught:
        flow.resume("no-such-run")
    assert isinstance(caught.value, KeyError)


def test_resume_with_a_different_graph_raises_resume_error_naming_the_node(
        db_url: str) -> None:
    """A flow that lacks the node the run stopped before refuses to resume it, naming it."""
    db = WorkflowDB(db_url)
    calls: Counter[str] = Counter()
    with pytest.raises(RuntimeError):
        chain(steps(calls, {"C"}, "ABC"), db).run({})
    [run] = db.list_runs()
    other = chain(steps(calls, set(), "ABX"), db)
    with pytest.raises(ResumeError, match="'C'"):
        other.resume(run["run_id"])
    assert 0 == calls["X"]


def test_resume_without_a_database_raises_flow_config_error() -> None:
    """A Flow without a database has no runs to resume: FlowConfigError."""
    flow = chain(steps(Counter(), set(), "AB"), None)
    with pytest.raises(FlowConfigError, match="database"):
        flow.resume("anything")


def test_run_with_resume_from_still_starts_a_new_run(db_url: str) -> None:
    """run(store, resume_from=node) works as in 0.2: a new run starting at that node."""
    db = WorkflowDB(db_url)
    calls: Counter[str] = Counter()
    nodes = steps(calls, {"C"}, "ABCD")
    flow = chain(nodes, db)
    with pytest.raises(RuntimeError):
        flow.run({})
    [failed] = db.list_runs()
    calls.clear()
    nodes[2].faults.clear()
    saved = db.load_checkpoint(failed["run_id"], 1)
    store = flow.run(saved, resume_from=nodes[2])
    assert {"C": 1, "D": 1} == dict(calls)
    assert ["A", "B", "C", "D"] == store["trail"]
    runs = {r["run_id"]: r for r in db.list_runs()}
    assert 2 == len(runs)
    [new_id] = set(runs) - {failed["run_id"]}
    assert ("completed", "failed") == (runs[new_id]["status"], runs[failed["run_id"]]["status"])
    assert ("flow_start", None, "C") == event_list(db, new_id)[0]
    assert [0, 1] == [c["step"] for c in db.get_checkpoints(new_id)]


# ── two resumes at once ─────────────────────────────────────────────────────


def test_two_concurrent_resumes_exactly_one_proceeds(db_url: str) -> None:
    """Two threads resume one failed run at the same moment, each with its own Flow: one
    runs it to completion, the other gets ResumeError; the failed node re-runs once."""
    db = WorkflowDB(db_url)
    calls: Counter[str] = Counter()
    faults = {"C"}
    with pytest.raises(RuntimeError):
        chain(steps(calls, faults, "ABCD"), db).run({})
    [run] = db.list_runs()
    faults.clear()
    release, refused = threading.Event(), threading.Event()

    class Slow(Step):
        def exec(self, prep_res: Any) -> None:
            super().exec(prep_res)
            release.wait(WAIT)  # stay running until the other resume has been refused

    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def resume_in_thread() -> None:
        flow = chain([Step("A", calls, set()), Step("B", calls, set()),
                      Slow("C", calls, set()), Step("D", calls, set())], WorkflowDB(db_url))
        barrier.wait(WAIT)
        try:
            flow.resume(run["run_id"])
            outcomes.append("completed")
        except ResumeError:
            outcomes.append("refused")
            refused.set()

    threads = [threading.Thread(target=resume_in_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    refused.wait(WAIT)
    release.set()
    for thread in threads:
        thread.join(WAIT)
    assert ["completed", "refused"] == sorted(outcomes)
    assert {"A": 1, "B": 1, "C": 2, "D": 1} == dict(calls)
    assert "completed" == db.get_run(run["run_id"])["status"]
    assert 1 == [e["event"] for e in db.get_events(run["run_id"])].count("flow_resume")


# ── the key test: a process SIGKILLed mid-run ───────────────────────────────

CHILD_SCRIPT = '''\
"""Six sync nodes N1..N6; each appends its name to a side file (flushed, fsynced) in exec.
Run: python killme_flow.py DB_URL SIDE_FILE RUN_ID KILL_AT; KILL_AT "node4": N4 sleeps until
killed; "flow_end": the process kills itself after its last step, before the run's end."""
import os
import signal
import sys
import time

from pocoflow import Flow, Node


class Mark(Node):
    def __init__(self, name, side, sleep_s):
        super().__init__(name=name)
        self.side, self.sleep_s = side, sleep_s

    def exec(self, prep_res):
        with open(self.side, "a") as handle:
            handle.write(self.name + "\\n")
            handle.flush()
            os.fsync(handle.fileno())
        if self.sleep_s:
            time.sleep(self.sleep_s)

    def post(self, store, prep_res, exec_res):
        store["trail"] = [*store.get("trail", []), self.name]
        store[self.name] = len(store["trail"])


def build(db_url, side, run_id=None, sleep_at_n4=0.0):
    nodes = [Mark(f"N{i}", side, sleep_at_n4 if i == 4 else 0.0) for i in range(1, 7)]
    for first, second in zip(nodes, nodes[1:]):
        first.then("default", second)
    return Flow(nodes[0], db_url=db_url, run_id=run_id, flow_name="killme")


if __name__ == "__main__":
    db_url, side, run_id, kill_at = sys.argv[1:5]
    flow = build(db_url, side, run_id, sleep_at_n4=3600.0 if kill_at == "node4" else 0.0)
    if kill_at == "flow_end":  # sinks hear a step once it is recorded: die after N6's
        flow.add_sink(lambda event: event.kind == "node_end" and event.node_name == "N6"
                      and os.kill(os.getpid(), 9))
    flow.run({"started_by": os.getpid()})
'''


def load_script(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("killme_flow", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("kill_at", "committed", "side_lines"), [
    ("node4", 3, ["N1", "N2", "N3", "N4", "N4", "N5", "N6"]),
    ("flow_end", 6, ["N1", "N2", "N3", "N4", "N5", "N6"]),
])
def test_sigkilled_run_is_interrupted_and_resumes_without_redoing_committed_steps(
        db_url: str, tmp_path: Path, kill_at: str, committed: int, side_lines: list[str]) -> None:
    """A child process is SIGKILLed while node 4 runs (or after its last step, before the run's
    end is written): the run shows as interrupted, the same graph built here resumes it, and
    no node whose step was committed runs again (node 4, killed mid-way, runs again); final
    store right, status completed, steps numbered 0-5."""
    script, side = tmp_path / "killme_flow.py", tmp_path / "side.txt"
    script.write_text(CHILD_SCRIPT)
    side.touch()
    run_id = "killme-run"
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen([sys.executable, str(script), db_url, str(side), run_id,
                                  kill_at], stdout=log, stderr=subprocess.STDOUT)
    try:
        if kill_at == "node4":
            deadline = time.monotonic() + WAIT
            while "N4" not in side.read_text().split():
                assert child.poll() is None, (tmp_path / "child.log").read_text()
                assert time.monotonic() < deadline, "the child never reached N4"
                time.sleep(0.02)
            os.kill(child.pid, signal.SIGKILL)
        child.wait(WAIT)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert -signal.SIGKILL == child.returncode, (tmp_path / "child.log").read_text()

    db = WorkflowDB(db_url)
    run = db.get_run(run_id)
    assert "interrupted" == run["status"]
    assert f":{child.pid}:" in run["owner"]
    assert list(range(committed)) == [c["step"] for c in db.get_checkpoints(run_id)]

    store = load_script(script).build(db_url, str(side)).resume(run_id)

    assert side_lines == side.read_text().split()
    trail = [f"N{i}" for i in range(1, 7)]
    assert {"started_by": child.pid, "trail": trail, **{n: i + 1 for i, n in enumerate(trail)}} \
        == store.as_dict()
    run = db.get_run(run_id)
    assert ("completed", 6, None) == (run["status"], run["total_steps"], run["error_msg"])
    assert list(range(6)) == [c["step"] for c in db.get_checkpoints(run_id)]
    assert store.as_dict() == db.load_checkpoint(run_id, 5).as_dict()
    ends = [(e["step"], e["node_name"]) for e in db.get_events(run_id) if e["event"] == "node_end"]
    assert list(enumerate(trail)) == ends
    assert 1 == [e["event"] for e in db.get_events(run_id)].count("flow_resume")
