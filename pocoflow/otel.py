"""OpenTelemetry tracing: a sink that turns a run's events into spans.

Install the extra (``pip install 'pocoflow[otel]'``, which brings the
OpenTelemetry API; your application configures the SDK and an exporter) and
subscribe the sink::

    from pocoflow.otel import OpenTelemetrySink

    flow = Flow(start=fetch, sinks=[OpenTelemetrySink()])

A run becomes one trace (or one subtree of the caller's trace)::

    flow <flow_name>                 a run (status, steps, last action, pause reason)
    ├── node <node_name>             a step: prep, exec (all attempts, all items), post
    │   └── attempt <node_name>      an exec attempt that failed and was retried (ERROR)
    └── node <Inner>                 a step that runs a nested flow ...
        └── flow <Inner>             ... holds the nested run's span, and so on down

Design, and why:

- **Timing from the events.** Spans start and end at the events' ``ts``, so
  they show the engine's timing, not the moment the sink heard of it. A failed
  attempt's span ends at its ``NodeRetried`` and starts ``elapsed_s`` earlier.
- **Retries as child spans of the node.** Each failed, retried attempt is a
  span of its own with status ERROR and the exception recorded, so a waterfall
  shows the attempts, the gaps (``retry_delay``) between them and their
  errors. The attempt that ends the node (success, or the last failure) has no
  event of its own, so it gets no span: it is the rest of the node span, whose
  ``pocoflow.node.retries`` counts the failed attempts before it. Batch nodes
  retry per item, so their attempt spans may overlap.
- **Explicit parents.** Events of many runs interleave on one loop, so every
  span is started with an explicit parent from the sink's per-run state,
  keyed by ``run_id`` and dropped at ``FlowFinished``: a nested run's span is
  a child of the outer run's open node span (found through
  ``parent_run_id``). A run with no parent the sink knows of takes the current
  context when it starts: the engine calls sinks in the run's own task, which
  inherits the caller's context, so a run started inside a web request's span
  (or a node's) is a child of that span.
- **The node span is current while the node runs** (``make_current=True``):
  spans that instrumented clients (httpx, an LLM SDK) start in ``prep``,
  ``exec`` or ``post`` nest under the node, in a sync ``exec``'s worker thread
  too. The sink attaches the node's context at ``NodeStarted`` and detaches it
  when the node ends, in the run's task, where contextvars are per task, so
  concurrent runs do not see each other's spans.
- **Outcomes.** A failed node or run has status ERROR, the exception recorded
  and ``error.type``. A paused run is not an error: status UNSET,
  ``pocoflow.run.status = "paused"`` and ``pocoflow.pause.reason``. A
  cancelled run is not an error either (a user's cancel button should not
  page anyone): status UNSET, ``pocoflow.run.status = "cancelled"``; a
  cancel that comes from the caller's timeout is re-raised to the caller,
  whose own span records it. A step that a pause or a cancel interrupts ends
  with the run, with ``pocoflow.node.status`` saying which.

One sink may serve many concurrent runs of many flows, in many threads; run
ids must be unique among runs in flight (they are, unless ``Flow(run_id=...)``
fixes one for every run).

Attributes: on run spans ``pocoflow.flow.name``, ``pocoflow.run.id``,
``pocoflow.run.parent_id``, ``pocoflow.run.resumed``, ``pocoflow.run.start_node``,
``pocoflow.run.start_step``, then ``pocoflow.run.status``, ``pocoflow.run.steps``,
``pocoflow.run.last_action``, ``pocoflow.run.unmatched_action``,
``pocoflow.run.next_node`` (where a resume starts), ``pocoflow.pause.reason``;
on node spans ``pocoflow.run.id``, ``pocoflow.node.name``, ``pocoflow.node.id``,
``pocoflow.node.step``, then ``pocoflow.node.status``, ``pocoflow.node.action``,
``pocoflow.node.next_node``, ``pocoflow.node.next_node_id``,
``pocoflow.node.retries``; on attempt spans ``pocoflow.retry.attempt`` and
``pocoflow.retry.delay_s``; ``error.type`` on every span that failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pocoflow import __version__
from pocoflow.errors import error_text
from pocoflow.events import (
    Event,
    FlowFinished,
    FlowStarted,
    NodeFailed,
    NodeFinished,
    NodeRetried,
    NodeStarted,
)

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Span, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "pocoflow.otel needs the OpenTelemetry API, which is not installed. Install it "
        "with: pip install 'pocoflow[otel]'"
    ) from exc

if TYPE_CHECKING:
    from contextvars import Token

__all__ = ["OpenTelemetrySink"]

_NS = 1_000_000_000


def _ns(ts: float) -> int:
    """UNIX seconds (an event's ``ts``) as the nanoseconds OpenTelemetry wants."""
    return int(ts * _NS)


class _RunSpans:
    """What the sink knows of one run in flight: its span and the open step's."""

    __slots__ = ("node", "node_context", "retries", "run", "run_context", "token")

    def __init__(self, run: Span) -> None:
        self.run = run
        self.run_context = trace.set_span_in_context(run)
        self.node: Span | None = None
        self.node_context: otel_context.Context | None = None
        self.token: Token[otel_context.Context] | None = None
        self.retries = 0

    def parent_context(self) -> otel_context.Context:
        """The context a child starts in: the open node span's, else the run span's."""
        if self.node is None:
            return self.run_context
        if self.node_context is None:
            self.node_context = trace.set_span_in_context(self.node)
        return self.node_context


class OpenTelemetrySink:
    """Traces every run it hears as OpenTelemetry spans; see :mod:`pocoflow.otel`.

    *tracer_provider* defaults to the global one (also when it is set after the
    sink is made). With *make_current* (the default) each node span is the
    current span while its node runs, so spans your instrumented clients start
    inside the node become its children. Add the sink with
    ``Flow(..., sinks=[sink])`` or ``flow.add_sink(sink)``; it hears nested
    flows' runs too.
    """

    def __init__(
        self, tracer_provider: trace.TracerProvider | None = None, *, make_current: bool = True
    ) -> None:
        self._tracer = trace.get_tracer("pocoflow", __version__, tracer_provider)
        self._make_current = make_current
        self._runs: dict[str, _RunSpans] = {}
        self._handlers = {
            FlowStarted.kind: self._flow_started,
            NodeStarted.kind: self._node_started,
            NodeRetried.kind: self._node_retried,
            NodeFinished.kind: self._node_finished,
            NodeFailed.kind: self._node_failed,
            FlowFinished.kind: self._flow_finished,
        }

    def __repr__(self) -> str:
        return f"<OpenTelemetrySink runs_in_flight={len(self._runs)}>"

    def handle(self, event: Event) -> None:
        handler = self._handlers.get(event.kind)
        if handler is not None:
            handler(event)

    # ── runs ────────────────────────────────────────────────────────────────

    def _flow_started(self, event: FlowStarted) -> None:
        attributes: dict[str, Any] = {
            "pocoflow.flow.name": event.flow_name,
            "pocoflow.run.id": event.run_id,
            "pocoflow.run.resumed": event.resumed,
            "pocoflow.run.start_node": event.start_node,
            "pocoflow.run.start_step": event.step,
        }
        parent = None
        if event.parent_run_id is not None:
            attributes["pocoflow.run.parent_id"] = event.parent_run_id
            parent = self._runs.get(event.parent_run_id)
        # a run whose parent this sink does not trace joins the caller's trace, if any
        context = parent.parent_context() if parent is not None else otel_context.get_current()
        span = self._tracer.start_span(
            f"flow {event.flow_name}", context, attributes=attributes, start_time=_ns(event.ts)
        )
        self._runs[event.run_id] = _RunSpans(span)

    def _flow_finished(self, event: FlowFinished) -> None:
        state = self._runs.pop(event.run_id, None)
        if state is None:
            return
        end = _ns(event.ts)
        status = event.status
        error = event.error
        attributes: dict[str, Any] = {
            "pocoflow.run.status": status,
            "pocoflow.run.steps": event.steps,
        }
        if status == "paused":
            attributes["pocoflow.pause.reason"] = getattr(error, "reason", "")
            error = None
        elif status != "failed":
            error = None
        if state.node is not None:  # a pause or a cancel interrupted the step
            node_attributes = {"pocoflow.node.status": status}
            if status == "paused":
                node_attributes["pocoflow.pause.reason"] = attributes["pocoflow.pause.reason"]
            self._end_node(state, end, node_attributes, error)
        if event.last_action is not None:
            attributes["pocoflow.run.last_action"] = event.last_action
        if event.unmatched_action is not None:
            attributes["pocoflow.run.unmatched_action"] = event.unmatched_action
        if event.next_node is not None:
            attributes["pocoflow.run.next_node"] = event.next_node
        span = state.run
        span.set_attributes(attributes)
        if error is not None:
            _record_error(span, error, end)
        span.end(end)

    # ── steps ───────────────────────────────────────────────────────────────

    def _node_started(self, event: NodeStarted) -> None:
        state = self._runs.get(event.run_id)
        if state is None:
            return
        if state.node is not None:  # cannot happen with the engine's order; stay sane
            self._end_node(state, _ns(event.ts), {"pocoflow.node.status": "unknown"}, None)
        span = self._tracer.start_span(
            f"node {event.node_name}",
            state.run_context,
            start_time=_ns(event.ts),
            attributes={
                "pocoflow.run.id": event.run_id,
                "pocoflow.node.name": event.node_name,
                "pocoflow.node.id": event.node_id or event.node_name,
                "pocoflow.node.step": event.step,
            },
        )
        state.node = span
        if self._make_current:
            state.node_context = trace.set_span_in_context(span)
            state.token = otel_context.attach(state.node_context)

    def _node_retried(self, event: NodeRetried) -> None:
        state = self._runs.get(event.run_id)
        if state is None:
            return
        state.retries += 1
        end = _ns(event.ts)
        span = self._tracer.start_span(
            f"attempt {event.node_name}",
            state.parent_context(),
            start_time=end - int(event.elapsed_s * _NS),
            attributes={
                "pocoflow.retry.attempt": event.attempt,
                "pocoflow.retry.delay_s": event.delay_s,
            },
        )
        _record_error(span, event.error, end)
        span.end(end)

    def _node_finished(self, event: NodeFinished) -> None:
        state = self._runs.get(event.run_id)
        if state is None or state.node is None:
            return
        attributes: dict[str, Any] = {
            "pocoflow.node.status": "completed",
            "pocoflow.node.action": event.action,
        }
        if event.next_node is not None:
            attributes["pocoflow.node.next_node"] = event.next_node
            attributes["pocoflow.node.next_node_id"] = event.next_node_id or event.next_node
        self._end_node(state, _ns(event.ts), attributes, None)

    def _node_failed(self, event: NodeFailed) -> None:
        state = self._runs.get(event.run_id)
        if state is None or state.node is None:
            return
        self._end_node(state, _ns(event.ts), {"pocoflow.node.status": "failed"}, event.error)

    def _end_node(
        self, state: _RunSpans, end: int, attributes: dict[str, Any], error: BaseException | None
    ) -> None:
        """Detach the node's context (if attached), then end its span at *end*."""
        span = state.node
        assert span is not None
        if state.token is not None:
            otel_context.detach(state.token)
            state.token = None
        if state.retries:
            attributes["pocoflow.node.retries"] = state.retries
            state.retries = 0
        span.set_attributes(attributes)
        if error is not None:
            _record_error(span, error, end)
        span.end(end)
        state.node = None
        state.node_context = None


def _record_error(span: Span, error: BaseException, at: int) -> None:
    """Status ERROR with the exception as an event, as OpenTelemetry's conventions ask."""
    cls = type(error)
    qualified = (
        cls.__qualname__
        if cls.__module__ == "builtins"
        else (f"{cls.__module__}.{cls.__qualname__}")
    )
    span.set_attribute("error.type", qualified)
    message = error_text(error)
    span.set_status(Status(StatusCode.ERROR, f"{cls.__name__}: {message}"))
    try:
        span.record_exception(error, timestamp=at)
    except Exception:  # its __str__ raises: record what can be read of it
        span.add_event(
            "exception",
            {"exception.type": qualified, "exception.message": message},
            timestamp=at,
        )
