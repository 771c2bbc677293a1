"""The built-in sinks of the event stream: user hooks, JSON snapshots, logging, streams.

A sink is any object with ``handle(event)`` returning None or an awaitable
(so sync sinks cost no coroutine) and a ``sees_nested`` flag: True if it also
wants the events of flows nested inside its run. The engine awaits each sink
before the next node starts, so a checkpoint is written when a step is done.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from pocoflow.events import Event, FlowFinished, NodeFailed, NodeFinished, NodeStarted
from pocoflow.logging import get_logger, log_event
from pocoflow.store import write_atomic

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

_log = get_logger("flow")

class Sink(Protocol):
    sees_nested: bool

    def handle(self, event: Event) -> Awaitable[None] | None: ...


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

    async def _call_all(self, kind: str, callbacks: list[Callable[..., Any]],
                        args: tuple[Any, ...]) -> None:
        for callback in callbacks:
            try:
                result = callback(*args)
                if hasattr(result, "__await__"):
                    await result
            except Exception:
                _log.warning("Hook %r for '%s' raised; the run goes on", callback, kind,
                             exc_info=True)


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
            fields["error"] = f"{type(error).__name__}: {error}"
        log_event(_log, event.kind, **fields)


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


def _file_safe(name: str) -> str:
    """A node name as a file name part: path separators and odd characters become '_'."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "node"


def logging_enabled() -> bool:
    return _log.isEnabledFor(20)  # logging.INFO, without importing logging here


async def stream_events(flow: Any, store: Any, resume_from: Any) -> AsyncIterator[Event]:
    """Run *flow* in a task and yield every event, the last ``flow_end`` included;
    then re-raise the run's error, if any."""
    import math

    import anyio

    from pocoflow.engine import execute, first_error

    send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)
    errors: list[BaseException] = []

    async def produce() -> None:
        async with send:
            try:
                await execute(flow, store, resume_from=resume_from,
                              extra_sinks=[StreamSink(send)])
            except Exception as exc:  # delivered after the last event
                errors.append(exc)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(produce)
            async with receive:
                async for event in receive:
                    yield event
    except BaseExceptionGroup as group_error:  # GeneratorExit from aclose(), or a cancel
        raise first_error(group_error) from None
    if errors:
        raise errors[0]
