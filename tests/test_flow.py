"""Flow: routing, hooks, guards, dict stores, checkpoints, streaming and concurrent runs."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

import pocoflow
from pocoflow import AsyncNode, Flow, Node, Pause, Store
from pocoflow.events import FlowFinished, FlowStarted, NodeFailed, NodeFinished, NodeStarted

pytestmark = pytest.mark.anyio


class Step(Node):
    """Writes ``store[key] = value``, appends its name to ``store["trail"]``, returns action."""

    def __init__(self, action: str | None = "default", *, name: str | None = None,
                 key: str | None = None, value: Any = None) -> None:
        super().__init__(name=name)
        self.action = action
        self.key = key
        self.value = value

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str | None:
        store["trail"] = [*store.get("trail", []), self.name]
        if self.key is not None:
            store[self.key] = self.value
        return self.action


class Boom(Node):
    """exec raises ValueError("boom")."""

    def exec(self, prep_res: Any) -> None:
        raise ValueError("boom")


class Decide(Node):
    """Returns the action found in ``store["route"]``."""

    def prep(self, store: Any) -> str:
        return store["route"]

    def post(self, store: Any, prep_res: str, exec_res: Any) -> str:
        store["trail"] = ["Decide"]
        return prep_res


def two_steps() -> Flow:
    """A → B: A returns "ok", B ends the flow with "done"."""
    a = Step("ok", name="A", key="a", value=1)
    a.then("ok", Step("done", name="B", key="b", value=2))
    return Flow(start=a, flow_name="two")


# ── the seed README's Flow example ──────────────────────────────────────────


@pytest.mark.parametrize(
    ("route", "expected"),
    [("ok", "B"), ("error", "C"), ("something else", "Fallback")],
)
def test_seed_flow_example_routes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], route: str, expected: str
) -> None:
    """The seed README's Flow example (named edges, "*", hooks) runs and routes each action."""
    a = Decide()
    b, c, fallback = Step("done", name="B"), Step("done", name="C"), Step("done", name="Fallback")
    a.then("ok", b)
    a.then("error", c)
    a.then("*", fallback)
    flow = Flow(
        start=a,
        flow_name="my_pipeline",
        checkpoint_dir=tmp_path / "ckpt",
        max_steps=50,
    )
    flow.on("node_start", lambda name, store: print(f"▶ {name}"))
    flow.on("node_end", lambda name, action, elapsed, store:
            print(f"✓ {name} → {action}  ({elapsed:.2f}s)"))
    flow.on("flow_end", lambda steps, store: print(f"Done in {steps} steps"))

    store = Store({"route": route})
    flow.run(store)

    assert ["Decide", expected] == store["trail"]
    lines = capsys.readouterr().out.splitlines()
    assert ["▶ Decide", f"✓ Decide → {route}", f"▶ {expected}", f"✓ {expected} → done",
            "Done in 2 steps"] == [line.split("  (")[0] for line in lines]


# ── hooks ───────────────────────────────────────────────────────────────────


async def test_hooks_fire_in_order_with_seed_signatures() -> None:
    """Sync and async hooks fire in order with the seed's argument lists."""
    flow = two_steps()
    calls: list[tuple[Any, ...]] = []

    async def async_end(name: str, action: str, elapsed: float, store: Store) -> None:
        await anyio.sleep(0)
        calls.append(("async node_end", name, action, elapsed >= 0, store["trail"][-1]))

    async def async_flow_end(steps: int, store: Store) -> None:
        calls.append(("async flow_end", steps, store["b"]))

    flow.on("node_start", lambda name, store: calls.append(("node_start", name)))
    flow.on("node_end", lambda name, action, elapsed, store:
            calls.append(("node_end", name, action)))
    flow.on("node_end", async_end)
    flow.on("flow_end", lambda steps, store: calls.append(("flow_end", steps)))
    flow.on("flow_end", async_flow_end)

    store = Store()
    assert store is await flow.run_async(store)
    assert [
        ("node_start", "A"),
        ("node_end", "A", "ok"),
        ("async node_end", "A", "ok", True, "A"),
        ("node_start", "B"),
        ("node_end", "B", "done"),
        ("async node_end", "B", "done", True, "B"),
        ("flow_end", 2),
        ("async flow_end", 2, 2),
    ] == calls


async def test_node_error_hook_gets_name_exception_and_store() -> None:
    """A node that raises fails the run with its own exception and fires node_error."""
    start = Step(name="A")
    start.then("default", Boom())
    flow = Flow(start=start)
    seen: list[tuple[str, BaseException, Store]] = []
    flow.on("node_error", lambda name, exc, store: seen.append((name, exc, store)))
    store = Store()

    with pytest.raises(ValueError, match="boom") as info:
        await flow.run_async(store)

    assert [("Boom", info.value, store)] == seen


async def test_raising_hook_is_logged_and_run_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """A hook that raises is logged on pocoflow.flow and does not break the run."""
    flow = two_steps()
    after: list[str] = []

    def broken(name: str, store: Store) -> None:
        raise RuntimeError("hook bug")

    async def broken_async(steps: int, store: Store) -> None:
        raise RuntimeError("async hook bug")

    flow.on("node_start", broken)
    flow.on("node_start", lambda name, store: after.append(name))
    flow.on("flow_end", broken_async)

    with caplog.at_level(logging.WARNING, logger="pocoflow.flow"):
        store = await flow.run_async({})

    assert ["A", "B"] == store["trail"]
    assert ["A", "B"] == after
    hook_records = [r for r in caplog.records if r.name == "pocoflow.flow" and r.exc_info]
    assert ["hook bug", "hook bug", "async hook bug"] == [
        str(r.exc_info[1]) for r in hook_records
    ]


def test_on_unknown_event_raises_value_error_listing_events() -> None:
    """on() with an unknown event raises ValueError listing the valid events."""
    flow = two_steps()
    with pytest.raises(ValueError, match="node_finish") as info:
        flow.on("node_finish", print)
    for event in ("node_start", "node_end", "node_error", "flow_end"):
        assert event in str(info.value)


def test_on_non_callable_raises_type_error() -> None:
    """on() with a callback that is not callable raises TypeError."""
    with pytest.raises(TypeError, match="node_start"):
        two_steps().on("node_start", "print")


def test_on_returns_the_flow() -> None:
    """on() returns the flow, so hook registrations chain."""
    flow = two_steps()
    assert flow is flow.on("node_start", print)


# ── guards and bad input ────────────────────────────────────────────────────


async def test_max_steps_guard_stops_a_loop() -> None:
    """A run longer than max_steps raises MaxStepsExceeded naming max_steps and the node."""
    looping = Step("again", name="Looper")
    looping.then("again", looping)
    with pytest.raises(pocoflow.MaxStepsExceeded, match="max_steps") as info:
        await Flow(start=looping, max_steps=5).run_async({})
    assert isinstance(info.value, RuntimeError)
    assert "Looper" in str(info.value)


def test_flow_with_node_class_raises_type_error() -> None:
    """Flow(start=NodeClass) raises TypeError pointing at the missing instance."""
    with pytest.raises(TypeError, match=r"MyNode\(\)|instance"):
        Flow(start=Step)


# ── plain dicts and return values ───────────────────────────────────────────


def test_run_with_dict_writes_final_state_back() -> None:
    """flow.run(dict) leaves the final state in that dict and returns a Store."""
    shared: dict[str, Any] = {"given": True}
    result = two_steps().run(shared)
    assert isinstance(result, Store)
    assert {"given": True, "trail": ["A", "B"], "a": 1, "b": 2} == shared
    assert shared == dict(result.items())


async def test_run_async_with_dict_writes_final_state_back() -> None:
    """await flow.run_async(dict) leaves the final state in that dict and returns a Store."""
    shared: dict[str, Any] = {}
    result = await two_steps().run_async(shared)
    assert isinstance(result, Store)
    assert {"trail": ["A", "B"], "a": 1, "b": 2} == shared


def review_with_two_edges(action: str | None) -> Step:
    start = Step(action, name="Review")
    start.then("approve", Step(name="Publish")).then("reject", Step(name="Drop"))
    return start


async def test_unmatched_action_ends_flow_silently_as_in_pocoflow_02(
        recwarn: pytest.WarningsRecorder) -> None:
    """By default an action without an edge (or None on a node with named edges) ends the
    flow cleanly, printing nothing; the end event records the unmatched action."""
    ends: list[FlowFinished] = []
    for action in ("nope", None):
        flow = Flow(start=review_with_two_edges(action))
        flow.add_sink(lambda event: ends.append(event) if event.kind == "flow_end" else None)
        store = await flow.run_async({})
        assert ["Review"] == store["trail"]
    assert [] == list(recwarn)
    assert [("completed", "nope"), ("completed", "default")] == [
        (e.status, e.unmatched_action) for e in ends]


async def test_unmatched_action_warns_with_on_unmatched_warn() -> None:
    """Flow(on_unmatched="warn") warns naming the action and the edges, and ends the flow."""
    flow = Flow(start=review_with_two_edges("nope"), on_unmatched="warn")
    with pytest.warns(pocoflow.UnmatchedActionWarning, match="'nope'") as caught:
        store = await flow.run_async({})
    assert ["Review"] == store["trail"]
    assert "['approve', 'reject']" in str(caught[0].message)


async def test_unmatched_action_raises_with_on_unmatched_raise() -> None:
    """Flow(on_unmatched="raise") fails the node with UnmatchedActionError naming the fix."""
    flow = Flow(start=review_with_two_edges("nope"), on_unmatched="raise")
    with pytest.raises(pocoflow.UnmatchedActionError, match=r"\.then\('nope', next_node\)"):
        await flow.run_async({})


async def test_explicit_end_with_then_none_is_not_unmatched() -> None:
    """then(action, None) ends the flow on that action on purpose (0.2), even in raise mode
    and even with a '*' edge; other actions still follow the wildcard."""
    review = Step("stop", name="Review")
    review.then("stop", None).then("*", Step(name="Other"))
    store = await Flow(start=review, on_unmatched="raise").run_async({})
    assert ["Review"] == store["trail"]
    review.action = "elsewhere"
    store = await Flow(start=review, on_unmatched="raise").run_async({})
    assert ["Review", "Other"] == store["trail"]


def test_on_unmatched_rejects_unknown_modes() -> None:
    """Flow(on_unmatched=...) takes end, warn or raise and says so."""
    with pytest.raises(ValueError, match="'end', 'warn', 'raise'"):
        Flow(start=Step(), on_unmatched="ignore")


# ── JSON checkpoints ────────────────────────────────────────────────────────


async def test_checkpoint_dir_writes_restorable_snapshots(tmp_path: Path) -> None:
    """checkpoint_dir gets step_000_<Node>.json per step, and Store.restore reads them back."""
    a = Step("ok", name="A", key="a", value=1)
    a.then("ok", Step("done", name="B", key="b", value=[2, "two"]))
    flow = Flow(start=a, checkpoint_dir=tmp_path)
    await flow.run_async(Store({"q": "x"}, name="pipe"))

    assert ["step_000_A.json", "step_001_B.json"] == sorted(p.name for p in tmp_path.iterdir())
    first = Store.restore(tmp_path / "step_000_A.json")
    last = Store.restore(tmp_path / "step_001_B.json")
    assert {"q": "x", "trail": ["A"], "a": 1} == first.as_dict()
    assert {"q": "x", "trail": ["A", "B"], "a": 1, "b": [2, "two"]} == last.as_dict()
    assert "pipe" == last.name


async def test_non_json_value_is_left_out_of_snapshots_listed_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A store value the codec cannot encode (a live client, as 0.2 programs keep in the
    store) is left out of every JSON checkpoint, listed under "excluded", and reported by
    one WARNING naming the key and its type; the run completes."""
    a = Step("ok", name="A", key="client", value=object())
    a.then("ok", Step("done", name="B", key="b", value=2))
    with caplog.at_level(logging.WARNING, logger="pocoflow"):
        await Flow(start=a, checkpoint_dir=tmp_path).run_async(Store(name="live"))

    files = sorted(tmp_path.iterdir())
    assert ["step_000_A.json", "step_001_B.json"] == [f.name for f in files]
    last = json.loads(files[-1].read_text(encoding="utf-8"))
    assert {"trail": ["A", "B"], "b": 2} == last["data"]
    assert ["client"] == last["excluded"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert 1 == len(warnings)
    assert "'client'" in warnings[0].getMessage()
    assert "object" in warnings[0].getMessage()
    assert "live" in warnings[0].getMessage()


async def test_non_json_value_fails_the_run_naming_the_key_with_strict_checkpoints(
        tmp_path: Path) -> None:
    """With Store(strict_checkpoints=True), a store value JSON cannot hold fails a
    checkpointed run with a TypeError (CheckpointEncodeError) naming the key."""
    start = Step("done", name="A", key="client", value=object())
    with pytest.raises(pocoflow.CheckpointEncodeError, match="'client'"):
        await Flow(start=start, checkpoint_dir=tmp_path).run_async(
            Store(strict_checkpoints=True))


# ── streaming ───────────────────────────────────────────────────────────────


async def test_stream_yields_events_in_order() -> None:
    """flow.stream yields flow_start, node_start/node_end per step, then a completed flow_end."""
    events = [event async for event in two_steps().stream(Store({"q": 1}))]

    assert ["flow_start", "node_start", "node_end", "node_start", "node_end", "flow_end"] == [
        e.kind for e in events
    ]
    started, a_start, a_end, b_start, b_end, finished = events
    assert isinstance(started, FlowStarted)
    assert "A" == started.start_node
    assert isinstance(a_start, NodeStarted)
    assert isinstance(b_start, NodeStarted)
    assert [(0, "A"), (1, "B")] == [(a_start.step, a_start.node_name),
                                    (b_start.step, b_start.node_name)]
    assert isinstance(a_end, NodeFinished)
    assert isinstance(b_end, NodeFinished)
    assert (0, "A", "ok", "B") == (a_end.step, a_end.node_name, a_end.action, a_end.next_node)
    assert (1, "B", "done", None) == (b_end.step, b_end.node_name, b_end.action, b_end.next_node)
    assert {"trail", "a"} == a_end.changes.written
    assert {"trail", "b"} == b_end.changes.written
    assert isinstance(finished, FlowFinished)
    assert ("completed", 2, "done") == (finished.status, finished.steps, finished.last_action)
    assert len({e.run_id for e in events}) == 1


async def test_stream_changes_hold_only_keys_written_in_the_step() -> None:
    """A step's changes list only its own writes, not writes made to the store before the run."""
    store = Store()
    store["query"] = "set before the run"
    events = [event async for event in two_steps().stream(store)]
    ends = [e for e in events if isinstance(e, NodeFinished)]
    assert [{"trail", "a"}, {"trail", "b"}] == [set(e.changes.written) for e in ends]


async def test_stream_of_failing_run_raises_node_exception() -> None:
    """A failing run's stream yields every event, ending with a failed flow_end, then raises."""
    start = Step(name="A")
    start.then("default", Boom())
    events: list[Any] = []

    async def consume() -> None:
        async for event in Flow(start=start).stream({}):
            events.append(event)

    with pytest.raises(ValueError, match="boom"):
        await consume()
    assert ["flow_start", "node_start", "node_end", "node_start", "node_error",
            "flow_end"] == [e.kind for e in events]
    failed, finished = events[-2], events[-1]
    assert isinstance(failed, NodeFailed)
    assert "Boom" == failed.node_name
    assert isinstance(finished, FlowFinished)
    assert "failed" == finished.status


# ── Pause ───────────────────────────────────────────────────────────────────


class NeedsApproval(Node):
    """Writes a draft, then pauses for a human."""

    def prep(self, store: Any) -> None:
        store["draft"] = "v1"
        raise Pause("approve the draft", reviewer="ana")


async def test_pause_ends_stream_with_paused_status() -> None:
    """A node raising Pause ends the run with a FlowFinished whose status is paused."""
    start = Step(name="A")
    start.then("default", NeedsApproval())
    events = [event async for event in Flow(start=start).stream({})]
    last = events[-1]
    assert isinstance(last, FlowFinished)
    assert "paused" == last.status
    assert isinstance(last.error, Pause)
    assert "approve the draft" == last.error.reason


async def test_pause_run_returns_the_store() -> None:
    """run_async returns the store when a node pauses, with the writes made so far."""
    start, pausing = Step(name="A"), NeedsApproval()
    start.then("default", pausing)
    pausing.then("default", Step(name="After"))
    store = Store()
    assert store is await Flow(start=start).run_async(store)
    assert ["A"] == store["trail"]
    assert "v1" == store["draft"]


def test_pause_sync_run_returns_the_store() -> None:
    """flow.run returns the store when a node pauses."""
    store = Flow(start=NeedsApproval()).run({})
    assert isinstance(store, Store)
    assert "v1" == store["draft"]


# ── one Flow, many runs ─────────────────────────────────────────────────────


class Double(AsyncNode):
    """Sleeps a run-dependent time, then writes ``out = 2 * i``."""

    def prep(self, store: Any) -> int:
        return store["i"]

    async def exec_async(self, i: int) -> int:
        await anyio.sleep((i % 5) * 0.002)
        return i * 2

    def post(self, store: Any, prep_res: int, exec_res: int) -> str:
        store["out"] = exec_res
        return "tag"


class Tag(Node):
    """Writes ``tag = "run-<i>"`` from the store of its own run."""

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        store["tag"] = f"run-{store['i']}-{store['out']}"
        return "done"


def concurrent_flow() -> Flow:
    start = Double()
    start.then("tag", Tag())
    return Flow(start=start, flow_name="concurrent")


async def test_one_flow_runs_100_times_concurrently() -> None:
    """One Flow run 100 times at once in a task group gives each run its own result."""
    flow = concurrent_flow()
    results: dict[int, Store] = {}

    async def one(i: int) -> None:
        results[i] = await flow.run_async(Store({"i": i}))

    async with anyio.create_task_group() as group:
        for i in range(100):
            group.start_soon(one, i)

    assert [(i * 2, f"run-{i}-{i * 2}") for i in range(100)] == [
        (results[i]["out"], results[i]["tag"]) for i in range(100)
    ]


def test_one_flow_runs_concurrently_from_threads() -> None:
    """One Flow run from 8 threads with flow.run gives each thread its own result."""
    flow = concurrent_flow()
    with ThreadPoolExecutor(max_workers=8) as pool:
        stores = list(pool.map(lambda i: flow.run({"i": i}), range(8)))
    assert [(i * 2, f"run-{i}-{i * 2}") for i in range(8)] == [
        (s["out"], s["tag"]) for s in stores
    ]


# ── run ids a script can read ───────────────────────────────────────────────


def test_flow_reports_the_id_of_the_last_run_it_started_without_reusing_it(
        tmp_path: Path) -> None:
    """flow.last_run_id is the id of the last run this Flow started, known as soon as
    run_background returns; flow.run_id (no id fixed) is the last run_background run's,
    as 0.2 set it. The next run still gets a new id, so a recorded flow runs again
    without RunExistsError."""
    from pocoflow import WorkflowDB

    flow = Flow(start=Step("done", name="A"), db_path=tmp_path / "ids.db", flow_name="ids")
    assert (None, None, None) == (flow.run_id, flow.last_run_id, flow.fixed_run_id)

    handle = flow.run_background(Store())
    assert handle.run_id == flow.last_run_id == flow.run_id
    handle.wait(10)
    flow.run(Store())
    second = flow.last_run_id

    assert handle.run_id == flow.run_id  # 0.2: only run_background set flow.run_id
    assert second is not None
    assert handle.run_id != second
    assert None is flow.fixed_run_id
    db = WorkflowDB(tmp_path / "ids.db")
    assert ["completed", "completed"] == [db.get_run(r)["status"]  # type: ignore[index]
                                          for r in (handle.run_id, second)]


def test_a_fixed_run_id_is_what_flow_run_id_says_and_every_run_uses() -> None:
    """Flow(run_id=...) fixes the id of every run, and flow.run_id reports it; assigning
    flow.run_id fixes it too, and None goes back to new ids."""
    heard: list[str] = []
    flow = Flow(start=Step("done", name="A"), run_id="nightly-1")
    flow.add_sink(lambda event: heard.append(event.run_id))
    flow.run(Store())
    assert ("nightly-1", "nightly-1", "nightly-1") == (
        flow.run_id, flow.fixed_run_id, flow.last_run_id)

    flow.run_id = "nightly-2"
    flow.run(Store())
    flow.run_id = None
    flow.run(Store())

    assert ["nightly-1", "nightly-2"] == list(dict.fromkeys(heard))[:2]
    fresh = heard[-1]
    assert fresh.startswith("Step-")  # the flow is named after its start node's class
    assert (None, fresh, None) == (flow.run_id, flow.last_run_id, flow.fixed_run_id)


async def test_store_run_id_is_the_id_of_the_run_it_is_in() -> None:
    """store.run_id is None before any run, set when a run starts (a node sees its own
    run's id; a nested flow's nodes see the outer run's), and kept after the run."""
    seen: list[str | None] = []

    class Look(Node):
        def prep(self, store: Any) -> None:
            seen.append(store.run_id)

    outer = Look()
    outer.then("default", Flow(Look(), flow_name="Inner"))
    flow = Flow(outer, flow_name="outer")
    started: list[str] = []
    flow.add_sink(lambda e: started.append(e.run_id) if isinstance(e, FlowStarted) else None)
    store = Store()
    assert store.run_id is None

    await flow.run_async(store)
    first = store.run_id
    await flow.run_async(store)

    assert [started[0], started[0], store.run_id, store.run_id] == seen
    assert first != store.run_id
    assert started[0] == first
    assert flow.last_run_id == store.run_id


def test_a_dict_run_returns_a_store_that_knows_its_run_id() -> None:
    """flow.run(dict) returns a Store whose run_id is the run's."""
    flow = Flow(start=Step("done", name="A"))
    store = flow.run({})
    assert store.run_id is not None
    assert flow.last_run_id == store.run_id


async def test_a_left_out_value_is_reported_once_per_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The WARNING about a value checkpoints cannot encode comes once per key per run: a
    store run twice reports it twice, not once per step."""
    a = Step("ok", name="A")
    a.then("ok", Step("done", name="B"))
    flow = Flow(start=a, checkpoint_dir=tmp_path)
    store = Store({"client": object()})
    with caplog.at_level(logging.WARNING, logger="pocoflow"):
        await flow.run_async(store)
        await flow.run_async(store)

    assert 2 == len([r for r in caplog.records if "'client'" in r.getMessage()])


def test_checkpoint_files_are_json(tmp_path: Path) -> None:
    """Checkpoint files hold the store's name and data as JSON."""
    Flow(start=Step("done", name="A", key="a", value=1), checkpoint_dir=tmp_path).run(
        Store(name="pipe")
    )
    payload = json.loads((tmp_path / "step_000_A.json").read_text(encoding="utf-8"))
    assert {"name": "pipe", "data": {"trail": ["A"], "a": 1}} == payload


def test_checkpoint_file_names_are_safe_for_any_node_name(tmp_path: Path) -> None:
    """A node name with a path separator still gives one file inside checkpoint_dir."""

    class Writer(Node):
        def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
            store["done"] = True

    Flow(Writer(name="../escape/me"), checkpoint_dir=tmp_path).run({})

    assert ["step_000_.._escape_me.json"] == sorted(p.name for p in tmp_path.iterdir())
    assert {"done": True} == Store.restore(tmp_path / "step_000_.._escape_me.json").as_dict()
