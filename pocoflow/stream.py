"""``Flow.stream``: run a flow in a task of its own and hand its events to an ``async for``.

The run is not held inside the iterator (an async generator that keeps a task
group open across ``yield`` breaks its caller when the loop is left early: a
``break``, an error, a timeout around the loop). It runs in a task spawned on
the caller's loop, in the caller's context; the iterator only receives its
events. Closing the iterator (``aclose``, ``async with``), cancelling the task
that iterates, or dropping the iterator cancels the run.
"""

from __future__ import annotations

import contextvars
import math
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from pocoflow.control import RunControl
from pocoflow.engine import execute, new_run_id
from pocoflow.events import Event
from pocoflow.sinks import StreamSink

if TYPE_CHECKING:
    from types import TracebackType

    from pocoflow.flow import Flow
    from pocoflow.graph import Start

_running: set[Any] = set()  # asyncio keeps only weak references to tasks


class EventStream:
    """The events of one run, in order, the last ``flow_end`` included; then the run's
    error, if it failed. Use it with ``async for``, or ``async with`` to close it."""

    def __init__(self, flow: Flow, store: Any, start: Start | None) -> None:
        send, self._receive = anyio.create_memory_object_stream[Event](math.inf)
        # what the run's task holds: never this object, so that dropping it is seen
        self._run = _StreamedRun(flow, store, start, send)

    @property
    def run_id(self) -> str:
        return self._run.control.run_id

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        run = self._run
        if run.ended is None:
            run.begin()
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._receive.close()
            error, run.error = run.error, None
            if error is not None:
                raise error from None
            raise StopAsyncIteration from None
        except anyio.get_cancelled_exc_class():
            run.control.stop()  # whoever iterates was cancelled: so is the run
            raise

    async def aclose(self) -> None:
        """Cancel the run if it goes on, and wait for it to end (recorded ``cancelled``)."""
        self._receive.close()
        ended = self._run.ended
        if ended is not None and not ended.is_set():
            self._run.control.stop()
            with anyio.CancelScope(shield=True):
                await ended.wait()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        run = getattr(self, "_run", None)
        if run is None:
            return
        if run.ended is not None and not run.ended.is_set():  # left without closing
            run.control.stop()
        self._receive.close()


class _StreamedRun:
    """The run behind an EventStream, as its task sees it."""

    def __init__(self, flow: Flow, store: Any, start: Start | None, send: Any) -> None:
        self.flow, self.store, self.start, self.send = flow, store, start, send
        self.control = RunControl(new_run_id(flow))
        self.error: BaseException | None = None
        self.ended: anyio.Event | None = None  # made once a loop runs

    def begin(self) -> None:
        self.ended = anyio.Event()
        _spawn(self.produce, contextvars.copy_context())

    async def produce(self) -> None:
        try:
            async with self.send:
                await execute(
                    self.flow,
                    self.store,
                    start=self.start,
                    control=self.control,
                    sinks=[StreamSink(self.send)],
                )
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:  # delivered after the last event, in the consumer's
            # task (a SystemExit or Ctrl-C out of a trio system task would crash trio)
            self.error = exc
        finally:
            assert self.ended is not None
            self.ended.set()


def _spawn(fn: Callable[[], Awaitable[None]], context: contextvars.Context) -> None:
    """Start ``fn()`` as a task of its own on the running loop (in *context*)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None and asyncio._get_running_loop() is not None:
        task = context.run(asyncio.get_running_loop().create_task, fn())
        _running.add(task)
        task.add_done_callback(_running.discard)
        return
    import trio  # not asyncio: anyio's other backend

    trio.lowlevel.spawn_system_task(fn, name="pocoflow-stream", context=context)
