"""The executor: the one place where a flow's graph is run, always async.

Per-run state lives in a :class:`Run` (never on a Flow or a Node), so one Flow
object can run many times at once. ``prep``/``post`` run on the event loop
thread (the only thread that touches the store); a sync ``exec`` runs in a
worker thread, an async one is awaited. Events go to the run's sinks, which
are awaited before the next node starts; when a run has no sinks, no event
object is even built.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import uuid4

import anyio
import anyio.lowlevel
import anyio.to_thread

from pocoflow.errors import (
    MaxStepsExceeded,
    NodeTimeoutError,
    Pause,
    UnmatchedActionWarning,
)
from pocoflow.events import (
    Event,
    FlowFinished,
    FlowStarted,
    NodeFailed,
    NodeFinished,
    NodeRetried,
    NodeStarted,
)
from pocoflow.logging import get_logger
from pocoflow.node import DEFAULT_ACTION, Node, Wired
from pocoflow.sinks import HookSink, JsonCheckpointSink, LogSink, Sink, logging_enabled
from pocoflow.store import Store, as_store

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from pocoflow.flow import Flow

_log = get_logger("flow")
_clock = time.perf_counter
_now = time.time

#: A run gives the loop a turn every this many steps, so a tight loop of
#: trivial nodes stays fair to other tasks and sees cancellation.
YIELD_EVERY = 64


class RunControl:
    """A run as seen from outside: its id, live status, and the cancel switch.

    ``cancel()`` must be called on the run's event loop thread; the bridge
    takes care of that for background runs.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.status = "running"
        self.cancel_requested = False
        self._scope: anyio.CancelScope | None = None
        #: a resume that stopped inside nested flows: child run_id -> where it goes on
        self.nested_resume: dict[str, NestedResume] = {}

    def cancel(self) -> None:
        self.cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()


class NestedResume(NamedTuple):
    """Where a nested flow goes on when its outer run resumes: at ``node`` with step
    ``first_step``, or, with ``node`` None, not at all (it had finished with
    ``last_action``)."""

    node: Wired | None
    first_step: int
    last_action: str | None = None


class Run:
    """The state of one execution of one flow (nested flows get a child Run)."""

    __slots__ = ("control", "flow", "last_action", "nested_sinks", "parent", "run_id",
                 "sinks", "steps", "store")

    def __init__(self, flow: Flow, run_id: str, store: Store, sinks: list[Sink],
                 control: RunControl, parent: Run | None = None) -> None:
        self.flow = flow
        self.run_id = run_id
        self.store = store
        self.sinks = sinks
        # a child Run's sinks already include its parent's nested sinks
        self.nested_sinks = [s for s in sinks if s.sees_nested]
        self.control = control
        self.parent = parent
        self.steps = 0
        self.last_action: str | None = None

    async def emit(self, event: Event) -> None:
        for sink in self.sinks:
            pending = sink.handle(event)
            if pending is not None:
                await pending


def new_run_id(flow: Flow) -> str:
    """``<flow_name>-<8 hex>`` as in pocoflow 0.2, unless the Flow was given a run_id."""
    return flow.run_id or f"{flow.flow_name}-{uuid4().hex[:8]}"


def sinks_for(flow: Flow, extra: Sequence[Sink] = (), *, nested: bool = False,
              recorder: Sink | None = None) -> list[Sink]:
    """The sinks a run of *flow* feeds: its hooks, JSON snapshots, logging, its
    database recorder (a nested flow is recorded by the outer one's), extras."""
    sinks: list[Sink] = []
    if any(flow._hooks.values()):
        sinks.append(HookSink(flow._hooks))
    if flow.checkpoint_dir is not None:
        sinks.append(JsonCheckpointSink(flow.checkpoint_dir))
    if logging_enabled():
        sinks.append(LogSink())
    if recorder is None and flow.db is not None and not nested:
        from pocoflow.persistence.recorder import Recorder

        recorder = Recorder(flow.db.records)
    if recorder is not None:
        sinks.append(recorder)
    sinks.extend(extra)
    return sinks


async def execute(flow: Flow, store: Store | dict[str, Any] | None, *,
                  resume_from: Wired | None = None, control: RunControl | None = None,
                  extra_sinks: Sequence[Sink] = (), first_step: int = 0,
                  recorder: Sink | None = None) -> Store:
    """Run *flow* on *store* to the end and return the store.

    A cancel through *control* ends the run as ``cancelled`` and returns the
    partial store; a cancel from an enclosing scope is recorded, then re-raised.
    ``first_step`` numbers the first node's step and ``recorder`` replaces the
    flow's database recorder: both for a resumed run.
    """
    store = as_store(store)
    store.take_changes()  # writes made before the run are not step 0's changes
    start = resume_from if resume_from is not None else flow.start
    if not isinstance(start, Wired):
        raise TypeError(
            f"Flow '{flow.flow_name}': resume_from must be a node of the flow, got "
            f"{type(start).__name__}."
        )
    validate_graph(start)
    if control is None:
        control = RunControl(new_run_id(flow))
    run = Run(flow, control.run_id, store, sinks_for(flow, extra_sinks, recorder=recorder),
              control)
    run.steps = first_step
    try:
        with anyio.CancelScope() as scope:
            control._scope = scope
            if control.cancel_requested:
                scope.cancel()
            await drive(run, start)
    finally:
        control._scope = None
    if scope.cancelled_caught:
        _log.info("Flow '%s' run '%s' cancelled after %d steps",
                  flow.flow_name, run.run_id, run.steps)
    return store


async def drive(run: Run, start: Wired) -> None:
    """Walk the graph from *start*, bracketed by FlowStarted/FlowFinished, keeping status."""
    flow = run.flow
    began = _clock()
    status, error, resume_at = "failed", None, None
    try:
        if run.sinks:
            parent_id = run.parent.run_id if run.parent is not None else None
            await run.emit(FlowStarted(run.run_id, flow.flow_name, _now(), start.name,
                                       run.store, run.steps, parent_id, flow, start))
        await walk(run, start)
        status = "completed"
    except Pause as pause:
        status, error = "paused", pause
        resume_at = getattr(pause, "_node_name", None)
        if run.parent is not None:
            raise
    except Exception as exc:
        error = exc
        raise
    except BaseException:
        status = "cancelled"
        raise
    finally:
        if run.parent is None:
            run.control.status = status
        if run.sinks:
            with anyio.CancelScope(shield=True):
                await run.emit(FlowFinished(run.run_id, flow.flow_name, _now(), run.steps,
                                            status, run.store, _clock() - began,
                                            run.last_action, error, resume_at))


async def walk(run: Run, node: Wired | None) -> None:
    """The orchestration loop: run a node, follow the edge of its action, repeat."""
    flow = run.flow
    max_steps = flow.max_steps
    sinks = run.sinks
    store = run.store
    control = run.control
    while node is not None:
        step = run.steps
        if step >= max_steps:
            raise MaxStepsExceeded(
                f"Flow '{flow.flow_name}' (run '{run.run_id}') reached max_steps={max_steps} "
                f"before node '{node.name}'. Check the graph for a loop without an exit, or "
                "raise Flow(max_steps=...)."
            )
        name = node.name
        if sinks:
            await run.emit(NodeStarted(run.run_id, flow.flow_name, _now(), step, name, store))
        began = _clock()
        try:
            if isinstance(node, Node):
                action = await run_node(node, run, step)
            else:
                action = await run_nested(node, run, step)
        except Pause as pause:
            pause._node_name = name  # type: ignore[attr-defined]
            raise
        except Exception as exc:
            _log.error("Flow '%s' aborted at node '%s': %s", flow.flow_name, name, exc)
            if sinks:
                await run.emit(NodeFailed(run.run_id, flow.flow_name, _now(), step, name,
                                          exc, store))
            raise
        following = node.next_node(action)
        if following is None and node._successors:
            _warn_unmatched(name, action, node._successors)
        run.steps = step + 1
        run.last_action = action
        if sinks:
            try:
                await run.emit(NodeFinished(
                    run.run_id, flow.flow_name, _now(), step, name, action, _clock() - began,
                    store, following.name if following is not None else None,
                    store.take_changes(), following))
            except BaseException:
                run.steps = step  # the step is done only once every sink (the DB) has it
                raise
        node = following
        if control.cancel_requested or run.steps % YIELD_EVERY == 0:
            await anyio.lowlevel.checkpoint()


def _warn_unmatched(name: str, action: str, edges: Any) -> None:
    message = (
        f"Node '{name}' returned action {action!r}, but it has no edge for it "
        f"(edges: {sorted(edges)}); the flow ends here. Add .then({action!r}, next_node) "
        "or a '*' edge if it should go on."
    )
    _log.warning(message)
    warnings.warn(message, UnmatchedActionWarning, stacklevel=2)


async def run_node(node: Node, run: Run, step: int) -> str:
    """prep → exec (with retries, per item for batches) → post; return the action."""
    plan = node._plan
    store = run.store
    prep_res = getattr(node, plan.prep)(store)
    if plan.prep_await:
        prep_res = await prep_res
    if plan.batch:
        items = _items(node, prep_res)
        if plan.concurrent:
            exec_res: Any = await _exec_concurrently(node, items, run, step)
        else:
            exec_res = [await exec_with_retries(node, item, run, step) for item in items]
    else:
        exec_res = await exec_with_retries(node, prep_res, run, step)
    action = getattr(node, plan.post)(store, prep_res, exec_res)
    if plan.post_await:
        action = await action
    if action is None:
        return DEFAULT_ACTION
    if not isinstance(action, str):
        raise TypeError(
            f"Node '{node.name}': post() returned {action!r} ({type(action).__name__}); it must "
            "return an action string, or None for 'default'."
        )
    return action


async def exec_once(node: Node, arg: Any) -> Any:
    """One attempt of exec, in the right place: awaited, inline, or in a worker thread."""
    plan = node._plan
    method = getattr(node, plan.exec)
    timeout = node.timeout
    if plan.exec_await:
        if timeout is None:
            return await method(arg)
        with anyio.move_on_after(timeout):
            return await method(arg)
    elif timeout is None:
        if not node.threaded:
            return method(arg)
        return await anyio.to_thread.run_sync(method, arg)
    else:
        # A run-cancel waits for this attempt (shield); only the timeout abandons the thread.
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
            return await anyio.to_thread.run_sync(method, arg, abandon_on_cancel=True)
    raise NodeTimeoutError(
        f"Node '{node.name}': exec took longer than its timeout of {timeout} s. Raise "
        f"{type(node).__name__}.timeout, or make exec faster."
    )


async def exec_with_retries(node: Node, arg: Any, run: Run, step: int) -> Any:
    """exec with the node's retry policy; exec_fallback gets the last error."""
    try:
        return await exec_once(node, arg)
    except Exception as exc:
        error = exc
    attempt, attempts = 1, node.max_retries
    delay = float(node.retry_delay)
    while attempt < attempts and isinstance(error, node.retry_on):
        _log.warning("Node '%s' exec attempt %d/%d failed: %s; retrying in %.3gs",
                     node.name, attempt, attempts, error, delay)
        if run.sinks:
            await run.emit(NodeRetried(run.run_id, run.flow.flow_name, _now(), step, node.name,
                                       attempt, error, delay))
        if delay > 0:
            await anyio.sleep(delay)
        delay *= node.retry_backoff
        attempt += 1
        try:
            return await exec_once(node, arg)
        except Exception as exc:
            error = exc
    plan = node._plan
    result = getattr(node, plan.fallback)(arg, error)
    if plan.fallback_await:
        result = await result
    return result


def _items(node: Node, prep_res: Any) -> list[Any]:
    if prep_res is None:
        return []
    try:
        return list(prep_res)
    except TypeError:
        raise TypeError(
            f"Batch node '{node.name}': prep() must return an iterable of items, got "
            f"{type(prep_res).__name__}. Return a list (one exec per item)."
        ) from None


async def _exec_concurrently(node: Node, items: list[Any], run: Run, step: int) -> list[Any]:
    results: list[Any] = [None] * len(items)
    limit = getattr(node, "max_concurrency", None)
    limiter = anyio.CapacityLimiter(limit) if limit else None

    async def one(index: int, item: Any) -> None:
        if limiter is None:
            results[index] = await exec_with_retries(node, item, run, step)
        else:
            async with limiter:
                results[index] = await exec_with_retries(node, item, run, step)

    try:
        async with anyio.create_task_group() as group:
            for index, item in enumerate(items):
                group.start_soon(one, index, item)
    except BaseExceptionGroup as group_error:
        raise first_error(group_error) from None
    return results


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The item error a user expects to catch, not the group anyio wraps it in."""
    first = group.exceptions[0]
    return first_error(first) if isinstance(first, BaseExceptionGroup) else first


async def run_nested(inner: Wired, run: Run, step: int) -> str:
    """Run a Flow used as a node; its last action is the action the outer flow routes on."""
    flow: Flow = inner  # type: ignore[assignment]
    child = Run(flow, f"{run.run_id}.{step}", run.store,
                sinks_for(flow, nested=True) + run.nested_sinks, run.control, parent=run)
    start = flow.start
    resume = run.control.nested_resume.pop(child.run_id, None)
    if resume is not None:  # the outer run resumes inside this flow
        if resume.node is None:
            return resume.last_action or DEFAULT_ACTION
        start, child.steps = resume.node, resume.first_step
    await drive(child, start)
    return child.last_action or DEFAULT_ACTION


def validate_graph(start: Wired) -> None:
    """Check every node reachable from *start* once, before the run begins."""
    seen: set[int] = set()
    pending = [start]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Node):
            node.check_config()
        elif isinstance(getattr(node, "start", None), Wired):
            pending.append(node.start)  # a nested Flow: check its graph too
        pending.extend(node._successors.values())
