"""Nodes: the three phases, edges, threads, retries, timeouts, batches and nesting."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from typing import Any

import anyio
import pytest

import pocoflow
from pocoflow import AsyncBatchNode, AsyncNode, BatchNode, Flow, Node, Store

pytestmark = pytest.mark.anyio


class Record(Node):
    """Appends its name to ``store["trail"]`` and returns a fixed action."""

    def __init__(self, action: str | None = "default", *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.action = action

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str | None:
        store.setdefault("trail", []).append(self.name)
        return self.action


def started_names(flow: Flow) -> list[str]:
    """Register a node_start hook on *flow* and return the list it fills."""
    names: list[str] = []
    flow.on("node_start", lambda name, store: names.append(name))
    return names


# ── the three phases ────────────────────────────────────────────────────────


async def test_bare_node_subclass_runs_with_default_phases() -> None:
    """A Node subclass defining no phase runs and routes on "default"."""

    class Bare(Node):
        pass

    bare = Bare()
    bare.then("default", Record("done", name="After"))
    store = await Flow(start=bare).run_async(Store())
    assert ["After"] == store["trail"]


async def test_post_returning_none_follows_default_edge() -> None:
    """post returning None follows the "default" edge."""
    start = Record(None, name="Start")
    start.then("default", Record("done", name="Next"))
    store = await Flow(start=start).run_async({})
    assert ["Start", "Next"] == store["trail"]


async def test_phases_pass_results_along() -> None:
    """prep's result goes to exec, and both prep's and exec's results go to post."""

    class Upper(Node):
        def prep(self, store: Any) -> str:
            return store["text"]

        def exec(self, text: str) -> str:
            return text.upper()

        def post(self, store: Any, prep_res: str, exec_res: str) -> str:
            store["seen"] = (prep_res, exec_res)
            return "done"

    store = await Flow(start=Upper()).run_async({"text": "hola"})
    assert ("hola", "HOLA") == store["seen"]


# ── edges ───────────────────────────────────────────────────────────────────


def test_phases_take_02s_parameter_names_by_keyword() -> None:
    """exec(prep_result=...), post(store, prep_result=..., exec_result=...) and
    exec_fallback(prep_result=..., exc=...) work by keyword, with pocoflow 0.2's names;
    so do AsyncNode's exec_async, exec, post_async and exec_fallback_async."""
    node, store = Node(), Store()
    assert node.exec(prep_result=1) is None
    assert "default" == node.post(store, prep_result=1, exec_result=2)
    with pytest.raises(KeyError):
        node.exec_fallback(prep_result=1, exc=KeyError("k"))

    class Add(AsyncNode):
        async def exec_async(self, prep_result: int) -> int:
            return prep_result + 1

    async_node = Add()
    assert 2 == async_node.exec(prep_result=1)
    assert 3 == anyio.run(lambda: async_node.exec_async(prep_result=2))
    assert "default" == anyio.run(lambda: async_node.post_async(store, prep_result=1,
                                                                exec_result=2))
    with pytest.raises(KeyError):
        anyio.run(lambda: async_node.exec_fallback_async(prep_result=1, exc=KeyError("k")))


def test_then_returns_self_and_chains() -> None:
    """then() returns the node itself, so edges chain."""
    a, b, c = Record(name="A"), Record(name="B"), Record(name="C")
    assert a is a.then("ok", b).then("error", c)
    assert {"ok": b, "error": c} == a.successors


async def test_wildcard_matches_unknown_action() -> None:
    """A "*" edge catches an action that has no edge of its own."""
    a = Record("surprise", name="A")
    a.then("ok", Record("done", name="B")).then("*", Record("done", name="Fallback"))
    store = await Flow(start=a).run_async({})
    assert ["A", "Fallback"] == store["trail"]


async def test_named_edge_wins_over_wildcard() -> None:
    """A named edge is taken even when a "*" edge exists."""
    a = Record("ok", name="A")
    a.then("*", Record("done", name="Fallback")).then("ok", Record("done", name="B"))
    store = await Flow(start=a).run_async({})
    assert ["A", "B"] == store["trail"]


def test_overwriting_an_edge_logs_a_warning_naming_both_nodes(
        caplog: pytest.LogCaptureFixture) -> None:
    """Replacing an edge logs a WARNING on pocoflow.node naming the old and the new node
    (as pocoflow 0.2 did), and emits no Python warning (nothing new on stderr)."""
    a = Record(name="A")
    a.then("ok", Record(name="OldTarget"))
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="pocoflow"):
        warnings.simplefilter("error")
        a.then("ok", Record(name="NewTarget"))

    assert "NewTarget" == a.successors["ok"].name
    (record,) = caplog.records
    assert ("pocoflow.node", logging.WARNING) == (record.name, record.levelno)
    assert "'A'" in record.getMessage()
    assert "'OldTarget'" in record.getMessage()
    assert "'NewTarget'" in record.getMessage()


def test_setting_the_same_edge_again_logs_that_it_is_unchanged(
        caplog: pytest.LogCaptureFixture) -> None:
    """Wiring the same edge again (a graph built per request) keeps it and logs so."""
    a, b = Record(name="A"), Record(name="B")
    a.then("ok", b)
    with caplog.at_level(logging.WARNING, logger="pocoflow"):
        a.then("ok", b)

    assert b is a.successors["ok"]
    (record,) = caplog.records
    assert "unchanged" in record.getMessage()


def test_then_with_non_node_raises_type_error() -> None:
    """then() with something that is not a node raises TypeError naming the node and the fix."""
    a = Record(name="Review")
    with pytest.raises(TypeError, match="Review") as info:
        a.then("ok", "NextNode")
    assert "NextNode()" in str(info.value)


def test_then_with_node_class_raises_type_error() -> None:
    """then() with a node class instead of an instance raises TypeError."""
    a = Record(name="Review")
    with pytest.raises(TypeError, match="Review"):
        a.then("ok", Record)


@pytest.mark.parametrize("action", [1, None, "", b"ok"])
def test_then_with_bad_action_raises_type_error(action: Any) -> None:
    """then() with a non-string or empty action raises TypeError naming the node and the fix."""
    a = Record(name="Review")
    with pytest.raises(TypeError, match="Review") as info:
        a.then(action, Record(name="B"))
    assert ".then('done', next_node)" in str(info.value)


def test_then_with_swapped_arguments_raises_type_error() -> None:
    """then(node, action) raises TypeError showing the call with the arguments in order."""
    a, b = Record(name="Review"), Record(name="Publish")
    with pytest.raises(TypeError, match="Review") as info:
        a.then(b, "ok")
    assert "review.then('ok', publish)" in str(info.value)


async def test_post_returning_non_string_raises_type_error() -> None:
    """post returning something other than a str or None fails the run with a TypeError."""

    class Counting(Node):
        def post(self, store: Any, prep_res: Any, exec_res: Any) -> Any:
            return 42

    with pytest.raises(TypeError, match="Counting") as info:
        await Flow(start=Counting()).run_async({})
    assert "42" in str(info.value)


# ── subclasses and names ────────────────────────────────────────────────────


async def test_subclass_without_super_init_works() -> None:
    """A subclass whose __init__ skips super().__init__() keeps edges, name and run."""

    class Greeter(Node):
        def __init__(self, greeting: str) -> None:
            self.greeting = greeting

        def exec(self, prep_res: Any) -> str:
            return self.greeting

        def post(self, store: Any, prep_res: Any, exec_res: str) -> str:
            store.setdefault("said", []).append(exec_res)
            return "next"

    first, second = Greeter("hola"), Greeter("adios")
    assert "Greeter" == first.name
    second.name = "Farewell"
    assert first is first.then("next", second)
    flow = Flow(start=first)
    names = started_names(flow)
    store = await flow.run_async({})
    assert ["hola", "adios"] == store["said"]
    assert ["Greeter", "Farewell"] == names


async def test_name_keyword_and_attribute_label_events() -> None:
    """name= and node.name = ... set the label hooks see; the default is the class name."""
    keyword = Record(name="ByKeyword")
    attribute = Record()
    attribute.name = "ByAttribute"
    default = Record("done")
    keyword.then("default", attribute)
    attribute.then("default", default)
    flow = Flow(start=keyword)
    names = started_names(flow)
    await flow.run_async({})
    assert ["ByKeyword", "ByAttribute", "Record"] == names


class WeatherTool(Node):
    """A tool node that describes itself to an LLM with class attributes."""

    name = "get_weather"
    description = "Current weather for a city"

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        store["ran"] = True
        return "done"


async def test_class_attribute_name_stays_on_the_class_and_the_node_keeps_its_class_name(
        tmp_path: Any) -> None:
    """A plain class attribute `name` (a tool name) is still the class's, but the node is
    named after its class in hooks and checkpoint files, as pocoflow 0.2's Node.__init__
    made it."""
    tool = WeatherTool()
    flow = Flow(start=tool, checkpoint_dir=tmp_path)
    names = started_names(flow)
    await flow.run_async({})

    assert "get_weather" == WeatherTool.name
    assert "WeatherTool" == tool.name
    assert ["WeatherTool"] == names
    assert ["step_000_WeatherTool.json"] == [p.name for p in tmp_path.iterdir()]


def test_class_attribute_name_can_still_be_overridden_per_node() -> None:
    """Node(name=...) and node.name = ... still name a node whose class has a `name`
    attribute, and subclasses inherit the behaviour."""

    class Forecast(WeatherTool):
        pass

    renamed = WeatherTool()
    renamed.name = "Weather2"

    assert "Weather1" == WeatherTool(name="Weather1").name
    assert "Weather2" == renamed.name
    assert ("Forecast", "get_weather") == (Forecast().name, Forecast.name)
    with pytest.raises(TypeError, match="non-empty str"):
        renamed.name = ""


def test_a_name_property_on_a_subclass_is_left_alone() -> None:
    """A subclass that defines `name` as a property decides the node's name itself."""

    class Computed(Node):
        @property
        def name(self) -> str:
            return "computed"

    assert "computed" == Computed().name


# ── where each phase runs ───────────────────────────────────────────────────


class WhereAmI(Node):
    """Records the thread id of each phase in the store."""

    def prep(self, store: Any) -> None:
        store["prep"] = threading.get_ident()

    def exec(self, prep_res: Any) -> int:
        return threading.get_ident()

    def post(self, store: Any, prep_res: Any, exec_res: int) -> str:
        store["exec"] = exec_res
        store["post"] = threading.get_ident()
        return "done"


async def test_sync_exec_runs_off_the_loop_thread() -> None:
    """A sync exec runs in a worker thread while prep and post run on the loop thread."""
    loop_thread = threading.get_ident()
    store = await Flow(start=WhereAmI()).run_async({})
    assert loop_thread == store["prep"]
    assert loop_thread == store["post"]
    assert loop_thread != store["exec"]


async def test_unthreaded_exec_runs_on_the_loop_thread() -> None:
    """threaded = False runs a sync exec inline on the loop thread."""

    class Inline(WhereAmI):
        threaded = False

    loop_thread = threading.get_ident()
    store = await Flow(start=Inline()).run_async({})
    assert loop_thread == store["exec"]


async def test_async_exec_runs_on_the_loop_thread() -> None:
    """An AsyncNode's exec_async is awaited on the loop thread."""

    class AsyncWhere(AsyncNode):
        async def exec_async(self, prep_res: Any) -> int:
            await anyio.sleep(0)
            return threading.get_ident()

        def post(self, store: Any, prep_res: Any, exec_res: int) -> str:
            store["exec"] = exec_res
            return "done"

    loop_thread = threading.get_ident()
    store = await Flow(start=AsyncWhere()).run_async({})
    assert loop_thread == store["exec"]


class Doubler(AsyncNode):
    """exec_async doubles its input, after a turn of the loop."""

    async def exec_async(self, prep_res: int) -> int:
        await anyio.sleep(0)
        return prep_res * 2


def test_async_node_exec_called_directly_runs_exec_async() -> None:
    """AsyncNode.exec(x) called directly (a unit test of the node) returns exec_async's
    result, as in pocoflow 0.2."""
    assert 42 == Doubler().exec(21)


async def test_async_node_exec_called_directly_works_inside_a_running_loop() -> None:
    """AsyncNode.exec(x) called from code that already runs an event loop still returns
    exec_async's result (0.2's asyncio.run failed there)."""
    assert 42 == Doubler().exec(21)


async def test_engine_awaits_exec_async_and_never_calls_async_node_exec() -> None:
    """In a run, the engine awaits exec_async on the loop thread itself; AsyncNode.exec
    (the blocking bridge for direct calls) is not used."""

    class Watched(AsyncNode):
        async def exec_async(self, prep_res: Any) -> int:
            return threading.get_ident()

        def post(self, store: Any, prep_res: Any, exec_res: int) -> None:
            store["exec"] = exec_res

    called = []
    original = AsyncNode.exec

    def spy(self: AsyncNode, prep_res: Any) -> Any:
        called.append(self)
        return original(self, prep_res)

    loop_thread = threading.get_ident()
    AsyncNode.exec = spy  # type: ignore[method-assign]
    try:
        store = await Flow(start=Watched()).run_async({})
    finally:
        AsyncNode.exec = original  # type: ignore[method-assign]
    assert loop_thread == store["exec"]
    assert [] == called


def test_plan_of_async_nodes_picks_exec_async_unless_only_exec_is_overridden() -> None:
    """A class that overrides neither exec nor exec_async, or exec_async, has exec_async
    awaited; one that overrides exec with a sync function has exec run in a thread."""

    class Neither(AsyncNode):
        pass

    class SyncExec(AsyncNode):
        def exec(self, prep_res: Any) -> str:
            return "sync"

    class Both(AsyncNode):
        def exec(self, prep_res: Any) -> str:
            return "sync"

        async def exec_async(self, prep_res: Any) -> str:
            return "async"

    assert [("exec_async", True)] * 4 + [("exec", False)] == [
        (cls._plan.exec, cls._plan.exec_await)
        for cls in (AsyncNode, Neither, Doubler, Both, SyncExec)]


async def test_async_node_overriding_exec_with_a_sync_function_runs_it_in_a_thread() -> None:
    """An AsyncNode subclass that overrides exec (sync) and not exec_async has its exec
    run in a worker thread, like a Node's."""

    class SyncExec(AsyncNode):
        def exec(self, prep_res: Any) -> int:
            return threading.get_ident()

        def post(self, store: Any, prep_res: Any, exec_res: int) -> None:
            store["exec"] = exec_res

    store = await Flow(start=SyncExec()).run_async({})
    assert threading.get_ident() != store["exec"]


async def test_async_prep_and_post_are_used_when_defined() -> None:
    """prep_async and post_async replace prep and post when an AsyncNode defines them."""

    class FullyAsync(AsyncNode):
        def prep(self, store: Any) -> str:
            return "sync prep"

        async def prep_async(self, store: Any) -> str:
            await anyio.sleep(0)
            return store["x"] + "-prepped"

        async def exec_async(self, prep_res: str) -> str:
            return prep_res + "-executed"

        def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
            store["result"] = "sync post"
            return "wrong"

        async def post_async(self, store: Any, prep_res: str, exec_res: str) -> str:
            await anyio.sleep(0)
            store["result"] = exec_res
            return "finished"

    start = FullyAsync()
    start.then("finished", Record("done", name="End"))
    store = await Flow(start=start).run_async({"x": "in"})
    assert "in-prepped-executed" == store["result"]
    assert ["End"] == store["trail"]


async def test_async_exec_fallback_is_awaited() -> None:
    """exec_fallback_async of an AsyncNode is awaited and its value goes to post."""

    class Flaky(AsyncNode):
        max_retries = 2

        async def exec_async(self, prep_res: Any) -> str:
            raise ConnectionError("down")

        async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> str:
            await anyio.sleep(0)
            return f"fallback after {exc}"

        def post(self, store: Any, prep_res: Any, exec_res: str) -> str:
            store["result"] = exec_res
            return "done"

    store = await Flow(start=Flaky()).run_async({})
    assert "fallback after down" == store["result"]


# ── retries ─────────────────────────────────────────────────────────────────


class FailTimes(Node):
    """exec raises ``error`` for the first ``failures`` attempts, then returns "ok"."""

    def __init__(self, failures: int, error: type[Exception] = ValueError, **config: Any):
        super().__init__(**config)
        self.failures = failures
        self.error = error
        self.attempts: list[float] = []

    def exec(self, prep_res: Any) -> str:
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.failures:
            raise self.error(f"attempt {len(self.attempts)}")
        return "ok"

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        store["result"] = exec_res
        return "done"


async def test_max_retries_counts_total_attempts() -> None:
    """max_retries is the total number of attempts: 3 allows two failures."""
    node = FailTimes(2, max_retries=3)
    store = await Flow(start=node).run_async({})
    assert "ok" == store["result"]
    assert 3 == len(node.attempts)


async def test_default_fallback_reraises_the_last_error() -> None:
    """When attempts run out, the default exec_fallback re-raises the last error."""
    node = FailTimes(5, max_retries=3)
    with pytest.raises(ValueError, match="attempt 3"):
        await Flow(start=node).run_async({})
    assert 3 == len(node.attempts)


async def test_retry_delay_grows_with_backoff() -> None:
    """retry_delay waits before the first retry and is multiplied by retry_backoff after."""
    node = FailTimes(2, max_retries=3, retry_delay=0.04, retry_backoff=2.0)
    await Flow(start=node).run_async({})
    first_gap = node.attempts[1] - node.attempts[0]
    second_gap = node.attempts[2] - node.attempts[1]
    assert first_gap >= 0.04 * 0.95
    assert second_gap >= 0.08 * 0.95


async def test_retry_on_retries_listed_types() -> None:
    """An error of a type listed in retry_on is retried."""
    node = FailTimes(2, error=KeyError, max_retries=3, retry_on=(KeyError,))
    store = await Flow(start=node).run_async({})
    assert "ok" == store["result"]
    assert 3 == len(node.attempts)


async def test_retry_on_does_not_retry_other_types() -> None:
    """An error of a type not in retry_on is raised after one attempt."""
    node = FailTimes(2, error=ValueError, max_retries=3, retry_on=(KeyError,))
    with pytest.raises(ValueError, match="attempt 1"):
        await Flow(start=node).run_async({})
    assert 1 == len(node.attempts)


async def test_retry_on_unlisted_error_goes_straight_to_fallback() -> None:
    """An error not in retry_on reaches exec_fallback after a single attempt."""

    class Fallback(FailTimes):
        def exec_fallback(self, prep_res: Any, exc: Exception) -> str:
            return f"fallback: {type(exc).__name__}"

    node = Fallback(2, error=ValueError, max_retries=3, retry_on=KeyError)
    store = await Flow(start=node).run_async({})
    assert "fallback: ValueError" == store["result"]
    assert 1 == len(node.attempts)


async def test_exec_fallback_result_becomes_exec_result() -> None:
    """exec_fallback gets prep's result and the last error; its return value goes to post."""

    class Fallback(FailTimes):
        def prep(self, store: Any) -> str:
            return store["query"]

        def exec_fallback(self, prep_res: Any, exc: Exception) -> str:
            return f"{prep_res}: {exc}"

    node = Fallback(5, max_retries=2)
    store = await Flow(start=node).run_async({"query": "q"})
    assert "q: attempt 2" == store["result"]
    assert 2 == len(node.attempts)


# ── timeouts ────────────────────────────────────────────────────────────────


async def test_async_node_timeout_raises_node_timeout_error() -> None:
    """An exec_async that awaits past timeout raises NodeTimeoutError naming the node."""

    class Slow(AsyncNode):
        timeout = 0.05

        async def exec_async(self, prep_res: Any) -> None:
            await anyio.sleep(5)

    with pytest.raises(pocoflow.NodeTimeoutError, match="Slow") as info:
        await Flow(start=Slow()).run_async({})
    assert isinstance(info.value, TimeoutError)


async def test_sync_node_timeout_raises_node_timeout_error() -> None:
    """A sync exec that sleeps past timeout raises NodeTimeoutError naming the node."""

    class SlowSync(Node):
        timeout = 0.05

        def exec(self, prep_res: Any) -> None:
            time.sleep(0.3)

    with pytest.raises(pocoflow.NodeTimeoutError, match="SlowSync") as info:
        await Flow(start=SlowSync()).run_async({})
    assert isinstance(info.value, TimeoutError)


async def test_timed_out_attempt_is_retried() -> None:
    """An attempt that times out is retried when max_retries allows another."""

    class SlowOnce(AsyncNode):
        timeout = 0.05
        max_retries = 2

        def __init__(self) -> None:
            super().__init__()
            self.attempts = 0

        async def exec_async(self, prep_res: Any) -> str:
            self.attempts += 1
            if self.attempts == 1:
                await anyio.sleep(5)
            return "second time lucky"

        def post(self, store: Any, prep_res: Any, exec_res: str) -> str:
            store["result"] = exec_res
            return "done"

    node = SlowOnce()
    store = await Flow(start=node).run_async({})
    assert "second time lucky" == store["result"]
    assert 2 == node.attempts


# ── bad configuration ───────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("config", "word"),
    [
        ({"max_retries": 0}, "max_retries"),
        ({"retry_delay": -1}, "retry_delay"),
        ({"retry_on": "x"}, "retry_on"),
        ({"timeout": 0}, "timeout"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
async def test_bad_retry_config_fails_before_any_node_runs(
    config: dict[str, Any], word: str
) -> None:
    """A bad retry setting raises FlowConfigError naming the node before any node runs."""

    class Misconfigured(AsyncBatchNode):
        pass

    first = Record(name="First")
    first.then("default", Misconfigured(name="Broken", **config))
    store: dict[str, Any] = {}
    with pytest.raises(pocoflow.FlowConfigError, match="Broken") as info:
        await Flow(start=first).run_async(store)
    assert isinstance(info.value, ValueError)
    assert word in str(info.value)
    assert {} == store


async def test_bad_config_in_nested_flow_fails_before_any_node_runs() -> None:
    """A bad setting on a node inside a nested flow is reported before any node runs."""
    inner = Flow(start=FailTimes(0, name="Broken", max_retries=0), flow_name="inner")
    first = Record(name="First")
    first.then("default", inner)
    store: dict[str, Any] = {}
    with pytest.raises(pocoflow.FlowConfigError, match="Broken"):
        await Flow(start=first).run_async(store)
    assert {} == store


# ── batches ─────────────────────────────────────────────────────────────────


class Squares(BatchNode):
    """Squares each item; item 3 fails on its first attempt."""

    max_retries = 2

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def prep(self, store: Any) -> Any:
        return store["items"]

    def exec(self, item: int) -> int:
        self.calls.append(item)
        if item == 3 and self.calls.count(3) == 1:
            raise ValueError("flaky item")
        return item * item

    def post(self, store: Any, prep_res: Any, exec_res: list[int]) -> str:
        store["squares"] = exec_res
        return "done"


async def test_batch_node_execs_each_item_in_order() -> None:
    """A BatchNode runs exec once per item and hands post the results in item order."""
    node = Squares()
    store = await Flow(start=node).run_async({"items": [1, 2, 4]})
    assert [1, 4, 16] == store["squares"]
    assert [1, 2, 4] == node.calls


async def test_batch_node_retries_per_item() -> None:
    """A failing item is retried on its own; the other items run once."""
    node = Squares()
    store = await Flow(start=node).run_async({"items": [2, 3, 5]})
    assert [4, 9, 25] == store["squares"]
    assert [2, 3, 3, 5] == node.calls


async def test_batch_prep_none_means_no_items() -> None:
    """prep returning None gives post an empty list and never calls exec."""
    node = Squares()
    store = await Flow(start=node).run_async({"items": None})
    assert [] == store["squares"]
    assert [] == node.calls


async def test_batch_prep_non_iterable_raises_type_error() -> None:
    """prep returning a non-iterable raises TypeError naming the batch node."""
    with pytest.raises(TypeError, match="Squares"):
        await Flow(start=Squares()).run_async({"items": 42})


async def test_async_batch_respects_max_concurrency() -> None:
    """AsyncBatchNode(max_concurrency=2) never runs more than two items at once."""
    running = 0
    peak = 0

    class Limited(AsyncBatchNode):
        def prep(self, store: Any) -> list[int]:
            return list(range(6))

        async def exec_async(self, item: int) -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.01)
            running -= 1
            return item

        def post(self, store: Any, prep_res: Any, exec_res: list[int]) -> str:
            store["results"] = exec_res
            return "done"

    store = await Flow(start=Limited(max_concurrency=2)).run_async({})
    assert 2 == peak
    assert [0, 1, 2, 3, 4, 5] == store["results"]


async def test_async_batch_keeps_item_order_when_items_finish_in_reverse() -> None:
    """AsyncBatchNode results follow item order even when the last item finishes first."""
    count = 4
    finished: list[int] = []

    class Reverse(AsyncBatchNode):
        def __init__(self) -> None:
            self.done = [anyio.Event() for _ in range(count)]

        def prep(self, store: Any) -> list[int]:
            return list(range(count))

        async def exec_async(self, item: int) -> str:
            if item + 1 < count:
                await self.done[item + 1].wait()
            finished.append(item)
            self.done[item].set()
            return f"item-{item}"

        def post(self, store: Any, prep_res: Any, exec_res: list[str]) -> str:
            store["results"] = exec_res
            return "done"

    store = await Flow(start=Reverse()).run_async({})
    assert [3, 2, 1, 0] == finished
    assert ["item-0", "item-1", "item-2", "item-3"] == store["results"]


async def test_async_batch_item_failure_raises_its_own_type() -> None:
    """A failing item in an AsyncBatchNode raises its own exception, not an ExceptionGroup."""

    class OneBad(AsyncBatchNode):
        def prep(self, store: Any) -> list[int]:
            return [1, 2, 3]

        async def exec_async(self, item: int) -> int:
            await anyio.sleep(0)
            if item == 2:
                raise KeyError("item 2 is bad")
            return item

    with pytest.raises(KeyError, match="item 2 is bad"):
        await Flow(start=OneBad()).run_async({})


async def test_async_batch_retries_per_item() -> None:
    """A failing item of an AsyncBatchNode is retried on its own."""
    calls: list[int] = []

    class FlakyItems(AsyncBatchNode):
        max_retries = 2

        def prep(self, store: Any) -> list[int]:
            return [1, 2, 3]

        async def exec_async(self, item: int) -> int:
            calls.append(item)
            if item == 2 and calls.count(2) == 1:
                raise ValueError("flaky")
            return item * 10

        def post(self, store: Any, prep_res: Any, exec_res: list[int]) -> str:
            store["results"] = exec_res
            return "done"

    store = await Flow(start=FlakyItems(max_concurrency=1)).run_async({})
    assert [10, 20, 30] == store["results"]
    assert [1, 2, 2, 3] == sorted(calls)


# ── nested flows ────────────────────────────────────────────────────────────


async def test_nested_flow_runs_inner_graph_and_routes_on_last_action() -> None:
    """A Flow used as a node runs its graph; the outer flow routes on its last action."""
    inner_start = Record(name="InnerA")
    inner_start.then("default", Record("inner_done", name="InnerB"))
    inner = Flow(start=inner_start, flow_name="inner")
    outer_start = Record(name="Outer")
    outer_start.then("default", inner)
    inner.then("inner_done", Record("done", name="After")).then(
        "default", Record("done", name="Wrong")
    )
    store = await Flow(start=outer_start, flow_name="outer").run_async({})
    assert ["Outer", "InnerA", "InnerB", "After"] == store["trail"]


async def test_nested_flow_hooks_fire_for_inner_nodes() -> None:
    """The inner flow's hooks fire for its own nodes; the outer sees the inner flow as one node."""
    inner_start = Record(name="InnerA")
    inner_start.then("default", Record("done", name="InnerB"))
    inner = Flow(start=inner_start, flow_name="inner")
    inner_names = started_names(inner)
    outer_start = Record(name="Outer")
    outer_start.then("default", inner)
    outer = Flow(start=outer_start, flow_name="outer")
    outer_names = started_names(outer)
    await outer.run_async({})
    assert ["InnerA", "InnerB"] == inner_names
    assert ["Outer", "inner"] == outer_names
