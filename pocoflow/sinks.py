"""Sinks: the subscribers of a run's event stream, built-in and the user's own.

A sink is any object with ``handle(event)`` returning None or an awaitable
(so a sync sink costs no coroutine), or a plain sync or async callable that
takes the event. Users add theirs with ``Flow(..., sinks=[...])`` or
``flow.add_sink(sink)``; every event of the run reaches them in order,
nested flows' runs included. A user sink that raises is logged and the run
goes on. Sinks are called one after another, in the run's own task (so
they see the caller's context variables), and awaited before the next node
starts, so the database recorder (the one sink whose failure fails the
step) has made a step durable before anyone else hears of it. The end of a
run (``FlowFinished``) reaches every sink even if one of them fails.

Logging is two sinks, each added to a run only when its logger is enabled
for INFO (one check per run): structured events on ``pocoflow.flow``
(:class:`LogSink`) and 0.2's node start/end lines on ``pocoflow.node``
(:class:`NodeLogSink`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pocoflow.errors import error_text
from pocoflow.events import Event, FlowFinished, NodeFailed, NodeFinished, NodeStarted
from pocoflow.logging import get_logger, log_event
from pocoflow.store import write_atomic

if TYPE_CHECKING:
    from pocoflow.flow import Flow

_log = get_logger("flow")
_node_log = get_logger("node")


@runtime_checkable
class Sink(Protocol):
    """What ``Flow(sinks=...)`` accepts besides a plain callable: ``handle(event)``,
    sync or async."""

    def handle(self, event: Event) -> Awaitable[None] | None: ...


SinkLike = Sink | Callable[[Event], Any]


class UserSink:
    """A user's sink or callable, guarded: an error it raises is logged, never raised."""

    sees_nested = True

    def __init__(self, target: SinkLike) -> None:
        handle = getattr(target, "handle", None)
        if not callable(handle):
            if not callable(target):
                raise TypeError(
                    f"A sink must be a callable taking an event, or an object with a "
                    f"handle(event) method; got {type(target).__name__}. Example: "
                    "flow.add_sink(lambda event: print(event.kind, event.run_id))."
                )
            handle = target
        self.target = target
        self._handle = handle

    def handle(self, event: Event) -> Awaitable[None] | None:
        try:
            result = self._handle(event)
        except Exception:
            self._log_failure(event)
            return None
        if result is not None and hasattr(result, "__await__"):
            return self._finish(result, event)
        return None

    async def _finish(self, pending: Awaitable[Any], event: Event) -> None:
        try:
            await pending
        except Exception:
            self._log_failure(event)

    def _log_failure(self, event: Event) -> None:
        _log.warning(
            "Sink %r failed on %s of run '%s'; the run goes on",
            self.target,
            event.kind,
            event.run_id,
            exc_info=True,
        )


class HookSink:
    """Calls the hooks registered with ``Flow.on`` with pocoflow 0.2's signatures.

    ``node_start(name, store)``, ``node_end(name, action, elapsed_s, store)``,
    ``node_error(name, exc, store)``, ``flow_end(steps, store)``. A hook may be
    sync or async; one that raises is logged and the run goes on.
    """

    sees_nested = False

    def __init__(self, hooks: dict[str, list[Callable[..., Any]]]) -> None:
        self._hooks = hooks

    def handle(self, event: Event) -> Awaitable[None] | None:
        callbacks = self._hooks.get(event.kind)
        if not callbacks:
            return None
        args = _hook_args(event)
        if args is None:
            return None
        return self._call_all(event.kind, callbacks, args)

    async def _call_all(
        self, kind: str, callbacks: list[Callable[..., Any]], args: tuple[Any, ...]
    ) -> None:
        for callback in callbacks:
            try:
                result = callback(*args)
                if hasattr(result, "__await__"):
                    await result
            except Exception:
                _log.warning(
                    "Hook %r for '%s' raised; the run goes on", callback, kind, exc_info=True
                )


def _hook_args(event: Event) -> tuple[Any, ...] | None:
    if isinstance(event, NodeStarted):
        return (event.node_name, event.store)
    if isinstance(event, NodeFinished):
        return (event.node_name, event.action, event.elapsed_s, event.store)
    if isinstance(event, NodeFailed):
        return (event.node_name, event.error, event.store)
    if isinstance(event, FlowFinished):
        # 0.2 fired flow_end when the loop ended (completed or cancelled), not on errors
        return None if event.status == "failed" else (event.steps, event.store)
    return None


class JsonCheckpointSink:
    """Writes ``step_<NNN>_<Node>.json`` snapshots after each node (``checkpoint_dir``).

    The JSON is built on the loop thread (the store's thread); the file is
    written atomically in a worker thread.
    """

    sees_nested = False

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def handle(self, event: Event) -> Awaitable[None] | None:
        if not isinstance(event, NodeFinished):
            return None
        path = self._dir / f"step_{event.step:03d}_{_file_safe(event.node_name)}.json"
        return self._write(path, event.store.to_json())

    async def _write(self, path: Path, text: str) -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(write_atomic, path, text)


class LogSink:
    """Structured ``log_event`` lines on ``pocoflow.flow`` (only when INFO is enabled).

    Nested flows get their own LogSink, so this one ignores their events."""

    sees_nested = False

    def handle(self, event: Event) -> None:
        fields: dict[str, Any] = {"run_id": event.run_id, "flow": event.flow_name}
        for name in ("step", "node_name", "action", "status", "steps", "attempt"):
            value = getattr(event, name, None)
            if value is not None:
                fields[name] = value
        elapsed = getattr(event, "elapsed_s", None)
        if elapsed is not None:
            fields["elapsed_ms"] = round(elapsed * 1000, 3)
        error = getattr(event, "error", None)
        if error is not None:
            fields["error"] = f"{type(error).__name__}: {error_text(error)}"
        log_event(_log, event.kind, **fields)


class NodeLogSink:
    """pocoflow 0.2's node lines on ``pocoflow.node`` at INFO: "→ Node 'X' starting" and
    "← Node 'X' done  action='a'  1.23s" (only when INFO is enabled there).

    Nested flows get their own NodeLogSink, so this one ignores their events."""

    sees_nested = False

    def handle(self, event: Event) -> None:
        if isinstance(event, NodeStarted):
            _node_log.info("→ Node '%s' starting", event.node_name)
        elif isinstance(event, NodeFinished):
            _node_log.info(
                "← Node '%s' done  action='%s'  %.2fs",
                event.node_name,
                event.action,
                event.elapsed_s,
            )


class StreamSink:
    """Feeds ``Flow.stream``: every event of the run and of its nested flows."""

    sees_nested = True

    def __init__(self, send: Any) -> None:
        self._send = send

    def handle(self, event: Event) -> None:
        import anyio

        # a consumer that stopped listening does not stop the run
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._send.send_nowait(event)


def sinks_for(
    flow: Flow, extra: Sequence[Any] = (), *, inherited: Sequence[Any] = (), nested: bool = False
) -> list[Any]:
    """The sinks a run of *flow* feeds, in the order they hear each event.

    Hooks come first, as in pocoflow 0.2, whose ``node_end`` hooks ran before the
    step's checkpoint was saved: what they write to the store is in it. Then the
    database recorder (a nested flow is recorded by the outer run's recorder,
    which it inherits), so a step is durable before snapshots, logs and user
    sinks see it; *inherited* are the outer run's sinks that see nested runs,
    *extra* the caller's (``stream``).
    """
    sinks: list[Any] = []
    hooks = flow._hooks
    if any(hooks.values()):
        sinks.append(HookSink(hooks))
    sinks.extend(s for s in inherited if getattr(s, "critical", False))
    recorder = None if nested else flow._recorder
    if recorder is not None:
        sinks.append(recorder)
    if flow.checkpoint_dir is not None:
        sinks.append(JsonCheckpointSink(flow.checkpoint_dir))
    if logging_enabled():
        sinks.append(LogSink())
    if node_logging_enabled():
        sinks.append(NodeLogSink())
    outer = [getattr(s, "target", s) for s in inherited]
    sinks.extend(s for s in flow._sinks if not any(s.target == t for t in outer))
    sinks.extend(s for s in inherited if not getattr(s, "critical", False))
    sinks.extend(extra)
    return sinks


def _file_safe(name: str) -> str:
    """A node name as a file name part: path separators and odd characters become '_'."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "node"


def logging_enabled() -> bool:
    return _log.isEnabledFor(20)  # logging.INFO, without importing logging here


def node_logging_enabled() -> bool:
    """Checked once per run: with ``pocoflow.node`` off for INFO, a run has no
    NodeLogSink and node logging costs nothing per step."""
    return _node_log.isEnabledFor(20)
