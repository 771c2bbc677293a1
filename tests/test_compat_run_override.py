"""pocoflow 0.2 programs that override ``Node._run`` (to time or trace a node) keep working."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pocoflow import AsyncNode, Flow, Node, Store
from pocoflow.events import Event

pytestmark = pytest.mark.anyio


class Timed(Node):
    """The 0.2 way to time a node: wrap super()._run."""

    log: list[str]

    def _run(self, store: Any) -> str:
        began = time.time()
        action = super()._run(store)
        store["timings"] = [*store.get("timings", []), (self.name, time.time() - began)]
        return action


class Greet(Timed):
    max_retries = 2

    def __init__(self) -> None:
        super().__init__()
        self.threads: dict[str, str] = {}
        self.failed_once = False

    def prep(self, store: Any) -> str:
        self.threads["prep"] = threading.current_thread().name
        return store["name"]

    def exec(self, name: str) -> str:
        if not self.failed_once:
            self.failed_once = True
            raise ConnectionError("flaky")
        return f"hello {name}"

    def post(self, store: Any, prep_res: str, exec_res: str) -> str:
        self.threads["post"] = threading.current_thread().name
        store["greeting"] = exec_res
        return "done"


async def test_a_run_override_calling_super_runs_around_the_phases() -> None:
    """The override runs (its timing lands in the store), the phases run with retries,
    prep and post on the event loop's thread, and the action routes the flow."""
    greet, after = Greet(), Node(name="After")
    greet.then("done", after)
    heard: list[Event] = []
    loop_thread = threading.current_thread().name

    store = await Flow(start=greet, sinks=[heard.append]).run_async({"name": "ada"})

    assert "hello ada" == store["greeting"]
    assert ["Greet"] == [name for name, _ in store["timings"]]
    assert {"prep": loop_thread, "post": loop_thread} == greet.threads
    assert ["flow_start", "node_start", "node_retry", "node_end", "node_start", "node_end",
            "flow_end"] == [e.kind for e in heard]


async def test_a_run_override_that_does_the_phases_itself_is_honoured() -> None:
    """An override that never calls super() decides the action on its own."""

    class Custom(Node):
        def _run(self, store: Any) -> str:
            store["ran"] = "custom"
            return "left"

    custom, left, right = Custom(), Node(name="Left"), Node(name="Right")
    custom.then("left", left).then("right", right)
    heard: list[str] = []
    store = await Flow(start=custom, sinks=[lambda e: heard.append(
        getattr(e, "node_name", ""))]).run_async({})

    assert "custom" == store["ran"]
    assert "Left" in heard
    assert "Right" not in heard


async def test_a_run_override_on_an_async_node_works_too() -> None:
    """An AsyncNode subclass with a 0.2 _run override still awaits exec_async."""

    class Fetch(AsyncNode):
        def _run(self, store: Any) -> str:
            store["wrapped"] = True
            return super()._run(store)

        async def exec_async(self, prep_res: Any) -> str:
            return "fetched"

        def post(self, store: Any, prep_res: Any, exec_res: str) -> None:
            store["result"] = exec_res

    store = await Flow(start=Fetch()).run_async({})
    assert {"wrapped": True, "result": "fetched"} == dict(store)


def test_run_called_outside_a_flow_runs_the_node_alone() -> None:
    """node._run(store), as 0.2 tests of a single node did, runs prep, exec and post."""
    greet = Greet()
    store = Store({"name": "bo"})

    assert "done" == greet._run(store)
    assert "hello bo" == store["greeting"]


def test_a_run_override_works_through_the_sync_facade() -> None:
    """flow.run() (no running loop) honours the override as run_async does."""
    store = Flow(start=Greet()).run({"name": "cy"})
    assert "hello cy" == store["greeting"]
    assert 1 == len(store["timings"])
