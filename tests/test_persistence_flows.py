"""Flows recorded in the run database, on every backend (the ``db_url`` fixture).

What a user relies on when a Flow has a database: the run row's final status
is true (completed, failed, cancelled, paused), the event log has the 0.2
sequence, every step has a checkpoint holding the whole store of that step,
checkpoints round-trip rich values or refuse them clearly, and many runs at
once (tasks or threads) are all recorded.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from pocoflow import (
    AsyncNode,
    AsyncWorkflowDB,
    CheckpointEncodeError,
    Flow,
    Node,
    Pause,
    Store,
    WorkflowDB,
)
from pocoflow.errors import MaxStepsExceeded
from pocoflow.events import NodeFinished

EVENT_LIMIT = 60.0  # seconds: a guard against a hang, never a timed assertion


@dataclasses.dataclass(frozen=True)
class Point:
    """A dataclass store value (importable, so checkpoints can rebuild it)."""

    x: int
    y: int


class Count(Node):
    """Loops to itself until ``store["i"]`` reaches ``store["until"]``, then goes "done".

    Each step sets i, appends to "log" (an append-only list), rewrites "const"
    with the same value, creates "tmp" at i == 2 and deletes it at i == 4.
    """

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        i = store.get("i", 0) + 1
        store["i"] = i
        store["log"] = [*store.get("log", []), f"entry {i}"]
        store["const"] = "same"
        if i == 2:
            store["tmp"] = {"scratch": [1, 2]}
        if i == 4:
            del store["tmp"]
        return "again" if i < store["until"] else "done"


class Finish(Node):
    """Marks the store finished; the last node of a flow."""

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["finished"] = True


class Put(Node):
    """Writes ``store[key] = value()`` (a factory, so each run gets fresh objects)."""

    def __init__(self, key: str, value: Callable[[], Any], *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.key = key
        self.value = value

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store[self.key] = self.value()


class Boom(Node):
    """exec raises ValueError("boom")."""

    def exec(self, prep_res: Any) -> None:
        raise ValueError("boom")


class Forever(Node):
    """Loops to itself with no exit."""

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        store["n"] = store.get("n", 0) + 1
        return "again"


class Gate(AsyncNode):
    """Signals *started*, then awaits until *gate* is set (a threading.Event) or is cancelled."""

    def __init__(self, started: threading.Event, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.started = started
        self.gate = gate

    async def exec_async(self, prep_res: Any) -> None:
        self.started.set()
        if self.gate is None:
            await anyio.sleep(EVENT_LIMIT)
        else:
            await anyio.to_thread.run_sync(self.gate.wait, EVENT_LIMIT)

    async def post_async(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["passed"] = True


class AsyncAdd(AsyncNode):
    """Adds 1 to ``store["total"]`` after a turn of the event loop."""

    async def exec_async(self, prep_res: Any) -> None:
        await anyio.sleep(0)

    async def post_async(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["total"] = store.get("total", 0) + 1


def counting_flow(until: int, **db: Any) -> Flow:
    """Count (looping until *until*) → Finish."""
    count = Count()
    count.then("again", count)
    count.then("done", Finish())
    return Flow(count, flow_name="count", max_steps=50, **db)


def chain(*nodes: Node) -> Node:
    """Wire nodes one after another on "default"; return the first."""
    for before, after in itertools.pairwise(nodes):
        before.then("default", after)
    return nodes[0]


def only_run(db: WorkflowDB) -> dict[str, Any]:
    runs = db.list_runs()
    assert 1 == len(runs)
    return runs[0]


def stores_after_each_step(flow: Flow) -> list[dict[str, Any]]:
    """A list the flow's node_end hook fills with a deep copy of the store after each step."""
    seen: list[dict[str, Any]] = []
    flow.on("node_end", lambda name, action, elapsed, store:
            seen.append(copy.deepcopy(dict(store))))
    return seen


# ── a completed run ─────────────────────────────────────────────────────────


@pytest.mark.parametrize("full_every", [1000, 3, 1])
def test_completed_run_records_status_events_and_a_full_store_per_step(
        db_url: str, full_every: int) -> None:
    """A completed run: row completed with total_steps, 0.2 event sequence, and for every
    step a checkpoint whose get_checkpoints and load_checkpoint store is the store then."""
    db = WorkflowDB(db_url, full_every=full_every)
    flow = counting_flow(6, db=db)
    expected = stores_after_each_step(flow)

    final = flow.run({"until": 6, "input": "x"})

    run = only_run(db)
    run_id = run["run_id"]
    assert run_id.startswith("count-")
    assert ("completed", 7, None) == (run["status"], run["total_steps"], run["error_msg"])
    assert run["completed_at"] is not None
    events = db.get_events(run_id)
    assert ["flow_start", *["node_start", "node_end"] * 7, "flow_end"] == [
        e["event"] for e in events]
    assert [*range(7)] == [e["step"] for e in events if e["event"] == "node_end"]
    assert ["again"] * 5 + ["done", "default"] == [
        e["action"] for e in events if e["event"] == "node_end"]
    assert 7 == events[-1]["step"]
    checkpoints = db.get_checkpoints(run_id)
    assert [*range(7)] == [c["step"] for c in checkpoints]
    assert ["Count"] * 6 + ["Finish"] == [c["node_name"] for c in checkpoints]
    assert expected == [json.loads(c["store_json"]) for c in checkpoints]
    assert expected == [db.load_checkpoint(run_id, step).as_dict() for step in range(7)]
    assert final.as_dict() == expected[-1]


@pytest.mark.anyio
async def test_run_async_records_on_asyncio_and_trio(db_url: str) -> None:
    """await run_async records the run on both anyio backends."""
    db = AsyncWorkflowDB(db_url)
    flow = counting_flow(3, db=db)

    await flow.run_async({"until": 3})

    [run] = await db.list_runs()
    assert ("completed", 4) == (run["status"], run["total_steps"])
    assert [0, 1, 2, 3] == [c["step"] for c in await db.get_checkpoints(run["run_id"])]
    assert {"until": 3, "i": 3, "log": ["entry 1", "entry 2", "entry 3"], "const": "same",
            "tmp": {"scratch": [1, 2]}, "finished": True} == (
        await db.load_checkpoint(run["run_id"], 3)).as_dict()


@pytest.mark.parametrize("how", ["WorkflowDB", "AsyncWorkflowDB", "db_url", "async_url"])
def test_flow_accepts_each_way_of_naming_the_database(db_url: str, how: str) -> None:
    """Flow(db=WorkflowDB), Flow(db=AsyncWorkflowDB), Flow(db_url=...) with a sync or an
    async driver's URL (sqlite+aiosqlite, postgresql+asyncpg) all record the run."""
    async_url = db_url.replace("sqlite://", "sqlite+aiosqlite://").replace(
        "postgresql+psycopg://", "postgresql+asyncpg://")
    assert async_url != db_url
    given = {"WorkflowDB": {"db": WorkflowDB(db_url)},
             "AsyncWorkflowDB": {"db": AsyncWorkflowDB(db_url)},
             "db_url": {"db_url": db_url}, "async_url": {"db_url": async_url}}[how]

    counting_flow(2, **given).run({"until": 2})

    run = only_run(WorkflowDB(db_url))
    assert ("completed", 3) == (run["status"], run["total_steps"])
    assert 3 == len(WorkflowDB(db_url).get_checkpoints(run["run_id"]))


@pytest.mark.parametrize("given", [("db_path", "db_url"), ("db_path", "db"), ("db_url", "db"),
                                   ("db_path", "db_url", "db")])
def test_flow_with_two_databases_raises_value_error(tmp_path: Path,
                                                    given: tuple[str, ...]) -> None:
    """Flow given more than one of db_path/db_url/db is a ValueError naming them."""
    path = tmp_path / "x.db"
    values = {"db_path": path, "db_url": f"sqlite:///{path}", "db": str(path)}

    with pytest.raises(ValueError, match=" and ".join(given)):
        Flow(Finish(), **{name: values[name] for name in given})


# ── runs that end early ─────────────────────────────────────────────────────


def test_failed_run_is_recorded_failed_and_the_error_is_reraised(db_url: str) -> None:
    """A node error: run failed with error_msg, a node_error event, the step before it
    checkpointed, and the exception reaches the caller."""
    db = WorkflowDB(db_url)
    flow = Flow(chain(Put("a", lambda: 1, name="Load"), Boom()), db=db, flow_name="fails")

    with pytest.raises(ValueError, match="boom"):
        flow.run({})

    run = only_run(db)
    assert ("failed", "boom") == (run["status"], run["error_msg"])
    assert (1, "Boom") == (run["total_steps"], run["current_node"])
    assert run["completed_at"] is not None
    events = db.get_events(run["run_id"])
    assert ["flow_start", "node_start", "node_end", "node_start", "node_error", "flow_end"] == [
        e["event"] for e in events]
    assert (1, "Boom", "boom") == (events[4]["step"], events[4]["node_name"],
                                   events[4]["error_msg"])
    assert "boom" == events[-1]["error_msg"]
    assert [0] == [c["step"] for c in db.get_checkpoints(run["run_id"])]
    assert {"a": 1} == db.load_checkpoint(run["run_id"], 0).as_dict()


def test_max_steps_exceeded_leaves_the_run_failed_not_running(db_url: str) -> None:
    """A run stopped by max_steps is recorded failed (0.2 left it running forever)."""
    db = WorkflowDB(db_url)
    forever = Forever()
    forever.then("again", forever)
    flow = Flow(forever, db=db, max_steps=3, flow_name="loop")

    with pytest.raises(MaxStepsExceeded, match="max_steps"):
        flow.run({})

    run = only_run(db)
    assert ("failed", 3) == (run["status"], run["total_steps"])
    assert "max_steps" in run["error_msg"]
    assert [0, 1, 2] == [c["step"] for c in db.get_checkpoints(run["run_id"])]
    assert {"n": 3} == db.load_checkpoint(run["run_id"], 2).as_dict()
    assert "flow_end" == db.get_events(run["run_id"])[-1]["event"]


def test_cancelled_background_run_is_recorded_cancelled(db_url: str) -> None:
    """run_background(...).cancel() of an AsyncNode that awaits records status cancelled,
    with error_msg "cancelled" (0.2's documented way to tell a cancel from a failure)."""
    db = WorkflowDB(db_url)
    started = threading.Event()
    flow = Flow(chain(Put("a", lambda: 1), Gate(started), Finish()), db=db, flow_name="cancel")

    handle = flow.run_background({})
    assert started.wait(EVENT_LIMIT)
    handle.cancel()
    partial = handle.wait(EVENT_LIMIT)

    run = db.get_run(handle.run_id)
    assert run is not None
    assert ("cancelled", "cancelled") == (run["status"], run["error_msg"])
    assert "cancelled" == handle.status
    assert {"a": 1} == partial.as_dict()
    assert [0] == [c["step"] for c in db.get_checkpoints(handle.run_id)]
    assert "flow_end" == db.get_events(handle.run_id)[-1]["event"]


@pytest.mark.anyio
async def test_an_interrupt_once_a_step_is_recorded_keeps_that_step_counted(db_url: str) -> None:
    """A Ctrl-C landing after a step's commit, before the engine counts the step (here
    from a sink that hears the step after the database): the run ends cancelled and its
    row still counts the step its checkpoint holds, so the monitor and ``pocoflow runs``
    agree with what a resume will do."""
    db = WorkflowDB(db_url)

    def interrupt(event: Any) -> None:
        if isinstance(event, NodeFinished) and event.step == 1:
            raise KeyboardInterrupt

    flow = Flow(chain(Put("a", lambda: 1), Put("b", lambda: 2), Finish()), db=db,
                flow_name="interrupted", sinks=[interrupt])
    store = Store()
    with pytest.raises(KeyboardInterrupt):
        await flow.run_async(store)

    run = db.get_run(store.run_id)
    assert run is not None
    assert [0, 1] == [c["step"] for c in db.get_checkpoints(store.run_id)]
    assert ("cancelled", 2) == (run["status"], run["total_steps"])
    assert {"a": 1, "b": 2} == db.load_checkpoint(store.run_id, 1)


@pytest.mark.anyio
async def test_a_ctrl_c_inside_a_node_ends_its_step_with_node_cancel(db_url: str) -> None:
    """A Ctrl-C that lands inside a node as KeyboardInterrupt (trio raises it in the
    task; asyncio cancels the task instead) ends the step with node_cancel, as a cancel
    does, and the run is recorded cancelled: the same events on both backends."""
    db = WorkflowDB(db_url)

    class Interrupted(Node):
        def prep(self, store: Any) -> None:
            raise KeyboardInterrupt

    flow = Flow(chain(Put("a", lambda: 1), Interrupted(), Finish()), db=db,
                flow_name="ctrl-c")
    store = Store()
    with pytest.raises(KeyboardInterrupt):
        await flow.run_async(store)

    events = [e["event"] for e in db.get_events(store.run_id)]
    assert ["node_start", "node_cancel", "flow_end"] == events[-3:]
    assert "cancelled" == db.get_run(store.run_id)["status"]  # type: ignore[index]


def test_paused_run_is_recorded_paused_with_its_reason(db_url: str) -> None:
    """A node raising Pause leaves the run paused, with reason and data in flow_end's detail."""
    class Approve(Node):
        def exec(self, prep_res: Any) -> None:
            raise Pause("need approval", amount=5)

    db = WorkflowDB(db_url)
    flow = Flow(chain(Put("a", lambda: 1), Approve(), Finish()), db=db, flow_name="pause")

    flow.run({})

    run = only_run(db)
    assert ("paused", 1, None) == (run["status"], run["total_steps"], run["completed_at"])
    end = db.get_events(run["run_id"])[-1]
    assert "flow_end" == end["event"]
    assert {"reason": "need approval", "data": {"amount": 5}} == json.loads(end["detail"])


@pytest.mark.parametrize("shape", ["circular", "deep"])
def test_pause_data_json_cannot_hold_still_pauses_the_run(db_url: str, shape: str) -> None:
    """Pause data that JSON cannot hold (a dict that holds itself; lists 2,000 deep) does
    not leave the run 'running': it ends paused with its reason, the data's place says
    why it was not stored, and the run resumes."""
    value: Any
    if shape == "circular":
        value = {"a": 1}
        value["self"] = value
    else:
        value = inner = []
        for _ in range(2000):
            inner.append([])
            inner = inner[0]

    class Approve(Node):
        def prep(self, store: Any) -> Any:
            return store.get("approved")

        def exec(self, approved: Any) -> None:
            if not approved:
                raise Pause("need approval", draft=value)

    db = WorkflowDB(db_url)
    flow = Flow(chain(Put("a", lambda: 1), Approve(), Finish()), db=db, flow_name="pause")
    store = flow.run({})

    run = only_run(db)
    assert "paused" == run["status"]
    detail = json.loads(db.get_events(run["run_id"])[-1]["detail"])
    assert "need approval" == detail["reason"]
    assert detail["data"].startswith("(not stored: ")
    resumed = flow.resume(store.run_id, updates={"approved": True})
    assert (True, "completed") == (resumed["finished"], db.get_run(store.run_id)["status"])  # type: ignore[index]


class Unprintable:
    """A value whose str() and repr() raise."""

    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


class HalfBuilt(Exception):
    """An exception whose message cannot be read (its __str__ needs what __init__ skipped)."""

    def __str__(self) -> str:
        return self.detail  # type: ignore[attr-defined, no-any-return]


def test_an_exception_whose_message_cannot_be_read_is_still_the_runs_error(
    db_url: str,
) -> None:
    """A node's exception whose str() raises: the caller gets that exception (not the
    recorder's), and the run is recorded failed, its node_error event naming the type."""
    class Breaks(Node):
        def exec(self, prep_res: Any) -> None:
            raise HalfBuilt()

    db = WorkflowDB(db_url)
    with pytest.raises(HalfBuilt):
        Flow(chain(Put("a", lambda: 1), Breaks()), db=db, flow_name="half").run({})

    run = only_run(db)
    assert "failed" == run["status"]
    assert run["error_msg"].startswith("HalfBuilt (its message could not be read")
    kinds = [e["event"] for e in db.get_events(run["run_id"])]
    assert ["node_error", "flow_end"] == kinds[-2:]


def test_a_pause_whose_reason_cannot_be_read_still_pauses_the_run(db_url: str) -> None:
    """Pause(reason) with a reason whose str() and repr() raise: the run ends paused, the
    reason's place says why it was not stored."""
    class Asks(Node):
        def exec(self, prep_res: Any) -> None:
            raise Pause(Unprintable())  # type: ignore[arg-type]

    db = WorkflowDB(db_url)
    Flow(chain(Put("a", lambda: 1), Asks()), db=db, flow_name="asks").run({})

    run = only_run(db)
    assert "paused" == run["status"]
    detail = json.loads(db.get_events(run["run_id"])[-1]["detail"])
    assert detail["reason"].startswith("(not stored: RuntimeError")


def test_a_script_resumes_a_paused_run_by_the_id_on_its_store(db_url: str) -> None:
    """flow.run returns the store; store.run_id is the paused run's id, so a script can
    resume it (pocoflow 0.2 scripts had no other way to learn it from run())."""
    class Approve(Node):
        def prep(self, store: Any) -> Any:
            return store.get("approved")

        def exec(self, approved: Any) -> Any:
            if approved is None:
                raise Pause("need approval")
            return approved

        def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
            store["result"] = exec_res

    db = WorkflowDB(db_url)
    flow = Flow(chain(Put("a", lambda: 1), Approve()), db=db, flow_name="approve")

    store = flow.run({})
    assert "paused" == db.get_run(store.run_id)["status"]  # type: ignore[index]

    resumed = flow.resume(store.run_id, updates={"approved": "yes"})

    assert ("yes", store.run_id) == (resumed["result"], resumed.run_id)
    assert [store.run_id] == [r["run_id"] for r in db.list_runs()]
    assert "completed" == db.get_run(store.run_id)["status"]  # type: ignore[index]


def test_a_fork_reports_its_new_run_id_on_the_flow_and_the_store(db_url: str) -> None:
    """flow.fork starts a new run: its id is on the store it returns and is the flow's
    last_run_id, not the forked run's."""
    db = WorkflowDB(db_url)
    flow = Flow(chain(Put("a", lambda: 1, name="A"), Put("b", lambda: 2, name="B")), db=db,
                flow_name="forked")
    first = flow.run({})

    store = flow.fork(first.run_id, 0, updates={"a": 10})

    assert store.run_id != first.run_id
    assert store.run_id == flow.last_run_id
    assert {"a": 10, "b": 2} == store.as_dict()


# ── nested flows and RunHandle ──────────────────────────────────────────────


def test_nested_flow_is_a_child_run_hidden_from_list_runs(db_url: str) -> None:
    """A Flow used as a node is recorded as run "<run_id>.<step>" with parent_run_id, with
    its own events and checkpoints, and list_runs shows it only when asked."""
    inner = Flow(chain(Put("x", lambda: 1, name="In1"), Put("y", lambda: 2, name="In2")),
                 flow_name="inner")
    db = WorkflowDB(db_url)
    outer = Flow(chain(Put("a", lambda: 0, name="Start"), inner, Finish()), db=db,
                 flow_name="outer")

    outer.run({})

    [parent] = db.list_runs()
    child_id = f"{parent['run_id']}.1"
    child = db.get_run(child_id)
    assert child is not None
    assert ("completed", parent["run_id"], "inner") == (
        child["status"], child["parent_run_id"], child["flow_name"])
    assert ("completed", 3) == (parent["status"], parent["total_steps"])
    assert [child_id] == [r["run_id"] for r in db.list_runs(parent_run_id=parent["run_id"])]
    assert {parent["run_id"], child_id} == {r["run_id"] for r in
                                            db.list_runs(include_nested=True)}
    assert ["flow_start", "node_start", "node_end", "node_start", "node_end", "flow_end"] == [
        e["event"] for e in db.get_events(child_id)]
    assert [0, 1] == [c["step"] for c in db.get_checkpoints(child_id)]
    assert {"a": 0, "x": 1} == db.load_checkpoint(child_id, 0).as_dict()
    assert {"a": 0, "x": 1, "y": 2} == db.load_checkpoint(parent["run_id"], 1).as_dict()


def test_run_handle_status_agrees_with_the_database(db_url: str) -> None:
    """RunHandle.status is what the database says: a second WorkflowDB sees the same value
    while the run waits and after it ends."""
    started, gate = threading.Event(), threading.Event()
    flow = Flow(chain(Gate(started, gate), Finish()), db_url=db_url, flow_name="handle")
    other = WorkflowDB(db_url)

    handle = flow.run_background({})
    assert started.wait(EVENT_LIMIT)
    live = (handle.status, other.get_run(handle.run_id)["status"])  # type: ignore[index]
    gate.set()
    handle.wait(EVENT_LIMIT)

    assert ("running", "running") == live
    assert "completed" == handle.status
    assert "completed" == other.get_run(handle.run_id)["status"]  # type: ignore[index]


# ── checkpoint values ───────────────────────────────────────────────────────


RICH = {
    "when": lambda: datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc),
    "pair": lambda: (1, "a", (2.5, None)),
    "tags": lambda: {"x", "y"},
    "price": lambda: Decimal("19.990"),
    "point": lambda: Point(3, 4),
    "points": lambda: [Point(1, 2), {"nested": (Point(5, 6),)}],
}


def test_rich_store_values_round_trip_through_load_checkpoint(db_url: str) -> None:
    """datetime, tuple, set, Decimal and dataclass values come back equal and of their type,
    at the step that wrote them and at later (delta) steps."""
    db = WorkflowDB(db_url)
    nodes = [Put(key, factory, name=f"Put_{key}") for key, factory in RICH.items()]
    flow = Flow(chain(*nodes, Put("tags", lambda: {"x", "y", "z"}, name="MoreTags")), db=db,
                flow_name="rich")
    expected = stores_after_each_step(flow)

    flow.run({})

    run_id = only_run(db)["run_id"]
    loaded = [db.load_checkpoint(run_id, step).as_dict() for step in range(len(expected))]
    assert expected == loaded
    last = loaded[-1]
    assert {key: type(factory()) for key, factory in RICH.items()} == {
        key: type(last[key]) for key in RICH}
    assert "19.990" == str(last["price"])
    assert timezone.utc == last["when"].tzinfo
    assert {"x", "y", "z"} == last["tags"]
    assert {"x", "y"} == loaded[-2]["tags"]


class LiveClient:
    """A live object (an LLM client, say) that no checkpoint can hold."""

    def call(self, text: str) -> str:
        return text.upper()


class UseClient(Node):
    """Calls ``store["client"]``; fails while ``store["fail"]`` is true."""

    def prep(self, store: Any) -> Any:
        return store["client"], store["fail"]

    def exec(self, prep_res: Any) -> str:
        client, fail = prep_res
        if fail:
            raise ConnectionError("provider down")
        return client.call("hello")

    def post(self, store: Any, prep_res: Any, exec_res: str) -> None:
        store["answer"] = exec_res


def test_unencodable_value_is_left_out_listed_as_excluded_and_logged_once(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A store value the codec cannot encode (a live client nobody declared transient)
    is left out of every checkpoint and listed in its `excluded`, as a transient key is;
    one WARNING on pocoflow.db names the key and the type; the run completes."""
    db = WorkflowDB(db_url)
    flow = counting_flow(3, db=db)

    with caplog.at_level(logging.WARNING, logger="pocoflow"):
        flow.run(Store({"until": 3, "client": LiveClient()}, name="live"))

    run = only_run(db)
    assert "completed" == run["status"]
    checkpoints = db.get_checkpoints(run["run_id"])
    assert 4 == len(checkpoints)
    assert all(["client"] == json.loads(c["excluded"]) for c in checkpoints)
    assert all("client" not in json.loads(c["store_json"]) for c in checkpoints)
    loaded = db.load_checkpoint(run["run_id"], 3)
    assert "client" not in loaded
    assert {"client"} == loaded.transient
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert ["pocoflow.db"] == [r.name for r in warnings]
    assert "'client'" in warnings[0].getMessage()
    assert "LiveClient" in warnings[0].getMessage()


def test_save_checkpoint_of_a_plain_dict_leaves_a_live_object_out(db_url: str) -> None:
    """0.2's db.save_checkpoint(run_id, step, node, mapping) with a live object in the
    mapping writes the rest and lists the key as excluded (0.2 wrote a placeholder)."""
    db = WorkflowDB(db_url)
    db.create_run("manual-1", "manual")

    db.save_checkpoint("manual-1", 0, "A", {"text": "hi", "client": LiveClient()})

    (row,) = db.get_checkpoints("manual-1")
    assert {"text": "hi"} == json.loads(row["store_json"])
    assert ["client"] == json.loads(row["excluded"])


def test_a_key_that_stops_being_encodable_is_deleted_then_comes_back(db_url: str) -> None:
    """A key whose value becomes unencodable mid-run disappears from the next checkpoint
    (listed as excluded), and comes back once it holds plain data again."""

    class Swap(Node):
        def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
            store["i"] = i = store.get("i", 0) + 1
            store["slot"] = LiveClient() if i == 2 else [i]
            return "again" if i < 3 else "done"

    db = WorkflowDB(db_url, full_every=1000)
    swap = Swap()
    swap.then("again", swap)
    flow = Flow(swap, db=db, flow_name="swap")
    flow.run(Store({}))

    run_id = only_run(db)["run_id"]
    rows = db.get_checkpoints(run_id)
    assert [None, '["slot"]', None] == [r["excluded"] for r in rows]
    assert [{"i": 1, "slot": [1]}, {"i": 2}, {"i": 3, "slot": [3]}] == [
        json.loads(r["store_json"]) for r in rows]


def test_resume_after_a_failure_gets_the_left_out_live_object_from_updates(
        db_url: str) -> None:
    """A run whose live object was left out of its checkpoints fails; the resume knows the
    key is missing (it is transient in the rebuilt store) and takes it from updates."""
    db = WorkflowDB(db_url)
    flow = Flow(chain(Put("client", LiveClient, name="Connect"), UseClient()), db=db,
                flow_name="live")
    with pytest.raises(ConnectionError):
        flow.run(Store({"fail": True}))
    run_id = only_run(db)["run_id"]

    store = flow.resume(run_id, updates={"client": LiveClient(), "fail": False})

    assert "HELLO" == store["answer"]
    assert "completed" == db.get_run(run_id)["status"]
    assert ["client"] == json.loads(db.get_checkpoints(run_id)[-1]["excluded"])


def test_submit_and_a_queued_resume_refuse_a_value_that_cannot_reach_a_worker(
        db_url: str) -> None:
    """A queued run's input and a db.resume's updates go to another process whole, so a
    value the codec cannot encode there is a CheckpointEncodeError naming the key (not
    left out), whatever the store's policy; nothing is queued."""
    db = WorkflowDB(db_url)
    flow = Flow(chain(Put("a", lambda: 1), Finish()), db=db, flow_name="queued")

    with pytest.raises(CheckpointEncodeError, match="'client'"):
        flow.submit(Store({"client": LiveClient()}))
    assert [] == db.list_runs()

    class Ask(Node):
        def exec(self, prep_res: Any) -> None:
            raise Pause("approve?")

    Flow(Ask(), db=db, flow_name="ask").run({})
    run_id = only_run(db)["run_id"]
    with pytest.raises(CheckpointEncodeError, match="'client'"):
        db.resume(run_id, updates={"client": LiveClient()})
    assert "paused" == db.get_run(run_id)["status"]  # type: ignore[index]


def test_unencodable_value_fails_the_run_naming_the_key_with_strict_checkpoints(
        db_url: str) -> None:
    """With Store(strict_checkpoints=True), a store value the codec cannot encode fails the
    run with CheckpointEncodeError naming the key and type; the run is recorded failed and
    earlier checkpoints stay intact."""
    db = WorkflowDB(db_url)
    flow = Flow(chain(Put("ok", lambda: [1, 2], name="Good"), Put("handle", object, name="Bad"),
                      Finish()), db=db, flow_name="bad")

    with pytest.raises(CheckpointEncodeError, match=r"'handle'.*object"):
        flow.run(Store(strict_checkpoints=True))

    run = only_run(db)
    assert "failed" == run["status"]
    assert "handle" in run["error_msg"]
    assert [0] == [c["step"] for c in db.get_checkpoints(run["run_id"])]
    assert {"ok": [1, 2]} == db.load_checkpoint(run["run_id"], 0).as_dict()
    end = db.get_events(run["run_id"])[-1]
    assert "flow_end" == end["event"]
    # step 1 never became durable, so the run must not claim it was done
    assert (1, 1) == (run["total_steps"], end["step"])


def test_transient_key_is_excluded_and_listed(db_url: str) -> None:
    """A key declared transient is left out of every checkpoint and listed in `excluded`."""
    db = WorkflowDB(db_url)
    flow = counting_flow(2, db=db)

    flow.run(Store({"until": 2, "client": object()}, transient={"client"}))

    run_id = only_run(db)["run_id"]
    checkpoints = db.get_checkpoints(run_id)
    assert 3 == len(checkpoints)
    assert all(["client"] == json.loads(c["excluded"]) for c in checkpoints)
    assert all("client" not in json.loads(c["store_json"]) for c in checkpoints)
    loaded = db.load_checkpoint(run_id, 2)
    assert "client" not in loaded
    assert {"until": 2, "i": 2, "finished": True} == {
        k: loaded[k] for k in ("until", "i", "finished")}


# ── concurrency ─────────────────────────────────────────────────────────────


@pytest.mark.anyio
async def test_fifty_concurrent_runs_of_one_flow_are_all_recorded(db_url: str) -> None:
    """50 run_async of one Flow in one task group, one database: all completed, right totals."""
    db = AsyncWorkflowDB(db_url)
    flow = Flow(chain(AsyncAdd(name="A1"), AsyncAdd(name="A2"), AsyncAdd(name="A3")), db=db,
                flow_name="many")
    results: dict[int, Store] = {}

    async def one(n: int) -> None:
        results[n] = await flow.run_async({"n": n})

    async with anyio.create_task_group() as group:
        for n in range(50):
            group.start_soon(one, n)

    runs = await db.list_runs(limit=100)
    assert 50 == len({r["run_id"] for r in runs})
    assert [("completed", 3, None)] * 50 == [
        (r["status"], r["total_steps"], r["error_msg"]) for r in runs]
    assert {n: {"n": n, "total": 3} for n in range(50)} == {
        n: store.as_dict() for n, store in results.items()}
    for run in runs:
        checkpoints = await db.get_checkpoints(run["run_id"])
        assert [1, 2, 3] == [json.loads(c["store_json"])["total"] for c in checkpoints]
        assert 8 == len(await db.get_events(run["run_id"]))


def test_four_threads_running_one_flow_ten_times_each_are_all_recorded(db_url: str) -> None:
    """4 threads each calling flow.run 10 times on one database: 40 runs, all completed."""
    flow = counting_flow(3, db_url=db_url)

    def worker(thread: int) -> list[int]:
        return [flow.run({"until": 3, "who": (thread, k)})["i"] for k in range(10)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(worker, range(4)))

    db = WorkflowDB(db_url)
    runs = db.list_runs(limit=100)
    assert [[3] * 10] * 4 == results
    assert 40 == len({r["run_id"] for r in runs})
    assert [("completed", 4, None)] * 40 == [
        (r["status"], r["total_steps"], r["error_msg"]) for r in runs]
    whos = {tuple(db.load_checkpoint(r["run_id"], 3)["who"]) for r in runs}
    assert {(t, k) for t in range(4) for k in range(10)} == whos
