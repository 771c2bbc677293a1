"""The executor: the one place where a flow's graph is run, always async.

Per-run state lives in a :class:`Run` (never on a Flow or a Node), so one Flow
object can run many times at once. ``prep``/``post`` run on the event loop
thread (the only thread that touches the store); a sync ``exec`` runs in a
worker thread, an async one is awaited. Events go to the run's sinks, which
are awaited before the next node starts; when a run has no sinks, no event
object is even built. The engine knows nothing of storage: a resume or a
fork is just a run given a :class:`~pocoflow.graph.Start`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from pocoflow import control as controls
from pocoflow.control import RunControl
from pocoflow.errors import (
    MaxStepsExceeded,
    NodeTimeoutError,
    Pause,
    UnmatchedActionError,
    UnmatchedActionWarning,
    error_text,
)
from pocoflow.events import (
    Event,
    FlowFinished,
    FlowStarted,
    NodeCancelled,
    NodeFailed,
    NodeFinished,
    NodeRetried,
    NodeStarted,
)
from pocoflow.graph import Start, graph_data, validate_graph
from pocoflow.logging import get_logger
from pocoflow.node import DEFAULT_ACTION, Node, Wired
from pocoflow.sinks import sinks_for
from pocoflow.store import Store, StoreChanges, as_store
from pocoflow.threads import run_in_worker

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
#: Seconds the sinks that are not critical (hooks, user sinks, snapshots) get, once for
#: a whole cancelled run (nested runs included), to hear of the cancel and the run's
#: end: a sink that hangs cannot make the run uncancellable.
SINK_GRACE_S = 5.0
_FRESH = Start()
_NOTHING_CHANGED = StoreChanges(frozenset(), frozenset())


class Run:
    """The state of one execution of one flow (nested flows get a child Run)."""

    __slots__ = (
        "control",
        "critical_sinks",
        "early_sinks",
        "flow",
        "ids",
        "last_action",
        "late_sinks",
        "nested_sinks",
        "other_sinks",
        "parent",
        "paused_at",
        "run_id",
        "sinks",
        "steps",
        "store",
        "unmatched",
    )

    def __init__(
        self,
        flow: Flow | None,
        run_id: str,
        store: Store,
        sinks: list[Any],
        control: RunControl,
        parent: Run | None = None,
    ) -> None:
        self.flow = flow
        self.run_id = run_id
        self.store = store
        self.sinks = sinks
        self.nested_sinks = [s for s in sinks if getattr(s, "sees_nested", False)]
        critical = [getattr(s, "critical", False) for s in sinks]
        first = critical.index(True) if True in critical else 0
        self.critical_sinks = [s for s, c in zip(sinks, critical, strict=True) if c]
        self.other_sinks = [s for s, c in zip(sinks, critical, strict=True) if not c]
        # sinks before the first critical one (hooks) hear a step's end before it is
        # recorded, as pocoflow 0.2's node_end hooks did: what they write is in the step
        self.early_sinks = self.other_sinks[:first]
        self.late_sinks = self.other_sinks[first:]
        self.control = control
        self.parent = parent
        self.steps = 0
        self.last_action: str | None = None
        self.ids: dict[int, str] = {}  # id(node) -> node id, when there are sinks
        self.paused_at: str | None = None
        self.unmatched: str | None = None

    @property
    def flow_name(self) -> str:
        return self.flow.flow_name if self.flow is not None else ""

    def node_id(self, node: Wired) -> str:
        return self.ids.get(id(node)) or node.name

    async def emit(self, event: Event) -> None:
        for sink in self.sinks:
            pending = sink.handle(event)
            if pending is not None:
                await pending

    async def tell_critical(self, event: Event) -> None:
        """Emit an event that tells of something done to the critical sinks (the
        database), whatever a cancel says: a step is done only once they have it."""
        with anyio.CancelScope(shield=True):
            for sink in self.critical_sinks:
                pending = sink.handle(event)
                if pending is not None:
                    await pending

    async def tell_early(self, event: NodeFinished) -> tuple[NodeFinished, BaseException | None]:
        """Emit a step's end to the sinks that hear it before it is recorded (hooks);
        the event again, its changes including what they wrote to the store, and the
        cancel (or Ctrl-C) that cut them short, if one did: the node is done all the
        same, so its step is recorded before that goes on."""
        cut: BaseException | None = None
        try:
            await _heard_by(self.early_sinks, event)
        except BaseException as exc:  # (a hook's own errors are logged by HookSink)
            cut = exc
        more = self.store.take_changes()
        if more == _NOTHING_CHANGED:
            return event, cut
        changes = event.changes
        return dataclasses.replace(
            event,
            changes=StoreChanges(
                changes.written | more.written,
                changes.deleted | more.deleted,
                changes.read | more.read,
                changes.read_all or more.read_all,
                changes.reinserted | more.reinserted,
            ),
        ), cut

    async def tell_others(self, event: Event, *, cancelled: bool = False) -> None:
        """Emit an event to the sinks that are not critical (hooks, user sinks,
        snapshots). A cancel cuts them short like any await of the run; an event that
        tells of the cancel itself (*cancelled*) gets :data:`SINK_GRACE_S` to be heard,
        so a sink that hangs can never make the run uncancellable."""
        if not cancelled:  # a step's end: the early sinks have heard it
            await _heard_by(self.late_sinks, event)
            return
        with _grace(self) as grace:
            await _heard_by(self.other_sinks, event)
        if grace.cancelled_caught:
            _cut_short(self, event)


async def _heard_by(sinks: list[Any], event: Event) -> None:
    """Emit *event* to *sinks* in turn, awaiting the async ones. (Run.emit and
    Run.tell_critical spell it out: they run at every step of every run.)"""
    for sink in sinks:
        pending = sink.handle(event)
        if pending is not None:
            await pending


def _grace(run: Run) -> anyio.CancelScope:
    """A shielded scope that ends SINK_GRACE_S after the first one of the run (nested
    runs included): one grace for all the events that tell of a cancel."""
    control = run.control
    if control.grace_deadline is None:
        control.grace_deadline = anyio.current_time() + SINK_GRACE_S
    return anyio.CancelScope(shield=True, deadline=control.grace_deadline)


def _cut_short(run: Run, event: Event) -> None:
    _log.warning(
        "A sink of run '%s' was cut short: it did not finish with %s within %.0f s of the cancel",
        run.run_id,
        event.kind,
        SINK_GRACE_S,
    )


_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's, in ASCII order


def new_run_id(flow: Flow) -> str:
    """The Flow's fixed run_id, else ``<flow_name>-<36 chars>``: the start time in
    milliseconds (10 chars, so ids sort by start) then 128 random bits (26 chars), in
    lowercase Crockford base32. Random ids of that size never collide in practice."""
    if flow.fixed_run_id:
        return flow.fixed_run_id
    number = (time.time_ns() // 1_000_000) << 130 | int.from_bytes(os.urandom(16), "big")
    chars = []
    for _ in range(36):
        number, digit = divmod(number, 32)
        chars.append(_BASE32[digit])
    return f"{flow.flow_name}-{''.join(reversed(chars))}"


async def execute(
    flow: Flow,
    store: Store | dict[str, Any] | None,
    *,
    start: Start | None = None,
    control: RunControl | None = None,
    sinks: Sequence[Any] = (),
) -> Store:
    """Run *flow* on *store* to the end and return the store.

    *start* says where the run begins (default: the flow's start node, step
    0); *sinks* are added to the flow's own. A cancel through *control* ends
    the run as ``cancelled`` and returns the partial store; a cancel from an
    enclosing scope is recorded, then re-raised.
    """
    store = as_store(store)
    written = store.take_changes().written  # writes before the run are not step 0's
    start = start or _FRESH
    first = start.node if start.node is not None else flow.start
    if not isinstance(first, Wired):
        raise TypeError(
            f"Flow '{flow.flow_name}': resume_from must be a node of the flow, got "
            f"{type(first).__name__}."
        )
    validate_graph(first)
    if control is None:
        control = RunControl(new_run_id(flow))
    store.run_id = control.run_id  # for scripts: the id of the run this store was run in
    run = Run(flow, control.run_id, store, sinks_for(flow, sinks), control)
    controls.register(control)
    try:
        with anyio.CancelScope() as scope:
            control.attach(scope)
            if control.cancel_requested:
                scope.cancel()
            await drive(run, start, written)
    finally:
        control.detach()
        controls.unregister(control)
    if control.stop_error is not None:
        raise control.stop_error
    if scope.cancelled_caught:
        _log.info(
            "Flow '%s' run '%s' cancelled after %d steps", flow.flow_name, run.run_id, run.steps
        )
    return store


async def drive(run: Run, start: Start, written: frozenset[str] = frozenset()) -> None:
    """Walk the graph from *start*, bracketed by FlowStarted/FlowFinished, keeping status."""
    flow: Flow = run.flow  # type: ignore[assignment]
    run.steps = start.step
    first = None if start.done else (start.node if start.node is not None else flow.start)
    if start.done:
        run.last_action = start.last_action
    began = _clock()
    status: str = "failed"
    error: BaseException | None = None
    try:
        if run.sinks:
            run.ids, graph = graph_data(flow)
            shown = first if first is not None else flow.start
            await run.emit(
                FlowStarted(
                    run.run_id,
                    flow.flow_name,
                    _now(),
                    shown.name,
                    run.store,
                    run.steps,
                    run.parent.run_id if run.parent is not None else None,
                    run.node_id(shown) if first is not None else None,
                    start.resumed,
                    graph,
                    written,
                    start.forked_from,
                )
            )
        await walk(run, first, start.inner)
        status = "completed"
    except Pause as pause:
        status, error = "paused", pause
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
            await _emit_end(
                run,
                FlowFinished(
                    run.run_id,
                    flow.flow_name,
                    _now(),
                    run.steps,
                    status,
                    run.store,
                    _clock() - began,
                    run.last_action,
                    error,
                    run.paused_at,
                    run.unmatched,
                ),
                failing=error is not None or status == "cancelled",
            )


async def _emit_end(run: Run, event: FlowFinished, *, failing: bool) -> None:
    """Emit the run's end to every sink, even past a sink that fails: to the critical
    ones (the database) shielded from cancellation, to the others as
    :meth:`Run.tell_others` does. If a sink fails while the run is already failing,
    the run's own error is what the caller gets (the sink's is logged); a run that
    completed fails with the first sink error."""
    with anyio.CancelScope(shield=True):
        errors = [await _end_to(sink, run, event) for sink in run.critical_sinks]
    if run.other_sinks:
        if event.status == "cancelled":  # heard in a grace period, as Run.tell_others
            with _grace(run) as grace:
                errors += [await _end_to(sink, run, event) for sink in run.other_sinks]
            if grace.cancelled_caught:
                _cut_short(run, event)
        else:
            errors += [await _end_to(sink, run, event) for sink in run.other_sinks]
    first = next((error for error in errors if error is not None), None)
    if first is not None and not failing:
        raise first


async def _end_to(sink: Any, run: Run, event: FlowFinished) -> Exception | None:
    """Tell one sink of the run's end; the error it raised (logged), if any."""
    try:
        pending = sink.handle(event)
        if pending is not None:
            await pending
    except Exception as exc:
        _log.error("Recording the end of run '%s' failed", run.run_id, exc_info=True)
        return exc
    return None


async def walk(run: Run, node: Wired | None, inner: Start | None = None) -> None:
    """The orchestration loop: run a node, follow the edge of its action, repeat."""
    flow: Flow = run.flow  # type: ignore[assignment]
    max_steps = flow.max_steps
    sinks = run.sinks
    store = run.store
    control = run.control
    ids = run.ids
    while node is not None:
        step = run.steps
        if step >= max_steps:
            raise MaxStepsExceeded(
                f"Flow '{flow.flow_name}' (run '{run.run_id}') reached max_steps={max_steps} "
                f"before node '{node.name}'. Check the graph for a loop without an exit, or "
                "raise Flow(max_steps=...)."
            )
        name = node.name
        node_id = (ids.get(id(node)) or name) if sinks else name
        if sinks:
            await run.emit(
                NodeStarted(run.run_id, flow.flow_name, _now(), step, name, store, node_id)
            )
        began = _clock()
        try:
            if isinstance(node, Node):
                action = await (
                    _run_override(node, run, step)
                    if node._plan.custom_run
                    else phases(node, run, step)
                )
            else:
                action = await run_nested(node, run, step, inner)
                inner = None
            following = node.next_node(action)
            if following is None and node.ends_on(action):
                _unmatched(run, node, action)
            run.steps = step + 1
            run.last_action = action
            if sinks:
                finished = NodeFinished(
                    run.run_id,
                    flow.flow_name,
                    _now(),
                    step,
                    name,
                    action,
                    _clock() - began,
                    store,
                    following.name if following is not None else None,
                    store.take_changes(),
                    node_id,
                    (ids.get(id(following)) or following.name) if following is not None else None,
                )
                cut = None
                try:  # the node is done: the database hears it whatever a cancel says
                    if run.early_sinks:
                        finished, cut = await run.tell_early(finished)
                    await run.tell_critical(finished)
                except BaseException:
                    run.steps = step  # a step is done only once the critical sinks have it
                    raise
                if cut is not None:  # a hook was cut short: the step is recorded, now stop
                    raise cut
                await run.tell_others(finished)
        except Pause:
            run.paused_at = node_id
            raise
        except Exception as exc:
            _log.error("Flow '%s' aborted at node '%s': %s", flow.flow_name, name, error_text(exc))
            if sinks:
                await run.emit(
                    NodeFailed(
                        run.run_id,
                        flow.flow_name,
                        _now(),
                        step,
                        name,
                        exc,
                        store,
                        node_id,
                        _clock() - began,
                    )
                )
            raise
        except (anyio.get_cancelled_exc_class(), KeyboardInterrupt):  # (trio raises a
            # Ctrl-C in the task itself, asyncio cancels it: one event either way)
            if sinks and run.steps == step:  # cancelled inside the node: say so
                cancelled = NodeCancelled(
                    run.run_id, flow.flow_name, _now(), step, name, node_id, _clock() - began
                )
                await run.tell_critical(cancelled)
                await run.tell_others(cancelled, cancelled=True)
            raise
        node = following
        if control.cancel_requested:  # asked from another thread, maybe not applied yet:
            control.cancel()  # the next node must not start
            await anyio.lowlevel.checkpoint()
        elif run.steps % YIELD_EVERY == 0:
            await anyio.lowlevel.checkpoint()


def _unmatched(run: Run, node: Wired, action: str) -> None:
    """A node returned an action with no edge: the flow ends there (pocoflow 0.2), or,
    as ``Flow(on_unmatched=...)`` asks, warns or raises."""
    run.unmatched = action
    flow: Flow = run.flow  # type: ignore[assignment]
    message = (
        f"Node '{node.name}' returned action {action!r}, but it has no edge for it "
        f"(edges: {sorted(node._successors)}); the flow ends here. Add "
        f".then({action!r}, next_node), .then({action!r}, None) to end on purpose, or a "
        "'*' edge."
    )
    mode = flow.on_unmatched
    if mode == "raise":
        raise UnmatchedActionError(message)
    if mode == "warn":
        _log.warning(message)
        warnings.warn(message, UnmatchedActionWarning, stacklevel=3)
    else:
        _log.debug(message)


async def phases(node: Node, run: Run, step: int) -> str:
    """prep → exec (with retries, per item for batches) → post; return the action.

    The walk calls it unless the node's class overrides 0.2's ``_run``."""
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
    return _checked_action(node, action)


def _checked_action(node: Node, action: Any) -> str:
    if action is None:
        return DEFAULT_ACTION
    if not isinstance(action, str):
        raise TypeError(
            f"Node '{node.name}': post() returned {action!r} ({type(action).__name__}); it must "
            "return an action string, or None for 'default'."
        )
    return action


# ── pocoflow 0.2's Node._run overrides ──────────────────────────────────────

_in_run: contextvars.ContextVar[tuple[Run, int] | None] = contextvars.ContextVar(
    "pocoflow_node_run", default=None
)


async def _run_override(node: Node, run: Run, step: int) -> str:
    """Call a 0.2-style ``_run`` override in a worker thread; its ``super()._run``
    hands the phases back to this loop (see :func:`pocoflow.bridge.run_node`)."""
    token = _in_run.set((run, step))
    try:
        action = await anyio.to_thread.run_sync(node._run, run.store)
    finally:
        _in_run.reset(token)
    return _checked_action(node, action)


def current_node_run() -> tuple[Run, int] | None:
    """The run and step whose ``_run`` override is calling back (see bridge.run_node)."""
    return _in_run.get()


# ── exec: where it runs, retries, batches ───────────────────────────────────


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
        return await run_in_worker(method, arg)
    else:
        # A run-cancel waits for this attempt (shield); only the timeout abandons the thread.
        with anyio.CancelScope(shield=True), anyio.move_on_after(timeout):
            return await run_in_worker(method, arg, abandon_on_cancel=True)
    raise NodeTimeoutError(
        f"Node '{node.name}': exec took longer than its timeout of {timeout} s. Raise "
        f"{type(node).__name__}.timeout, or make exec faster."
    )


async def exec_with_retries(node: Node, arg: Any, run: Run, step: int) -> Any:
    """exec with the node's retry policy; exec_fallback gets the last error."""
    began = _clock()
    try:
        return await exec_once(node, arg)
    except Pause:
        raise  # a human is needed: no retry, no fallback
    except Exception as exc:
        error = exc
    attempt, attempts = 1, node.max_retries
    delay = float(node.retry_delay)
    while attempt < attempts and isinstance(error, node.retry_on):
        _log.warning(
            "Node '%s' exec attempt %d/%d failed: %s; retrying in %.3gs",
            node.name,
            attempt,
            attempts,
            error,
            delay,
        )
        if run.sinks:
            await run.emit(
                NodeRetried(
                    run.run_id,
                    run.flow_name,
                    _now(),
                    step,
                    node.name,
                    attempt,
                    error,
                    delay,
                    run.node_id(node),
                    _clock() - began,
                )
            )
        if delay > 0:
            await anyio.sleep(delay)
        delay *= node.retry_backoff
        attempt += 1
        began = _clock()
        try:
            return await exec_once(node, arg)
        except Pause:
            raise
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


# ── nested flows ────────────────────────────────────────────────────────────


async def run_nested(inner: Wired, run: Run, step: int, start: Start | None) -> str:
    """Run a Flow used as a node, as a child run; its last action is the action the
    outer flow routes on. *start* (a resume) says where the child run begins."""
    flow: Flow = inner  # type: ignore[assignment]
    child = Run(
        flow,
        f"{run.run_id}.{step}",
        run.store,
        sinks_for(flow, inherited=run.nested_sinks, nested=True),
        run.control,
        parent=run,
    )
    await drive(child, start or _FRESH)
    return child.last_action or DEFAULT_ACTION
