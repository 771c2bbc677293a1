"""The sync/async crossing: Flow.run, run_async, run_background with RunHandle, and stream."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from typing import Any

import anyio
import pytest
import trio

from pocoflow import AsyncNode, Flow, Node, RunHandle, Store, WorkflowDB

RUN_ID = "[0-9a-hjkmnp-tv-z]{36}"  # start ms + 128 random bits, Crockford base32


def current_loop() -> Any:
    """The event loop object running the calling code (asyncio loop or trio token)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return trio.lowlevel.current_trio_token()


class Add(Node):
    """Writes ``store[key] = store['x'] + amount``; exec runs in a worker thread."""

    def __init__(self, key: str, amount: int) -> None:
        super().__init__()
        self.key = key
        self.amount = amount

    def prep(self, store: Any) -> Any:
        return store["x"]

    def exec(self, x: Any) -> Any:
        return x + self.amount

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store[self.key] = exec_res


class Double(AsyncNode):
    """Writes ``store['z'] = 2 * store['y']`` after awaiting a short sleep."""

    async def exec_async(self, prep_res: Any) -> Any:
        await anyio.sleep(0.01)
        return prep_res * 2

    def prep(self, store: Any) -> Any:
        return store["y"]

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["z"] = exec_res


class Gate(Node):
    """Its exec signals ``entered`` and blocks until ``release`` is set; writes store['gate']."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def exec(self, prep_res: Any) -> Any:
        self.entered.set()
        if not self.release.wait(10):
            raise RuntimeError("Gate was never released by the test")
        return "opened"

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["gate"] = exec_res


class Sleeper(AsyncNode):
    """Awaits a 30 s sleep, recording whether it started, was cancelled or finished."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.record: list[str] = []

    async def exec_async(self, prep_res: Any) -> Any:
        self.record.append("started")
        self.started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            self.record.append("cancelled")
            raise
        self.record.append("finished")

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["slept"] = True


class Visit(Node):
    """Records in ``ran`` that its prep was called (the node started)."""

    def __init__(self) -> None:
        super().__init__()
        self.ran: list[str] = []

    def prep(self, store: Any) -> Any:
        self.ran.append(self.name)


def add_then_double() -> Flow:
    add = Add("y", 1)
    add.then("default", Double())
    return Flow(start=add)


# ── Flow.run: the sync facade ──────────────────────────────────────────────


def test_run_in_sync_code_returns_the_finished_store() -> None:
    """Flow.run in plain sync code runs every node and returns the store it was given."""
    store = Store({"x": 1})

    result = add_then_double().run(store)

    assert store is result
    assert {"x": 1, "y": 2, "z": 4} == result.as_dict()


def test_run_writes_the_final_state_through_to_a_plain_dict() -> None:
    """Flow.run on a plain dict leaves the final state in that dict."""
    shared = {"x": 5}

    add_then_double().run(shared)

    assert {"x": 5, "y": 6, "z": 12} == shared


@pytest.mark.anyio
async def test_run_inside_a_running_loop_returns_the_finished_store() -> None:
    """Flow.run called from code already on an event loop completes and returns the store."""
    store = Store({"x": 2})

    result = add_then_double().run(store)

    assert store is result
    assert {"x": 2, "y": 3, "z": 6} == result.as_dict()


def test_run_inside_asyncio_run_returns_the_finished_store() -> None:
    """Flow.run called inside asyncio.run (as in a notebook) completes and returns the store."""
    store = Store({"x": 3})
    flow = add_then_double()

    async def main() -> Store:
        return flow.run(store)

    result = asyncio.run(main())

    assert store is result
    assert {"x": 3, "y": 4, "z": 8} == result.as_dict()


def test_run_in_the_cleanup_of_a_cancelled_asyncio_task_runs_to_the_end() -> None:
    """flow.run() in cleanup code of an asyncio task already being cancelled (an except
    CancelledError block) runs the flow to its end: only a cancel that comes during the
    call stops it (it was cancelled at once, the task's earlier cancel taken for one)."""
    results: list[Store] = []

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.01, task.cancel)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            results.append(flow.run(Store({"x": 1})))
            raise

    class Slow(Node):
        def exec(self, prep_res: Any) -> None:
            time.sleep(0.3)  # a few of the caller's polls

        def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
            store["recorded"] = True

    flow = Flow(start=Slow())
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert [{"x": 1, "recorded": True}] == [r.as_dict() for r in results]


INTERRUPTED_IN_A_LOOP = """
import asyncio, json, os, signal, sys, time
import trio
from pocoflow import Flow, Node, WorkflowDB

steps = []

presses = int(sys.argv[3])

class Count(Node):
    def exec(self, n):
        time.sleep(0.2)
        return n

    def post(self, store, prep_res, n):
        if n == 2:  # Ctrl-C during the third step's post (work on the run's loop
            for _ in range(presses):  # thread), pressed again while it is acted on
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.1)
        store["n"] = n + 1
        steps.append(n)
        return "again" if store["n"] < 12 else "done"

    def prep(self, store):
        return store.get("n", 0)

node = Count()
node.then("again", node)
flow = Flow(start=node, db_path=sys.argv[2], run_id="notebook")
shared = {}

async def cell():  # a notebook cell: the sync facade where a loop runs already
    flow.run(shared)

how = sys.argv[1]
try:
    if how == "run_until_complete":  # Jupyter's kernel
        asyncio.new_event_loop().run_until_complete(cell())
    elif how == "asyncio.run":  # its first Ctrl-C cancels the main task
        asyncio.run(cell())
    else:
        trio.run(cell)
    outcome = "returned"
except KeyboardInterrupt:
    outcome = "KeyboardInterrupt"
at_interrupt = list(steps)
time.sleep(1.0)  # five steps' time: a run left going would go on
run = WorkflowDB(sys.argv[2]).get_run("notebook")
print(json.dumps({"outcome": outcome, "at_interrupt": at_interrupt, "later": steps,
                  "shared": shared, "status": run["status"], "steps": run["total_steps"]}))
"""


@pytest.mark.parametrize("presses", [1, 3])
@pytest.mark.parametrize("how", ["run_until_complete", "asyncio.run", "trio.run"])
def test_ctrl_c_during_run_inside_a_running_loop_cancels_the_run(tmp_path: Any, how: str,
                                                                  presses: int) -> None:
    """Ctrl-C during flow.run() where a loop already runs (a notebook, asyncio.run,
    trio.run), pressed once or again while it is acted on: flow.run raises only once
    the run has stopped, nothing runs after that, and the run is recorded cancelled
    with the steps it did. (The run went on in its helper thread, writing the caller's
    dict, its row left running; a second press while the first was acted on did that
    again.)"""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "notebook.py"
    script.write_text(INTERRUPTED_IN_A_LOOP)
    done = subprocess.run(
        [sys.executable, str(script), how, str(tmp_path / "runs.db"), str(presses)],
        capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert 0 == done.returncode, done.stderr
    seen = json.loads(done.stdout)
    assert "KeyboardInterrupt" == seen["outcome"]
    done = seen["at_interrupt"]
    assert done == seen["later"]  # nothing ran once flow.run had raised
    assert done in ([0, 1, 2], [0, 1, 2, 3])  # (the cancel lands after the post, so the
    # next node's sync exec may finish its attempt)
    assert {"n": len(done)} == seen["shared"]
    assert ("cancelled", len(done)) == (seen["status"], seen["steps"])


# ── run_async: AsyncNodes on the caller's loop ─────────────────────────────


@pytest.mark.anyio
async def test_run_async_awaits_async_exec_on_the_callers_loop_and_thread() -> None:
    """await flow.run_async runs AsyncNode.exec_async on the caller's own loop and thread."""
    seen: list[tuple[int, Any]] = []

    class WhereAmI(AsyncNode):
        async def exec_async(self, prep_res: Any) -> Any:
            seen.append((threading.get_ident(), current_loop()))

    await Flow(start=WhereAmI()).run_async(Store())

    assert [(threading.get_ident(), current_loop())] == seen


@pytest.mark.anyio
async def test_async_client_made_before_the_run_keeps_working_across_async_nodes() -> None:
    """A lock and streams to a server task, made before run_async, serve three AsyncNodes."""
    lock = anyio.Lock()
    requests_send, requests_receive = anyio.create_memory_object_stream[str](10)
    replies_send, replies_receive = anyio.create_memory_object_stream[str](10)

    async def server() -> None:
        async with requests_receive, replies_send:
            async for word in requests_receive:
                await replies_send.send(word.upper())

    class Ask(AsyncNode):
        def __init__(self, word: str) -> None:
            super().__init__(name=f"Ask-{word}")
            self.word = word

        async def exec_async(self, prep_res: Any) -> Any:
            async with lock:
                await requests_send.send(self.word)
                return await replies_receive.receive()

        def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
            store["replies"] = [*store.get("replies", []), exec_res]

    one, two, three = Ask("one"), Ask("two"), Ask("three")
    one.then("default", two)
    two.then("default", three)

    with replies_receive:
        async with anyio.create_task_group() as group:
            group.start_soon(server)
            # fail_after only turns a broken (hung) client into a failure instead of a hang
            with anyio.fail_after(10):
                async with requests_send:
                    store = await Flow(start=one).run_async(Store())

    assert ["ONE", "TWO", "THREE"] == store["replies"]


# ── run_background and RunHandle ───────────────────────────────────────────


def test_run_background_reports_running_then_completed() -> None:
    """A background run has its run_id at once, is running while a node waits, then completed."""
    gate = Gate()
    store = Store({"x": 0})
    handle = Flow(start=gate, flow_name="bg").run_background(store)
    try:
        assert isinstance(handle, RunHandle)
        assert re.fullmatch(f"bg-{RUN_ID}", handle.run_id)
        assert gate.entered.wait(5)
        assert "running" == handle.status
        assert False is handle.is_done
    finally:
        gate.release.set()

    result = handle.wait(timeout=5)

    assert store is result
    assert "opened" == result["gate"]
    assert "completed" == handle.status
    assert True is handle.is_done


def test_run_id_defaults_to_the_start_node_class_name_and_differs_per_run() -> None:
    """Without flow_name, run ids are '<StartNodeClass>-<8 hex>' and each run gets its own."""
    flow = Flow(start=Add("y", 1))

    first = flow.run_background({"x": 1})
    second = flow.run_background({"x": 2})
    first.wait(5)
    second.wait(5)

    assert re.fullmatch(f"Add-{RUN_ID}", first.run_id)
    assert re.fullmatch(f"Add-{RUN_ID}", second.run_id)
    assert first.run_id != second.run_id


def test_wait_reraises_the_flows_exception_and_status_is_failed() -> None:
    """wait() re-raises the exception that ended the run, and status becomes 'failed'."""

    class Boom(Node):
        def exec(self, prep_res: Any) -> Any:
            raise ValueError("boom in exec")

    handle = Flow(start=Boom()).run_background(Store())

    with pytest.raises(ValueError, match="boom in exec"):
        handle.wait(timeout=5)
    assert "failed" == handle.status
    assert True is handle.is_done


@pytest.mark.parametrize("timeout", [None, 10.0])
def test_wait_reraises_a_timeout_error_the_run_failed_with(timeout: float | None) -> None:
    """A run that failed with a TimeoutError of its own (an API call timing out,
    Node.timeout's NodeTimeoutError): wait() re-raises that error, not "did not finish
    within None s" (its own timeout was taken for the run's)."""
    from pocoflow.errors import NodeTimeoutError

    class Upstream(Node):
        def exec(self, prep_res: Any) -> None:
            raise TimeoutError("upstream API timed out")

    class Slow(AsyncNode):
        timeout = 0.05

        async def exec_async(self, prep_res: Any) -> None:
            await anyio.sleep(30)

    for node, error, match in ((Upstream(), TimeoutError, "upstream API timed out"),
                               (Slow(), NodeTimeoutError, "Slow")):
        handle = Flow(start=node).run_background(Store())
        with pytest.raises(error, match=match):
            handle.wait(timeout=timeout)
        assert "failed" == handle.status


def test_wait_raises_timeout_error_naming_the_run_and_the_run_goes_on() -> None:
    """wait(timeout) on a slower run raises TimeoutError naming the run id; the run continues."""
    gate = Gate()
    store = Store({"x": 0})
    handle = Flow(start=gate).run_background(store)
    try:
        assert gate.entered.wait(5)
        with pytest.raises(TimeoutError, match=re.escape(handle.run_id)):
            handle.wait(timeout=0.05)
        with pytest.raises(ValueError, match=r"timeout=nan"):
            handle.wait(timeout=float("nan"))
        with pytest.raises(TypeError, match=r"takes a number of seconds"):
            handle.wait(timeout="0.05")  # type: ignore[arg-type]
        assert "running" == handle.status
    finally:
        gate.release.set()

    assert "opened" == handle.wait(timeout=float("inf"))["gate"]  # no limit, as None
    assert "opened" == handle.wait(timeout=5)["gate"]
    assert "completed" == handle.status


@pytest.mark.anyio
async def test_wait_async_returns_the_finished_store() -> None:
    """await handle.wait_async() waits for the background run without blocking the loop."""
    gate = Gate()
    store = Store({"x": 0})
    handle = Flow(start=gate).run_background(store)
    results: list[Store] = []

    async def waiter() -> None:
        results.append(await handle.wait_async())

    async with anyio.create_task_group() as group:
        group.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        gate.release.set()

    assert [store] == results
    assert "opened" == store["gate"]
    assert "completed" == handle.status


def test_cancel_interrupts_an_awaiting_async_node_within_a_second() -> None:
    """cancel() stops an AsyncNode awaiting a long sleep; wait() returns the partial store fast."""
    sleeper = Sleeper()
    add = Add("y", 1)
    add.then("default", sleeper)
    handle = Flow(start=add).run_background(Store({"x": 1}))
    assert sleeper.started.wait(5)

    began = time.monotonic()
    handle.cancel()
    result = handle.wait(timeout=5)
    elapsed = time.monotonic() - began

    assert elapsed < 1.0
    assert {"x": 1, "y": 2} == result.as_dict()
    assert ["started", "cancelled"] == sleeper.record
    assert "cancelled" == handle.status


def test_cancel_lets_a_sync_exec_finish_and_stops_before_the_next_node() -> None:
    """cancel() during a sync exec lets it and its post finish; the next node never starts."""

    class SlowWrite(Node):
        def __init__(self) -> None:
            super().__init__()
            self.entered = threading.Event()

        def exec(self, prep_res: Any) -> Any:
            self.entered.set()
            time.sleep(0.3)
            return "written"

        def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
            store["slow"] = exec_res

    slow, after = SlowWrite(), Visit()
    slow.then("default", after)
    handle = Flow(start=slow).run_background(Store())
    assert slow.entered.wait(5)

    handle.cancel()
    result = handle.wait(timeout=5)

    assert "written" == result["slow"]
    assert [] == after.ran
    assert "cancelled" == handle.status


def test_cancel_during_a_post_stops_before_the_next_node_of_nodes_without_exec() -> None:
    """Nodes with no exec never hand the loop a turn: a cancel that comes (from another
    thread) during a node's post still stops the run before the next node, which used
    to run whole, recorded as done."""
    in_post = threading.Event()
    ran: list[str] = []

    class Busy(Node):
        def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
            ran.append(self.name)
            if self.name == "Second":
                in_post.set()
                time.sleep(0.3)  # blocking work on the loop thread (a file, a service)

    first, second, third = Busy(name="First"), Busy(name="Second"), Busy(name="Third")
    first.then("default", second)
    second.then("default", third)
    handle = Flow(start=first).run_background(Store())
    assert in_post.wait(10)
    handle.cancel()
    handle.wait(timeout=10)

    assert ["First", "Second"] == ran
    assert "cancelled" == handle.status


def test_cancel_before_the_first_node_starts_ends_with_zero_steps() -> None:
    """cancel() while the run has not yet entered its first node ends it after 0 steps."""
    hook_entered = threading.Event()
    ended_with_steps: list[int] = []
    first = Visit()

    async def hold_before_first_node(name: str, store: Any) -> None:
        hook_entered.set()
        await anyio.sleep(30)

    flow = Flow(start=first)
    flow.on("node_start", hold_before_first_node)
    flow.on("flow_end", lambda steps, store: ended_with_steps.append(steps))
    handle = flow.run_background(Store())
    assert hook_entered.wait(5)

    handle.cancel()
    handle.wait(timeout=5)

    assert [0] == ended_with_steps
    assert [] == first.ran
    assert "cancelled" == handle.status


def test_many_background_runs_of_one_flow_complete_with_their_own_results() -> None:
    """Twenty concurrent background runs of one Flow each finish with their own store's results."""
    flow = add_then_double()
    stores = [Store({"x": i}) for i in range(20)]

    handles = [flow.run_background(store) for store in stores]
    results = [handle.wait(timeout=10) for handle in handles]

    assert [2 * (i + 1) for i in range(20)] == [result["z"] for result in results]
    assert stores == results
    assert 20 == len({handle.run_id for handle in handles})
    assert ["completed"] * 20 == [handle.status for handle in handles]


def test_nodes_of_background_runs_can_start_background_runs_and_wait_for_them() -> None:
    """run_background() from a node of a background run, three deep, each node waiting
    for the run it started (which blocks its own loop's thread): each run goes to a loop
    of its own and all finish. (It failed with anyio's "cannot be called from the event
    loop thread"; then, three deep, went back to a loop blocked in a wait.)"""

    class Spawn(Node):
        def __init__(self, level: int) -> None:
            super().__init__()
            self.level = level

        def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
            store["level"] = self.level
            if self.level < 3:
                child = Flow(start=Spawn(self.level + 1)).run_background(Store())
                store["child"] = child.wait(timeout=10).as_dict()

    top = Flow(start=Spawn(1)).run_background(Store())
    assert {"level": 1, "child": {"level": 2, "child": {"level": 3}}} == \
        top.wait(timeout=30).as_dict()
    assert "completed" == top.status


def test_seed_readme_background_example_works_as_written() -> None:
    """The seed README's run_background example (without db_path) behaves as documented."""
    my_node = Gate()
    store = Store({"topic": "ducks"})

    flow = Flow(start=my_node, flow_name="research")
    handle = flow.run_background(store)
    try:
        assert re.fullmatch(f"research-{RUN_ID}", handle.run_id)
        assert my_node.entered.wait(5)
        assert "running" == handle.status
    finally:
        my_node.release.set()

    result = handle.wait(timeout=300)
    assert "completed" == handle.status
    handle.cancel()

    assert "completed" == handle.status
    assert {"topic": "ducks", "gate": "opened"} == result.as_dict()


# ── stream and cancellation from the caller ────────────────────────────────


@pytest.mark.anyio
async def test_stream_yields_the_runs_events_in_order() -> None:
    """flow.stream(store) yields flow_start, node_start/node_end per node, then flow_end."""
    store = Store({"x": 1})

    seen = [(event.kind, getattr(event, "node_name", None))
            async for event in add_then_double().stream(store)]

    assert [
        ("flow_start", None),
        ("node_start", "Add"),
        ("node_end", "Add"),
        ("node_start", "Double"),
        ("node_end", "Double"),
        ("flow_end", None),
    ] == seen
    assert 4 == store["z"]


@pytest.mark.anyio
async def test_leaving_a_stream_early_in_aclosing_cancels_the_run_promptly() -> None:
    """Breaking out of flow.stream inside contextlib.aclosing cancels the awaiting node at once."""
    sleeper = Sleeper()
    add = Add("y", 1)
    add.then("default", sleeper)
    store = Store({"x": 1})

    began = None
    async with contextlib.aclosing(Flow(start=add).stream(store)) as events:
        async for event in events:
            if event.kind == "node_start" and event.node_name == "Sleeper":
                began = time.monotonic()
                break
    assert began is not None
    elapsed = time.monotonic() - began

    assert elapsed < 1.0
    assert ["started", "cancelled"] == sleeper.record
    assert {"x": 1, "y": 2} == store.as_dict()


def sleeper_flow(tmp_path: Any) -> tuple[Flow, Sleeper, WorkflowDB]:
    """Add → Sleeper (awaits 30 s), recorded in a SQLite file."""
    sleeper = Sleeper()
    add = Add("y", 1)
    add.then("default", sleeper)
    db = WorkflowDB(tmp_path / "runs.db")
    return Flow(start=add, db=db, run_id="streamed"), sleeper, db


async def wait_for_status(db: WorkflowDB, run_id: str, status: str) -> None:
    with anyio.fail_after(10):
        while (db.get_run(run_id) or {}).get("status") != status:
            await anyio.sleep(0.02)


@pytest.mark.anyio
@pytest.mark.parametrize("leave", ["break", "error", "timeout"])
async def test_leaving_a_plain_async_for_over_a_stream_early_is_safe(
        tmp_path: Any, leave: str) -> None:
    """The documented plain `async for` left early (a break, an error in the loop
    body, a timeout around it): the caller's task goes on unharmed (it used to be
    cancelled, or the whole loop died, when the generator was finalised in another
    task), and the run is cancelled and recorded so."""
    flow, sleeper, db = sleeper_flow(tmp_path)
    with anyio.move_on_after(5 if leave != "timeout" else 0.5):
        with contextlib.suppress(LookupError):
            async for event in flow.stream(Store({"x": 1})):
                if event.kind == "node_start" and event.node_name == "Sleeper":
                    if leave == "break":
                        break
                    if leave == "error":
                        raise LookupError("the loop body failed")
    await anyio.sleep(0.01)  # the caller's task goes on awaiting
    await wait_for_status(db, "streamed", "cancelled")
    assert ["started", "cancelled"] == sleeper.record


LEFT_DURING_A_SYNC_EXEC = """
import sys, time, anyio
from pocoflow import Flow, Node, WorkflowDB

class SlowSync(Node):
    def exec(self, prep_res):
        time.sleep(0.3)  # a sync LLM call, in a worker thread

first = SlowSync()
first.then("default", SlowSync())
flow = Flow(start=first, db_path=sys.argv[2], run_id="left")

async def main():
    async for event in flow.stream({}):
        if event.kind == "node_start":
            break  # then the program returns while the exec runs

anyio.run(main, backend=sys.argv[1])
print(WorkflowDB(sys.argv[2]).get_run("left")["status"])
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_program_that_leaves_a_stream_during_a_sync_exec_ends(tmp_path: Any,
                                                                 backend: str) -> None:
    """A program leaves `async for event in flow.stream(...)` while a sync exec runs in
    a worker thread, and returns: it ends, its run recorded cancelled. (On trio it hung:
    the listener that brings worker results back was cancelled with the main task,
    while the streamed run still waited for its exec.)"""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "leave.py"
    script.write_text(LEFT_DURING_A_SYNC_EXEC)
    done = subprocess.run(
        [sys.executable, str(script), backend, str(tmp_path / "runs.db")],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert (0, "cancelled") == (done.returncode, done.stdout.strip()), done.stderr


@pytest.mark.anyio
async def test_a_node_ending_the_program_in_a_streamed_run_ends_it_as_it_asked() -> None:
    """sys.exit() in a node of a streamed run reaches the consumer as SystemExit, on
    trio too (out of the trio system task the run is in, it was a TrioInternalError)."""

    class Exit(Node):
        def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
            raise SystemExit(3)

    with pytest.raises(SystemExit) as info:
        async for _ in Flow(start=Exit()).stream(Store()):
            pass
    assert 3 == info.value.code


@pytest.mark.anyio
async def test_closing_a_stream_cancels_its_run_and_waits_for_its_end(tmp_path: Any) -> None:
    """`async with flow.stream(store) as events`: leaving the block cancels the run and
    waits until its end is recorded."""
    flow, sleeper, db = sleeper_flow(tmp_path)
    async with flow.stream(Store({"x": 1})) as events:
        async for event in events:
            if event.kind == "node_start" and event.node_name == "Sleeper":
                break
    assert "cancelled" == db.get_run("streamed")["status"]  # type: ignore[index]
    assert ["started", "cancelled"] == sleeper.record


@pytest.mark.anyio
async def test_a_stream_iterated_by_a_cancelled_task_cancels_its_run(tmp_path: Any) -> None:
    """The task iterating a stream is cancelled while it waits for the next event: the
    run, started for that task, is cancelled too."""
    flow, sleeper, db = sleeper_flow(tmp_path)

    async def consume() -> None:
        async for _ in flow.stream(Store({"x": 1})):
            pass

    async with anyio.create_task_group() as group:
        group.start_soon(consume)
        with anyio.fail_after(10):
            while not sleeper.record:
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    await wait_for_status(db, "streamed", "cancelled")
    assert ["started", "cancelled"] == sleeper.record


@pytest.mark.anyio
async def test_enclosing_cancel_scope_stops_run_async_at_an_awaiting_node() -> None:
    """anyio.move_on_after around run_async cancels an AsyncNode where it awaits."""
    sleeper = Sleeper()
    add = Add("y", 1)
    add.then("default", sleeper)
    store = Store({"x": 1})

    with anyio.move_on_after(0.5) as scope:
        await Flow(start=add).run_async(store)

    assert True is scope.cancelled_caught
    assert ["started", "cancelled"] == sleeper.record
    assert {"x": 1, "y": 2} == store.as_dict()
