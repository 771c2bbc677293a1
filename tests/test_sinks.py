"""The public event API: user sinks hear every event of a run, in order, and cannot break it."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from pocoflow import AsyncBatchNode, AsyncNode, BatchNode, Flow, Node, Sink, WorkflowDB
from pocoflow.events import (
    Event,
    FlowFinished,
    FlowStarted,
    NodeFailed,
    NodeFinished,
    NodeRetried,
    NodeStarted,
)

pytestmark = pytest.mark.anyio


class Flaky(Node):
    """exec fails once with ConnectionError, then returns "ok"."""

    max_retries = 2

    def __init__(self) -> None:
        super().__init__(name="Flaky")
        self.calls = 0

    def exec(self, prep_res: Any) -> str:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("dropped")
        return "ok"


class Double(BatchNode):
    def prep(self, store: Any) -> list[int]:
        return store["items"]

    def exec(self, item: int) -> int:
        return item * 2

    def post(self, store: Any, prep_res: Any, exec_res: list[int]) -> str:
        store["doubled"] = exec_res
        return "default"


class Boom(Node):
    def exec(self, prep_res: Any) -> None:
        raise ValueError("boom")


class Awaiting(AsyncNode):
    """Sets *started*, then awaits an hour: a node a cancel cuts short."""

    def __init__(self, started: anyio.Event) -> None:
        super().__init__(name="Slow")
        self.started = started

    async def exec_async(self, prep_res: Any) -> None:
        self.started.set()
        await anyio.sleep(3600)


def full_flow() -> Flow:
    """Flaky → Double (batch) → nested flow (Inner) → Boom."""
    inner = Flow(start=Node(name="Inner"), flow_name="inner")
    flaky, double = Flaky(), Double()
    flaky.then("default", double)
    double.then("default", inner)
    inner.then("default", Boom())
    return Flow(start=flaky, flow_name="outer")


def kinds(events: list[Event]) -> list[tuple[str, str, str]]:
    """(run suffix, kind, node) per event, run ids shortened to "outer" or the child's step."""
    out = []
    for event in events:
        run = "outer" if "." not in event.run_id else "child" + event.run_id.rsplit(".", 1)[1]
        out.append((run, event.kind, getattr(event, "node_name", "")))
    return out


EXPECTED = [
    ("outer", "flow_start", ""),
    ("outer", "node_start", "Flaky"),
    ("outer", "node_retry", "Flaky"),
    ("outer", "node_end", "Flaky"),
    ("outer", "node_start", "Double"),
    ("outer", "node_end", "Double"),
    ("outer", "node_start", "inner"),
    ("child2", "flow_start", ""),
    ("child2", "node_start", "Inner"),
    ("child2", "node_end", "Inner"),
    ("child2", "flow_end", ""),
    ("outer", "node_end", "inner"),
    ("outer", "node_start", "Boom"),
    ("outer", "node_error", "Boom"),
    ("outer", "flow_end", ""),
]


async def test_a_sync_callable_sink_hears_every_event_kind_in_order() -> None:
    """A plain function given to Flow(sinks=...) gets every event of a run with a retry, a
    batch, a nested flow and a failure, in order, nested run included."""
    heard: list[Event] = []
    flow = full_flow()
    flow.add_sink(heard.append)

    with pytest.raises(ValueError, match="boom"):
        await flow.run_async({"items": [1, 2]})

    assert EXPECTED == kinds(heard)


async def test_events_carry_run_ids_steps_timings_and_the_error() -> None:
    """Each event names its run and node; steps count up; ends carry elapsed time and actions;
    the retry and the failure carry their exceptions; the flow end carries status and error."""
    heard: list[Event] = []
    flow = full_flow()
    flow.add_sink(heard.append)
    with pytest.raises(ValueError, match="boom"):
        await flow.run_async({"items": [1, 2]})

    outer_id = heard[0].run_id
    started = [e for e in heard if isinstance(e, FlowStarted)]
    assert [None, outer_id] == [e.parent_run_id for e in started]
    assert f"{outer_id}.2" == started[1].run_id
    assert {"outer", "inner"} == {e.flow_name for e in started}
    ends = [e for e in heard if isinstance(e, NodeFinished) and e.run_id == outer_id]
    assert [0, 1, 2] == [e.step for e in ends]
    assert all(e.elapsed_s >= 0 for e in ends)
    assert ["Double", "inner", "Boom"] == [e.next_node for e in ends]
    retry = next(e for e in heard if isinstance(e, NodeRetried))
    assert (1, ConnectionError, 0) == (retry.attempt, type(retry.error), retry.step)
    failed = next(e for e in heard if isinstance(e, NodeFailed))
    assert ("Boom", 3, "boom") == (failed.node_name, failed.step, str(failed.error))
    finished = heard[-1]
    assert isinstance(finished, FlowFinished)
    assert ("failed", 3, failed.error) == (finished.status, finished.steps, finished.error)


async def test_async_callables_and_handle_objects_are_sinks_too() -> None:
    """An async function and an object with handle() (the Sink protocol, sync or async)
    receive the same events as a sync function, and are awaited before the next node."""
    seen: dict[str, list[str]] = {"async_fn": [], "object": [], "async_object": []}

    async def async_fn(event: Event) -> None:
        await anyio.sleep(0)
        seen["async_fn"].append(event.kind)

    class Collect:
        def handle(self, event: Event) -> None:
            seen["object"].append(event.kind)

    class AsyncCollect:
        async def handle(self, event: Event) -> None:
            await anyio.sleep(0)
            seen["async_object"].append(event.kind)

    assert isinstance(Collect(), Sink)
    a, b = Node(name="A"), Node(name="B")
    a.then("default", b)
    await Flow(start=a, sinks=[async_fn, Collect(), AsyncCollect()]).run_async({})

    expected = ["flow_start", "node_start", "node_end", "node_start", "node_end", "flow_end"]
    assert {"async_fn": expected, "object": expected, "async_object": expected} == seen


async def test_a_sink_that_raises_is_logged_and_the_run_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """A sync or async sink that raises on every event does not stop the run or the other
    sinks; each failure is logged with the sink and the event kind."""
    heard: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("sink bug")

    async def broken_async(event: Event) -> None:
        raise RuntimeError("async sink bug")

    flow = Flow(start=Node(name="Only"), sinks=[broken, broken_async,
                                                lambda e: heard.append(e.kind)])
    with caplog.at_level(logging.WARNING, logger="pocoflow.flow"):
        store = await flow.run_async({"x": 1})

    assert {"x": 1} == dict(store)
    assert ["flow_start", "node_start", "node_end", "flow_end"] == heard
    failures = [r.getMessage() for r in caplog.records if "failed on" in r.getMessage()]
    assert 8 == len(failures)
    assert "failed on node_end" in failures[4]
    assert "broken" in failures[4]


async def test_async_batch_and_retries_reach_the_sink() -> None:
    """An AsyncBatchNode whose items each fail once emits one node_retry per item."""

    class Items(AsyncBatchNode):
        max_retries = 2

        def __init__(self) -> None:
            super().__init__(name="Items")
            self.failed: set[int] = set()

        def prep(self, store: Any) -> list[int]:
            return [1, 2, 3]

        async def exec_async(self, item: int) -> int:
            if item not in self.failed:
                self.failed.add(item)
                raise TimeoutError(f"item {item}")
            return item

    heard: list[Event] = []
    await Flow(start=Items(), sinks=[heard.append]).run_async({})

    retries = [e for e in heard if isinstance(e, NodeRetried)]
    assert ["item 1", "item 2", "item 3"] == sorted(str(e.error) for e in retries)


async def test_a_sink_added_to_a_nested_flow_hears_only_that_flows_runs() -> None:
    """A sink on the inner flow hears the inner run's events; one on the outer flow hears
    both; the same sink on both hears each event once."""
    inner_heard: list[str] = []
    outer_heard: list[str] = []
    both: list[str] = []
    inner = Flow(start=Node(name="In"), flow_name="inner",
                 sinks=[lambda e: inner_heard.append(e.kind), both.append])
    outer = Flow(start=inner, flow_name="outer",
                 sinks=[lambda e: outer_heard.append(e.kind), both.append])

    await outer.run_async({})

    assert ["flow_start", "node_start", "node_end", "flow_end"] == inner_heard
    assert 8 == len(outer_heard)
    assert 8 == len(both)


async def test_remove_sink_stops_delivery_to_later_runs() -> None:
    """remove_sink unsubscribes a sink added before."""
    heard: list[str] = []
    flow = Flow(start=Node())
    flow.add_sink(heard.append)
    await flow.run_async({})
    flow.remove_sink(heard.append)
    await flow.run_async({})

    assert 4 == len(heard)


def test_a_sink_that_is_not_callable_is_refused_with_an_example() -> None:
    """add_sink of a value that is neither callable nor has handle() raises TypeError
    naming the type and showing a sink."""
    with pytest.raises(TypeError, match=r"got int.*flow\.add_sink\(lambda event"):
        Flow(start=Node()).add_sink(42)  # type: ignore[arg-type]


async def test_node_events_carry_node_ids_that_tell_same_named_nodes_apart() -> None:
    """Two nodes of one class get ids Name and Name#2 in their events and in FlowStarted's
    graph, and NodeFinished names the next node's id."""
    first, second = Node(), Node()
    first.then("default", second)
    heard: list[Event] = []
    await Flow(start=first, sinks=[heard.append]).run_async({})

    started = [e for e in heard if isinstance(e, NodeStarted)]
    assert ["Node", "Node#2"] == [e.node_id for e in started]
    ended = [e for e in heard if isinstance(e, NodeFinished)]
    assert ["Node#2", None] == [e.next_node_id for e in ended]
    graph = heard[0].graph  # type: ignore[attr-defined]
    assert ["Node", "Node#2"] == [n["id"] for n in graph["nodes"]]


def test_the_graph_of_a_later_run_follows_edits_to_the_flow() -> None:
    """The graph is worked out once for many runs, yet a run after an edge is added, a
    node renamed, or the start node replaced describes the flow as it is then."""
    first, second, third = Node(), Node(), Node()
    first.then("default", second)
    flow = Flow(start=first)
    heard: list[Event] = []
    flow.add_sink(heard.append)

    def graph_of_next_run() -> dict[str, Any]:
        heard.clear()
        flow.run({})
        started = heard[0]
        assert isinstance(started, FlowStarted)
        assert started.graph is not None
        return started.graph

    assert [n["id"] for n in graph_of_next_run()["nodes"]] == ["Node", "Node#2"]
    assert graph_of_next_run() is graph_of_next_run()  # unchanged: shared
    second.then("default", third)
    assert [n["id"] for n in graph_of_next_run()["nodes"]] == ["Node", "Node#2", "Node#3"]
    third.name = "Last"
    graph = graph_of_next_run()
    assert [n["id"] for n in graph["nodes"]] == ["Node", "Node#2", "Last"]
    assert {"from": "Node#2", "to": "Last", "action": "default"} in graph["edges"]
    assert [e.node_id for e in heard if isinstance(e, NodeStarted)] == \
        ["Node", "Node#2", "Last"]
    flow.start = third
    assert graph_of_next_run()["start"] == "Last"


async def test_a_sink_hears_steps_only_after_the_database_recorded_them(tmp_path: Any) -> None:
    """With a database, a user sink called for node_end finds that step's checkpoint
    already committed (the recorder is heard first)."""
    path = tmp_path / "sinks.db"
    found: list[int] = []

    def check(event: Event) -> None:
        if isinstance(event, NodeFinished):
            found.append(len(WorkflowDB(path).get_checkpoints(event.run_id)))

    a, b = Node(name="A"), AsyncNode(name="B")
    a.then("default", b)
    await Flow(start=a, db_path=path, sinks=[check]).run_async({})

    assert [1, 2] == found


async def test_a_pause_raised_in_exec_is_not_retried() -> None:
    """Pause from exec stops the run at once as paused: no node_retry, no fallback."""
    from pocoflow import Pause

    class Ask(Node):
        max_retries = 3

        def exec(self, prep_res: Any) -> None:
            raise Pause("needs a human")

        def exec_fallback(self, prep_res: Any, exc: Exception) -> str:
            raise AssertionError("the fallback must not run for a Pause")

    heard: list[Event] = []
    await Flow(start=Ask(), sinks=[heard.append]).run_async({})

    assert ["flow_start", "node_start", "flow_end"] == [e.kind for e in heard]
    assert "paused" == heard[-1].status  # type: ignore[attr-defined]


async def test_the_end_of_a_run_reaches_every_sink_even_after_one_fails() -> None:
    """When a sink that must not fail (the database recorder) fails on flow_end, the
    sinks after it still hear the end, and the run fails with that sink's error."""

    class FailingRecorder:
        sees_nested = True
        critical = True

        def handle(self, event: Event) -> None:
            if isinstance(event, FlowFinished):
                raise OSError("database or disk is full")

    heard: list[str] = []
    flow = Flow(start=Node(), sinks=[lambda e: heard.append(e.kind)])
    flow._recorder = FailingRecorder()

    with pytest.raises(OSError, match="disk is full"):
        await flow.run_async({})
    assert "flow_end" == heard[-1]


async def test_a_node_cut_short_by_a_cancel_gets_a_node_cancel_event() -> None:
    """Cancelling a run while an AsyncNode awaits ends its node_start with node_cancel,
    then the run's flow_end says cancelled."""
    started = anyio.Event()

    heard: list[Event] = []
    flow = Flow(start=Awaiting(started), sinks=[heard.append])
    async with anyio.create_task_group() as group:
        group.start_soon(flow.run_async, {})
        await started.wait()
        group.cancel_scope.cancel()

    assert ["flow_start", "node_start", "node_cancel", "flow_end"] == [e.kind for e in heard]
    assert "cancelled" == heard[-1].status  # type: ignore[attr-defined]


class Loop(Node):
    """Counts in the store, three steps, then ends."""

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        store["n"] = store.get("n", 0) + 1
        return "again" if store["n"] < 3 else "done"


def looping(**flow_options: Any) -> Flow:
    node = Loop()
    node.then("again", node)
    return Flow(start=node, **flow_options)


@pytest.mark.parametrize("where", ["sink", "node_end hook"])
async def test_a_sink_that_hangs_on_a_step_cannot_make_the_run_uncancellable(
        where: str, tmp_path: Any) -> None:
    """An async sink (or node_end hook) that never returns from a step's end: a cancel
    still stops the run at once, and the run is recorded cancelled (the whole emission
    was shielded, so the run could never be cancelled), with the step the node had
    finished: a sink hears it once recorded; a hook before (as in 0.2, so that what it
    writes is in the step's checkpoint), and a cancel that cuts it short still lets
    the step be recorded first."""
    finished: list[bool] = []

    async def hang(*args: Any) -> None:  # long enough to tell; short, should it regress
        if where != "sink" or isinstance(args[0], NodeFinished):
            await anyio.sleep(20)
            finished.append(True)

    db = WorkflowDB(tmp_path / "runs.db")
    flow = looping(db=db, run_id="hung", sinks=[hang] if where == "sink" else [])
    if where != "sink":
        flow.on("node_end", hang)
    with anyio.move_on_after(0.3):
        await flow.run_async({})
    assert [] == finished  # the cancel cut the sink short: the run did not wait for it
    run = db.get_run("hung")
    assert ("cancelled", 1) == (run["status"], run["total_steps"])  # type: ignore[index]
    assert [0] == [c["step"] for c in db.get_checkpoints("hung")]
    assert "node_cancel" not in [e["event"] for e in db.get_events("hung")]


async def test_what_a_node_end_hook_writes_is_in_that_steps_checkpoint(
        tmp_path: Any) -> None:
    """As in pocoflow 0.2, node_end hooks run before the step's checkpoint is saved: a
    hook that writes to the store (a counter, a timing) has its write in the checkpoint
    of that very step, the last one included; sinks still hear the step once recorded."""
    db = WorkflowDB(tmp_path / "runs.db")
    recorded_when_heard: list[int] = []

    def heard(event: Event) -> None:
        if isinstance(event, NodeFinished):
            recorded_when_heard.append(len(db.get_checkpoints("hooked")))

    flow = looping(db=db, run_id="hooked", sinks=[heard])
    flow.on("node_end", lambda name, action, elapsed, store: store.__setitem__(
        "ended", store.get("ended", 0) + 1))
    await flow.run_async({})
    assert [1, 2, 3] == [db.load_checkpoint("hooked", step)["ended"] for step in range(3)]
    assert [1, 2, 3] == recorded_when_heard


async def test_a_slow_sink_is_awaited_when_nobody_cancels() -> None:
    """Without a cancel a slow sink is waited for, as long as it takes: every step's end
    is heard in full, before the next node starts."""
    order: list[str] = []

    async def slow(event: Event) -> None:
        if isinstance(event, NodeFinished):
            await anyio.sleep(0.05)
            order.append(f"heard {event.step}")
        elif isinstance(event, NodeStarted):
            order.append(f"start {event.step}")

    await looping(sinks=[slow]).run_async({})
    assert ["start 0", "heard 0", "start 1", "heard 1", "start 2", "heard 2"] == order


async def test_one_grace_covers_every_end_a_hung_sink_hears_of_a_cancelled_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sink that hangs on every event of a cancelled run nested two deep (a
    node_cancel and a flow_end at each level): the cancel is answered one grace period
    after it, not one per event and level (six here)."""
    from pocoflow import engine

    monkeypatch.setattr(engine, "SINK_GRACE_S", 0.5)
    started = anyio.Event()

    async def hang(event: Event) -> None:
        if event.kind in ("node_cancel", "flow_end"):
            await anyio.sleep(20)

    inner = Flow(start=Flow(start=Awaiting(started), flow_name="deepest"), flow_name="middle")
    flow = Flow(start=inner, sinks=[hang])
    async with anyio.create_task_group() as group:
        group.start_soon(flow.run_async, {})
        await started.wait()
        cancelled_at = anyio.current_time()
        group.cancel_scope.cancel()
    assert anyio.current_time() - cancelled_at < 2.5  # six graces would be 3 s


async def test_a_sink_that_hangs_on_the_end_of_a_cancelled_run_is_cut_short(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The end of a cancelled run reaches the sinks past the cancel, for a grace period:
    one that hangs on it is cut short after SINK_GRACE_S, with a warning naming the
    run, and the other sinks have heard the end."""
    from pocoflow import engine

    monkeypatch.setattr(engine, "SINK_GRACE_S", 0.2)
    started = anyio.Event()

    heard: list[str] = []

    async def hang_at_the_end(event: Event) -> None:
        heard.append(event.kind)
        if isinstance(event, FlowFinished):
            await anyio.sleep(20)
            heard.append("done")

    flow = Flow(start=Awaiting(started), run_id="stuck", sinks=[hang_at_the_end])
    async with anyio.create_task_group() as group:
        group.start_soon(flow.run_async, {})
        await started.wait()
        group.cancel_scope.cancel()
    assert ["flow_start", "node_start", "node_cancel", "flow_end"] == heard
    assert any("'stuck' was cut short" in r.getMessage() and "flow_end" in r.getMessage()
               for r in caplog.records)
