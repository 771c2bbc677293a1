"""pocoflow.otel: the span tree, timing, attributes and outcomes of runs traced by the sink."""

from __future__ import annotations

import importlib
import itertools
import logging
import os
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from pocoflow import AsyncBatchNode, AsyncNode, BatchNode, Flow, Node, Pause
from pocoflow.otel import OpenTelemetrySink

ROOT = Path(__file__).resolve().parents[1]

# ── fixtures and helpers ────────────────────────────────────────────────────


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """A provider of the test's own (the global one is never touched)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def sink(provider: TracerProvider) -> Iterator[OpenTelemetrySink]:
    sink = OpenTelemetrySink(provider)
    yield sink
    assert {} == sink._runs, "the sink kept state of runs that ended"


def outline(spans: Sequence[ReadableSpan]) -> list[str]:
    """The span tree as indented names, children in start order."""
    ours = {span.context.span_id for span in spans}
    children: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children[parent if parent in ours else None].append(span)
    lines: list[str] = []

    def add(parent: int | None, depth: int) -> None:
        for span in sorted(children[parent], key=lambda s: s.start_time or 0):
            lines.append("  " * depth + span.name)
            add(span.context.span_id, depth + 1)

    add(None, 0)
    return lines


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    [span] = named(spans, name)
    return span


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def exception_types(span: ReadableSpan) -> list[Any]:
    return [e.attributes["exception.type"] for e in span.events
            if e.name == "exception" and e.attributes is not None]


class Step(Node):
    """Returns ``action``; exec runs inline (no worker thread)."""

    threaded = False

    def __init__(self, name: str, action: str | None = None) -> None:
        super().__init__(name=name)
        self.action = action

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str | None:
        return self.action


class Flaky(Node):
    """exec fails ``failures`` times with ConnectionError, then returns "ok"."""

    max_retries = 3
    retry_delay = 0.01

    def __init__(self, failures: int) -> None:
        super().__init__(name="Fetch")
        self.failures = failures
        self.calls = 0

    def exec(self, prep_res: Any) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"attempt {self.calls} refused")
        return "ok"


class Boom(Node):
    def exec(self, prep_res: Any) -> None:
        raise ValueError("boom")


class Approve(Node):
    """Pauses the run unless the store says ``approved``."""

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        if not store.get("approved"):
            raise Pause("needs approval", ticket=7)


class Sleepy(AsyncNode):
    async def exec_async(self, prep_res: Any) -> None:
        await anyio.sleep(30)


def chain(*nodes: Any, name: str, **flow_options: Any) -> Flow:
    for first, second in itertools.pairwise(nodes):
        first.then("default", second)
    return Flow(start=nodes[0], flow_name=name, **flow_options)


def nested_flow(*inner_nodes: Any, sink: OpenTelemetrySink | None = None) -> Flow:
    """Outer: A → Inner (a flow of *inner_nodes*, default X → Y) → B."""
    inner = chain(*(inner_nodes or (Step("X"), Step("Y"))), name="Inner")
    return chain(Step("A"), inner, Step("B"), name="Outer",
                 sinks=[sink] if sink is not None else [])


# ── the span tree ───────────────────────────────────────────────────────────


@pytest.mark.anyio
async def test_retried_attempts_are_error_spans_under_their_node(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """Each failed, retried exec attempt is a child span of its node span, with its own
    timing inside the node's, status ERROR, the exception, and its attempt number."""
    flow = chain(Flaky(failures=2), Step("Summarize"), name="pipeline", sinks=[sink])

    await flow.run_async({})

    spans = exporter.get_finished_spans()
    assert ["flow pipeline", "  node Fetch", "    attempt Fetch", "    attempt Fetch",
            "  node Summarize"] == outline(spans)
    node = one(spans, "node Fetch")
    first, second = named(spans, "attempt Fetch")
    assert [1, 2] == [a.attributes["pocoflow.retry.attempt"] for a in (first, second)]
    assert 0.01 == first.attributes["pocoflow.retry.delay_s"]
    assert 2 == node.attributes["pocoflow.node.retries"]
    for attempt in (first, second):
        assert StatusCode.ERROR == attempt.status.status_code
        assert f"ConnectionError: attempt {attempt.attributes['pocoflow.retry.attempt']} " \
               "refused" == attempt.status.description
        assert ["ConnectionError"] == exception_types(attempt)
        assert "ConnectionError" == attempt.attributes["error.type"]
    assert node.start_time <= first.start_time < first.end_time <= second.start_time
    assert second.start_time - first.end_time >= 5_000_000  # the 10 ms retry delay
    assert second.end_time <= node.end_time
    assert StatusCode.UNSET == node.status.status_code


@pytest.mark.anyio
async def test_spans_carry_the_run_and_step_attributes(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """Run spans say flow, run id, start, status, steps and actions; node spans say run
    id, name, id, step, action, next node and status."""
    first, second = Step("A", action="ok"), Step("B", action="odd")
    first.then("ok", second)
    second.then("ok", Step("C"))  # "odd" has no edge: the run ends at B
    flow = Flow(start=first, flow_name="routes", sinks=[sink])

    await flow.run_async({})

    spans = exporter.get_finished_spans()
    run = one(spans, "flow routes")
    run_id = run.attributes["pocoflow.run.id"]
    assert run_id.startswith("routes-")
    assert {"pocoflow.flow.name": "routes", "pocoflow.run.id": run_id,
            "pocoflow.run.resumed": False, "pocoflow.run.start_node": "A",
            "pocoflow.run.start_step": 0, "pocoflow.run.status": "completed",
            "pocoflow.run.steps": 2, "pocoflow.run.last_action": "odd",
            "pocoflow.run.unmatched_action": "odd"} == dict(run.attributes)
    assert {"pocoflow.run.id": run_id, "pocoflow.node.name": "A", "pocoflow.node.id": "A",
            "pocoflow.node.step": 0, "pocoflow.node.action": "ok",
            "pocoflow.node.next_node": "B", "pocoflow.node.next_node_id": "B",
            "pocoflow.node.status": "completed"} == dict(one(spans, "node A").attributes)
    assert 1 == one(spans, "node B").attributes["pocoflow.node.step"]
    assert "pocoflow.node.next_node" not in one(spans, "node B").attributes
    assert StatusCode.UNSET == run.status.status_code
    assert trace.SpanKind.INTERNAL == run.kind
    assert "pocoflow" == run.instrumentation_scope.name


@pytest.mark.anyio
async def test_span_times_are_the_events_times(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """Spans start and end at the events' timestamps (UNIX ns), not when the sink ran."""
    times: dict[str, float] = {}
    flow = chain(Step("A"), Step("B"), name="timed", sinks=[sink])
    flow.add_sink(lambda e: times.setdefault(f"{e.kind} {getattr(e, 'node_name', '')}", e.ts))

    await flow.run_async({})

    spans = exporter.get_finished_spans()
    run, node = one(spans, "flow timed"), one(spans, "node B")
    assert int(times["flow_start "] * 1e9) == run.start_time
    assert int(times["flow_end "] * 1e9) == run.end_time
    assert int(times["node_start B"] * 1e9) == node.start_time
    assert int(times["node_end B"] * 1e9) == node.end_time


@pytest.mark.anyio
async def test_a_failing_node_fails_its_span_and_the_run_span(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """A node that raises: its span and the run's have status ERROR, the exception
    recorded and error.type; the run's status attribute is 'failed'."""
    flow = chain(Step("A"), Boom(), Step("Never"), name="broken", sinks=[sink])

    with pytest.raises(ValueError, match="boom"):
        await flow.run_async({})

    spans = exporter.get_finished_spans()
    assert ["flow broken", "  node A", "  node Boom"] == outline(spans)
    node, run = one(spans, "node Boom"), one(spans, "flow broken")
    for span in (node, run):
        assert StatusCode.ERROR == span.status.status_code
        assert "ValueError: boom" == span.status.description
        assert ["ValueError"] == exception_types(span)
        assert "ValueError" == span.attributes["error.type"]
    assert "failed" == node.attributes["pocoflow.node.status"]
    assert "failed" == run.attributes["pocoflow.run.status"]
    assert 1 == run.attributes["pocoflow.run.steps"]
    assert node.events[0].timestamp == node.end_time
    assert StatusCode.UNSET == one(spans, "node A").status.status_code


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("half-built")


class BoomUnprintable(Node):
    def exec(self, prep_res: Any) -> None:
        raise Unprintable


@pytest.mark.anyio
async def test_an_exception_whose_message_cannot_be_read_still_ends_both_spans(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """A node raising an exception whose ``__str__`` raises: the node span and the run
    span still end as ERROR, the exception recorded by its type (they used to be lost,
    leaving the failed run's trace without its failure)."""
    flow = chain(Step("A"), BoomUnprintable(), name="unprintable", sinks=[sink])

    with pytest.raises(Unprintable):
        await flow.run_async({})

    spans = exporter.get_finished_spans()
    assert ["flow unprintable", "  node A", "  node BoomUnprintable"] == outline(spans)
    for span in (one(spans, "node BoomUnprintable"), one(spans, "flow unprintable")):
        assert StatusCode.ERROR == span.status.status_code
        assert "could not be read" in (span.status.description or "")
        assert [f"{__name__}.Unprintable"] == exception_types(span)


@pytest.mark.anyio
async def test_a_run_that_fails_between_steps_records_the_error_on_the_run_span(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """An error outside any node (max_steps reached) fails the run span with it."""
    loop = Step("Loop")
    loop.then("default", loop)
    flow = Flow(start=loop, flow_name="loop", max_steps=3, sinks=[sink])

    with pytest.raises(RuntimeError, match="max_steps=3"):
        await flow.run_async({})

    spans = exporter.get_finished_spans()
    run = one(spans, "flow loop")
    assert ["flow loop", "  node Loop", "  node Loop", "  node Loop"] == outline(spans)
    assert StatusCode.ERROR == run.status.status_code
    assert "pocoflow.errors.MaxStepsExceeded" == run.attributes["error.type"]
    [recorded] = exception_types(run)  # the SDK qualifies the name since 1.2x
    assert recorded.endswith("MaxStepsExceeded")


@pytest.mark.anyio
async def test_a_nested_run_is_a_child_of_the_outer_node_that_ran_it(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """The nested run's span is a child of the outer 'node Inner' span, its nodes are
    its children, and every span shares the outer run's trace."""
    await nested_flow(sink=sink).run_async({})

    spans = exporter.get_finished_spans()
    assert ["flow Outer", "  node A", "  node Inner", "    flow Inner", "      node X",
            "      node Y", "  node B"] == outline(spans)
    outer, outer_node = one(spans, "flow Outer"), one(spans, "node Inner")
    inner = one(spans, "flow Inner")
    assert None is outer.parent
    assert outer.context.span_id == parent_of(outer_node)
    assert outer_node.context.span_id == parent_of(inner)
    assert [inner.context.span_id] * 2 == [parent_of(one(spans, "node X")),
                                           parent_of(one(spans, "node Y"))]
    assert {outer.context.trace_id} == {span.context.trace_id for span in spans}
    outer_id = outer.attributes["pocoflow.run.id"]
    assert f"{outer_id}.1" == inner.attributes["pocoflow.run.id"]
    assert outer_id == inner.attributes["pocoflow.run.parent_id"]
    assert f"{outer_id}.1" == one(spans, "node X").attributes["pocoflow.run.id"]
    assert outer_node.start_time <= inner.start_time <= inner.end_time <= outer_node.end_time


@pytest.mark.anyio
async def test_a_failure_in_a_nested_run_fails_every_span_it_passes(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """An inner node's error marks the inner node, the inner run, the outer node and the
    outer run as ERROR; the outer flow's later node never starts."""
    with pytest.raises(ValueError, match="boom"):
        await nested_flow(Step("X"), Boom(), sink=sink).run_async({})

    spans = exporter.get_finished_spans()
    assert ["flow Outer", "  node A", "  node Inner", "    flow Inner", "      node X",
            "      node Boom"] == outline(spans)
    failed = [s.name for s in spans if s.status.status_code == StatusCode.ERROR]
    assert ["flow Inner", "flow Outer", "node Boom", "node Inner"] == sorted(failed)


@pytest.mark.anyio
async def test_a_sink_on_the_inner_flow_only_traces_the_nested_run_as_a_root(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """A sink that hears only the nested run (its parent run untraced) makes the nested
    run's span a root span that still names its parent run id."""
    outer = nested_flow()
    outer.start.next_node("default").add_sink(sink)  # the Inner flow

    await outer.run_async({})

    spans = exporter.get_finished_spans()
    assert ["flow Inner", "  node X", "  node Y"] == outline(spans)
    inner = one(spans, "flow Inner")
    assert None is inner.parent
    assert inner.attributes["pocoflow.run.parent_id"].startswith("Outer-")


# ── batches ─────────────────────────────────────────────────────────────────


class FlakyItems(BatchNode):
    """exec fails once for item 2, with retries per item."""

    max_retries = 2

    def __init__(self) -> None:
        super().__init__(name="Items")
        self.failed: set[int] = set()

    def prep(self, store: Any) -> list[int]:
        return [1, 2, 3]

    def exec(self, item: int) -> int:
        if item == 2 and item not in self.failed:
            self.failed.add(item)
            raise TimeoutError(f"item {item} timed out")
        return item * 10

    def post(self, store: Any, prep_res: Any, exec_res: list[int]) -> None:
        store["results"] = exec_res


class FlakyAsyncItems(AsyncBatchNode):
    """Every item's first exec fails; items run two at a time."""

    max_retries = 2
    max_concurrency = 2

    def __init__(self) -> None:
        super().__init__(name="AsyncItems")
        self.failed: set[int] = set()

    async def prep_async(self, store: Any) -> list[int]:
        return list(range(5))

    async def exec_async(self, item: int) -> int:
        await anyio.sleep(0.002)
        if item not in self.failed:
            self.failed.add(item)
            raise ConnectionError(f"item {item} refused")
        return item

    async def post_async(self, store: Any, prep_res: Any, exec_res: list[int]) -> None:
        store["results"] = exec_res


@pytest.mark.anyio
async def test_a_batch_node_is_one_span_with_its_items_retries_under_it(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """A BatchNode's items share its one node span; an item's failed attempt is an
    attempt span under it."""
    flow = Flow(start=FlakyItems(), flow_name="batch", sinks=[sink])

    store = await flow.run_async({})

    assert [10, 20, 30] == store["results"]
    spans = exporter.get_finished_spans()
    assert ["flow batch", "  node Items", "    attempt Items"] == outline(spans)
    attempt = one(spans, "attempt Items")
    assert 1 == attempt.attributes["pocoflow.retry.attempt"]
    assert "TimeoutError: item 2 timed out" == attempt.status.description
    assert 1 == one(spans, "node Items").attributes["pocoflow.node.retries"]


@pytest.mark.anyio
async def test_an_async_batch_node_retries_items_concurrently_under_its_span(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """An AsyncBatchNode's concurrent items' failed attempts are all children of its
    node span, each within the node's time."""
    flow = Flow(start=FlakyAsyncItems(), flow_name="fanout", sinks=[sink])

    store = await flow.run_async({})

    assert [0, 1, 2, 3, 4] == store["results"]
    spans = exporter.get_finished_spans()
    node = one(spans, "node AsyncItems")
    attempts = named(spans, "attempt AsyncItems")
    assert 5 == len(attempts)
    assert [node.context.span_id] * 5 == [parent_of(a) for a in attempts]
    assert sorted(f"ConnectionError: item {i} refused" for i in range(5)) == sorted(
        a.status.description for a in attempts)
    assert all(node.start_time <= a.start_time < a.end_time <= node.end_time
               for a in attempts)
    assert 5 == node.attributes["pocoflow.node.retries"]


# ── pause and cancel ────────────────────────────────────────────────────────


@pytest.mark.anyio
async def test_a_paused_run_is_not_an_error_and_says_why_it_paused(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """A Pause ends the pausing node's span and the run's with status UNSET, the pause
    reason, status 'paused' and the node a resume starts at."""
    flow = chain(Step("A"), Approve(), Step("Never"), name="approval", sinks=[sink])

    await flow.run_async({})

    spans = exporter.get_finished_spans()
    assert ["flow approval", "  node A", "  node Approve"] == outline(spans)
    node, run = one(spans, "node Approve"), one(spans, "flow approval")
    for span in (node, run):
        assert StatusCode.UNSET == span.status.status_code
        assert () == span.events
        assert "needs approval" == span.attributes["pocoflow.pause.reason"]
    assert "paused" == node.attributes["pocoflow.node.status"]
    assert "paused" == run.attributes["pocoflow.run.status"]
    assert "Approve" == run.attributes["pocoflow.run.next_node"]
    assert node.end_time == run.end_time


@pytest.mark.anyio
async def test_a_pause_in_a_nested_run_pauses_the_outer_node_span(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """A Pause inside a nested flow ends the inner node, the inner run, the outer node
    and the outer run, all as paused, none as errors."""
    await nested_flow(Step("X"), Approve(), sink=sink).run_async({})

    spans = exporter.get_finished_spans()
    assert ["flow Outer", "  node A", "  node Inner", "    flow Inner", "      node X",
            "      node Approve"] == outline(spans)
    paused = {s.name: s.attributes.get("pocoflow.run.status",
                                       s.attributes.get("pocoflow.node.status"))
              for s in spans if s.name != "node X" and s.name != "node A"}
    assert {"flow Outer": "paused", "node Inner": "paused", "flow Inner": "paused",
            "node Approve": "paused"} == paused
    assert [] == [s.name for s in spans if s.status.status_code != StatusCode.UNSET]


@pytest.mark.anyio
async def test_a_cancelled_run_ends_its_spans_as_cancelled_not_failed(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """A run cancelled by the caller's scope ends its open node span and its run span
    with status UNSET and status attributes 'cancelled'."""
    flow = chain(Step("A"), Sleepy(), name="slow", sinks=[sink])

    with anyio.move_on_after(0.05):
        await flow.run_async({})

    spans = exporter.get_finished_spans()
    assert ["flow slow", "  node A", "  node Sleepy"] == outline(spans)
    node, run = one(spans, "node Sleepy"), one(spans, "flow slow")
    assert "cancelled" == node.attributes["pocoflow.node.status"]
    assert "cancelled" == run.attributes["pocoflow.run.status"]
    assert [StatusCode.UNSET] * 2 == [node.status.status_code, run.status.status_code]
    assert not trace.get_current_span().get_span_context().is_valid


# ── many runs, many flows ───────────────────────────────────────────────────


class Work(AsyncNode):
    """Sleeps a little, so concurrent runs interleave; records its run's tag."""

    async def prep_async(self, store: Any) -> Any:
        return store["tag"]

    async def exec_async(self, tag: int) -> int:
        await anyio.sleep((tag % 4) * 0.002)
        return tag

    async def post_async(self, store: Any, prep_res: Any, exec_res: int) -> None:
        store["done"] = exec_res


@pytest.mark.anyio
async def test_concurrent_runs_of_two_flows_keep_their_spans_apart(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """One sink traces 20 interleaved runs of two flows: each run is its own trace,
    and each node span is a child of its own run's span."""
    flows = [chain(Work(), Step("End"), name=name, sinks=[sink]) for name in ("one", "two")]

    async with anyio.create_task_group() as group:
        for tag in range(20):
            group.start_soon(flows[tag % 2].run_async, {"tag": tag})

    spans = exporter.get_finished_spans()
    runs = [s for s in spans if s.name.startswith("flow ")]
    assert 20 == len(runs)
    assert 20 == len({run.context.trace_id for run in runs})
    for run in runs:
        run_id = run.attributes["pocoflow.run.id"]
        members = [s for s in spans if s.context.trace_id == run.context.trace_id]
        assert [run.name, "  node Work", "  node End"] == outline(members)
        assert {run_id} == {s.attributes["pocoflow.run.id"] for s in members}
        assert run_id.startswith(run.attributes["pocoflow.flow.name"] + "-")


@pytest.mark.anyio
async def test_no_state_is_left_after_a_thousand_runs(
        provider: TracerProvider) -> None:
    """After 1,000 runs (nested, failing and paused ones too) the sink holds no run and
    the caller's current span is untouched."""
    sink = OpenTelemetrySink(provider)
    completing = nested_flow(sink=sink)
    failing = chain(Boom(), name="broken", sinks=[sink])
    pausing = chain(Approve(), name="approval", sinks=[sink])
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("caller") as caller:
        for index in range(1000):
            if index % 10 == 3:
                with pytest.raises(ValueError, match="boom"):
                    await failing.run_async({})
            else:
                await (pausing if index % 10 == 7 else completing).run_async({})
        assert caller is trace.get_current_span()

    assert {} == sink._runs


@pytest.mark.anyio
async def test_a_run_recorded_in_sqlite_is_traced_and_its_resume_too(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter, tmp_path: Path) -> None:
    """With db_path and the sink together, a paused run is recorded and traced; its
    resume is a new trace whose run span says resumed, at the paused step."""
    flow = chain(Step("A"), Approve(), Step("D"), name="approval",
                 db_path=tmp_path / "x.db", sinks=[sink])

    await flow.run_async({})
    [paused] = exporter.get_finished_spans()[-1:]
    run_id = paused.attributes["pocoflow.run.id"]
    exporter.clear()
    await flow.resume_async(run_id, updates={"approved": True})

    assert "completed" == (await flow.db.get_run(run_id))["status"]
    assert "paused" == paused.attributes["pocoflow.run.status"]
    spans = exporter.get_finished_spans()
    assert ["flow approval", "  node Approve", "  node D"] == outline(spans)
    resumed = one(spans, "flow approval")
    assert run_id == resumed.attributes["pocoflow.run.id"]
    assert (True, 1, "Approve") == (resumed.attributes["pocoflow.run.resumed"],
                                    resumed.attributes["pocoflow.run.start_step"],
                                    resumed.attributes["pocoflow.run.start_node"])
    assert 3 == resumed.attributes["pocoflow.run.steps"]
    assert paused.context.trace_id != resumed.context.trace_id


def test_a_background_run_is_traced(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """A run on the background loop (run_background) is traced like any other."""
    flow = nested_flow(sink=sink)

    flow.run_background({}).wait(timeout=10)

    assert ["flow Outer", "  node A", "  node Inner", "    flow Inner", "      node X",
            "      node Y", "  node B"] == outline(exporter.get_finished_spans())


@pytest.mark.anyio
async def test_a_streamed_run_is_traced(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """A run consumed with flow.stream() is traced; the stream still gets every event."""
    flow = chain(Step("A"), Flaky(failures=1), name="streamed", sinks=[sink])

    kinds = [event.kind async for event in flow.stream({})]

    assert ["flow_start", "node_start", "node_end", "node_start", "node_retry", "node_end",
            "flow_end"] == kinds
    assert ["flow streamed", "  node A", "  node Fetch", "    attempt Fetch"] == outline(
        exporter.get_finished_spans())


# ── context: the caller's span, and spans started inside nodes ──────────────


def test_the_sync_facade_traces_the_run_under_the_callers_span(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter,
        provider: TracerProvider) -> None:
    """flow.run() inside a caller's span (a web request) makes the run span its child,
    and restores the caller's span afterwards."""
    tracer = provider.get_tracer("test")
    flow = chain(Step("A"), Flaky(failures=1), name="sync", sinks=[sink])

    with tracer.start_as_current_span("request") as request:
        flow.run({})
        assert request is trace.get_current_span()

    spans = exporter.get_finished_spans()
    assert ["request", "  flow sync", "    node A", "    node Fetch",
            "      attempt Fetch"] == outline(spans)
    assert request.get_span_context().span_id == parent_of(one(spans, "flow sync"))


@pytest.mark.anyio
async def test_run_async_traces_the_run_under_the_callers_span(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter,
        provider: TracerProvider) -> None:
    """run_async() inside a caller's span makes the run span (and a nested run below
    it) part of the caller's trace."""
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("request") as request:
        await nested_flow(sink=sink).run_async({})

    spans = exporter.get_finished_spans()
    assert ["request", "  flow Outer", "    node A", "    node Inner", "      flow Inner",
            "        node X", "        node Y", "    node B"] == outline(spans)
    assert request.get_span_context().span_id == parent_of(one(spans, "flow Outer"))


class CallsClient(AsyncNode):
    """Starts a span the way an instrumented LLM client would, inside exec."""

    def __init__(self, tracer: trace.Tracer) -> None:
        super().__init__(name="Ask")
        self.tracer = tracer

    async def exec_async(self, prep_res: Any) -> None:
        with self.tracer.start_as_current_span("llm.chat"):
            await anyio.sleep(0.001)


class CallsClientInThread(Node):
    """The same from a sync exec, which runs in a worker thread."""

    def __init__(self, tracer: trace.Tracer) -> None:
        super().__init__(name="AskSync")
        self.tracer = tracer

    def exec(self, prep_res: Any) -> None:
        with self.tracer.start_as_current_span("llm.chat"):
            pass


@pytest.mark.anyio
async def test_spans_started_inside_a_node_are_children_of_its_span(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter,
        provider: TracerProvider, caplog: pytest.LogCaptureFixture) -> None:
    """A span an instrumented client starts in an async exec, or in a sync exec's worker
    thread, is a child of that node's span, in each of several concurrent runs, and
    every node's context is detached where it was attached."""
    caplog.set_level(logging.WARNING, logger="opentelemetry")
    tracer = provider.get_tracer("client")
    flow = chain(CallsClient(tracer), CallsClientInThread(tracer), name="ask", sinks=[sink])

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(flow.run_async, {})

    spans = exporter.get_finished_spans()
    runs = named(spans, "flow ask")
    assert 5 == len(runs)
    for run in runs:
        members = [s for s in spans if s.context.trace_id == run.context.trace_id]
        assert ["flow ask", "  node Ask", "    llm.chat", "  node AskSync",
                "    llm.chat"] == outline(members)
    assert not trace.get_current_span().get_span_context().is_valid
    assert [] == [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")]


@pytest.mark.anyio
async def test_make_current_false_leaves_the_current_span_alone(
        provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """With make_current=False a span started inside a node is not the node's child."""
    sink = OpenTelemetrySink(provider, make_current=False)
    flow = Flow(start=CallsClient(provider.get_tracer("client")), flow_name="ask",
                sinks=[sink])

    await flow.run_async({})

    assert ["flow ask", "  node Ask", "llm.chat"] == outline(exporter.get_finished_spans())


class RunsAnotherFlow(AsyncNode):
    """exec runs a separate flow (not nested: its own run, no parent run id)."""

    def __init__(self, other: Flow) -> None:
        super().__init__(name="Delegate")
        self.other = other

    async def exec_async(self, prep_res: Any) -> None:
        await self.other.run_async({})


@pytest.mark.anyio
async def test_a_run_started_inside_a_node_is_a_child_of_that_node(
        sink: OpenTelemetrySink, exporter: InMemorySpanExporter) -> None:
    """A flow run from a node's exec (not nested in the graph) joins the trace under the
    node that started it."""
    other = Flow(start=Step("Work"), flow_name="other", sinks=[sink])
    flow = Flow(start=RunsAnotherFlow(other), flow_name="main", sinks=[sink])

    await flow.run_async({})

    spans = exporter.get_finished_spans()
    assert ["flow main", "  node Delegate", "    flow other", "      node Work"] == outline(
        spans)
    assert "pocoflow.run.parent_id" not in one(spans, "flow other").attributes


# ── construction ────────────────────────────────────────────────────────────


def test_the_sink_uses_the_global_provider_by_default_even_one_set_later() -> None:
    """Without a tracer_provider the sink traces through the global provider, also one
    the application sets after making the sink (in a subprocess: this one's global
    provider stays untouched)."""
    code = textwrap.dedent("""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter)
        from pocoflow import Flow, Node
        from pocoflow.otel import OpenTelemetrySink

        sink = OpenTelemetrySink()
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        Flow(start=Node(name="A"), flow_name="late", sinks=[sink]).run({})
        print(sorted(span.name for span in exporter.get_finished_spans()))
    """)
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, timeout=60, check=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert "['flow late', 'node A']" == done.stdout.strip()


def test_without_opentelemetry_the_import_error_names_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing pocoflow.otel without the OpenTelemetry API fails with an ImportError
    that says how to install it."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "pocoflow.otel")

    with pytest.raises(ImportError, match=r"pip install 'pocoflow\[otel\]'"):
        importlib.import_module("pocoflow.otel")
