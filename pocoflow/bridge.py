"""The one crossing from sync code into the async engine, and RunHandle.

- :func:`run_sync`: ``anyio.run`` when the calling thread has no event loop;
  when it has one (Jupyter, Streamlit, inside ``asyncio.run``), the run gets
  its own loop in a helper thread, since a loop cannot be re-entered.
- :func:`start_background`: background runs share one daemon thread that
  runs an event loop behind an anyio ``BlockingPortal`` (runs started by a
  node of a background run go to a loop one deeper); a RunHandle waits on,
  inspects and cancels its run from any thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import math
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread

from pocoflow.control import RunControl, loop_call_soon
from pocoflow.engine import Run, current_node_run, execute, new_run_id, phases
from pocoflow.logging import get_logger
from pocoflow.store import Store, as_store

if TYPE_CHECKING:
    from pocoflow.flow import Flow
    from pocoflow.graph import Start
    from pocoflow.node import Node

_log = get_logger("runner")
T = TypeVar("T")


def loop_running_in_this_thread() -> bool:
    """True inside a running asyncio or trio loop on the calling thread."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None and asyncio._get_running_loop() is not None:
        return True
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            return False
        return True
    return False


def run_sync(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run ``await fn(*args)`` to completion from sync code and return its result."""
    if not loop_running_in_this_thread():
        return anyio.run(fn, *args)
    return _HelperRun(fn, args).result()


class _HelperRun:
    """``await fn(*args)`` on its own loop in a helper thread, for a caller whose
    thread runs a loop already. A Ctrl-C (or a cancel of the caller's asyncio task,
    which is what ``asyncio.run`` makes of one) cancels the run there and waits for it
    to end, so it is recorded ``cancelled``, as without a loop, rather than going on
    behind the caller's back."""

    def __init__(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> None:
        self._fn, self._args = fn, args
        self._outcome: dict[str, Any] = {}
        self._scope: tuple[Any, anyio.CancelScope] | None = None
        self._stopping = False
        self._lock = threading.Lock()
        # its own "done" flag: a Thread.join cut short by Ctrl-C can leave the thread
        # looking dead while it still runs
        self._done = threading.Event()
        self._helper = threading.Thread(target=self._target, name="pocoflow-run", daemon=True)

    def _target(self) -> None:
        try:
            self._outcome["result"] = anyio.run(self._guarded)
        except BaseException as exc:
            self._outcome["error"] = exc
        finally:
            self._done.set()

    async def _guarded(self) -> Any:
        with anyio.CancelScope() as scope:
            with self._lock:
                self._scope = (loop_call_soon(), scope)
                if self._stopping:  # cancelled before its loop was up
                    scope.cancel()
            return await self._fn(*self._args)
        raise _CutShort  # cancelled by result() below: it raises the caller's reason

    def result(self) -> Any:
        self._helper.start()
        caller = _asyncio_task()
        cancels = getattr(caller, "cancelling", lambda: 0)
        before = cancels()  # (a task already handling a cancel runs cleanup code)
        try:
            while not self._done.wait(0.1):
                if cancels() > before:  # cancelled during the call
                    self._cancel()
                    raise sys.modules["asyncio"].CancelledError
        except BaseException:
            self._cancel()
            raise
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["result"]

    def _cancel(self) -> None:
        """Cancel the run on its loop, then wait (uninterrupted) for it to end."""
        with self._lock:
            self._stopping = True
            running = self._scope
        if running is not None and not self._done.is_set():
            call_soon, scope = running  # (not waiting for the loop: a second Ctrl-C
            # must not cut this short)
            with contextlib.suppress(RuntimeError):  # (its loop has just ended)
                call_soon(scope.cancel)
        while True:
            try:
                self._done.wait()
                return
            except KeyboardInterrupt:  # the run is stopping; its end is being recorded
                continue


class _CutShort(Exception):
    """The helper's run was cancelled on the caller's behalf."""


def _asyncio_task() -> Any:
    """The asyncio task the calling thread runs, if any."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None or asyncio._get_running_loop() is None:
        return None
    return asyncio.current_task()


def run_node(node: Node, store: Store | dict[str, Any]) -> str:
    """``Node._run`` (pocoflow 0.2): the node's phases, blocking. Called back by a
    ``_run`` override during a run, they run on that run's loop; called outside a run
    (a unit test of one node), the node runs alone."""
    current = current_node_run()
    if current is not None:
        run, step = current
        return anyio.from_thread.run(phases, node, run, step)
    alone = Run(None, "", as_store(store), [], RunControl(""))
    return run_sync(phases, node, alone, 0)


class _BackgroundLoop:
    """The process-wide event loop thread for background runs, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def portal(self) -> anyio.from_thread.BlockingPortal:
        with self._lock:
            if self._portal is None or self._pid != os.getpid():  # a fork gets its own loop
                self._start()
            assert self._portal is not None
            return self._portal

    def runs_this_thread(self) -> bool:
        """True when called from this loop's own thread (a node of a background run)."""
        return self._thread is threading.current_thread() and self._pid == os.getpid()

    def _start(self) -> None:
        ready = threading.Event()

        async def serve() -> None:
            async with anyio.from_thread.BlockingPortal() as portal:
                self._portal = portal
                ready.set()
                await portal.sleep_until_stopped()

        self._thread = threading.Thread(
            target=anyio.run, args=(serve,), daemon=True, name="pocoflow-background"
        )
        self._thread.start()
        ready.wait()
        self._pid = os.getpid()


#: background runs go to the first loop; a node of a run on loop N that starts one
#: sends it to loop N + 1 (made on first use): a portal cannot be called from its
#: own loop's thread, and that thread may be blocked in the node's handle.wait()
_background: list[_BackgroundLoop] = [_BackgroundLoop()]
_background_lock = threading.Lock()
#: how deep background runs started from background runs may nest
MAX_BACKGROUND_DEPTH = 16


def _background_loop() -> _BackgroundLoop:
    """The loop a new background run goes to, from the calling thread."""
    with _background_lock:
        depth = next((i + 1 for i, loop in enumerate(_background) if loop.runs_this_thread()), 0)
        if depth >= MAX_BACKGROUND_DEPTH:
            raise RuntimeError(
                f"run_background(): background runs started from background runs nest "
                f"{MAX_BACKGROUND_DEPTH} deep at most. From a node, await "
                "other_flow.run_async(store) (an AsyncNode) instead."
            )
        while len(_background) <= depth:
            _background.append(_BackgroundLoop())
        return _background[depth]


def start_background(
    flow: Flow, store: Store | dict[str, Any] | None, start: Start | None
) -> RunHandle:
    """Schedule a run on the background loop; the handle knows its run_id at once."""
    store = as_store(store)
    control = RunControl(new_run_id(flow))
    run = functools.partial(execute, flow, store, start=start, control=control)
    future = _background_loop().portal().start_task_soon(run)
    _log.info("Flow '%s' started in background  run_id=%s", flow.flow_name, control.run_id)
    return RunHandle(control, future)


class RunHandle:
    """A run going on: its id, live status, wait and cancel.

    :meth:`Flow.run_background` returns one for the run it started;
    :meth:`for_run` makes one for any recorded run, from any process.
    """

    def __init__(self, control: RunControl, future: concurrent.futures.Future[Store]) -> None:
        self._control: RunControl | None = control
        self._future: concurrent.futures.Future[Store] | None = future
        self._watcher: Any = None

    @classmethod
    def for_run(cls, run_id: str, db: Any) -> RunHandle:
        """A handle on run *run_id* of *db* (a WorkflowDB or AsyncWorkflowDB), whichever
        process runs it (a worker, another script): ``status`` reads the database,
        ``wait`` returns when it completes, fails, is cancelled or pauses (on PostgreSQL
        woken by a NOTIFY), ``cancel`` asks its process to stop it."""
        watch = getattr(db, "watch", None)
        if watch is None:
            raise TypeError(
                f"RunHandle.for_run needs a WorkflowDB or AsyncWorkflowDB, got {type(db).__name__}."
            )
        handle = cls.__new__(cls)
        handle._control = None
        handle._future = None
        handle._watcher = watch(run_id)
        return handle

    @property
    def run_id(self) -> str:
        if self._watcher is not None:
            return str(self._watcher.run_id)
        return self._control.run_id  # type: ignore[union-attr]

    @property
    def status(self) -> str:
        """``queued``, ``running``, ``completed``, ``failed``, ``cancelled``, ``paused``
        (or ``interrupted``): live, from the run itself (with a database, the run's row
        says the same once the run has recorded its end)."""
        if self._watcher is not None:
            return str(self._watcher.status())
        status = self._control.status  # type: ignore[union-attr]
        future = self._future
        if status == "running" and future is not None and future.done():
            return "failed" if future.exception() is not None else "completed"
        return status

    @property
    def is_done(self) -> bool:
        if self._watcher is not None:
            return self.status in ("completed", "failed", "cancelled", "paused")
        return self._future.done()  # type: ignore[union-attr]

    def wait(self, timeout: float | None = None) -> Store:
        """Block until the run ends; return its Store or re-raise its exception.

        A cancelled run returns its partial Store. Raises ``TimeoutError`` if
        *timeout* seconds pass first (the run goes on). For a handle from
        :meth:`for_run`: the last checkpointed store, ``RunFailedError`` with the
        recorded error if the run failed.
        """
        _check_timeout(timeout)
        if self._watcher is not None:
            return self._watcher.wait(timeout)  # type: ignore[no-any-return]
        future = self._future
        assert future is not None
        # waited for apart from result(): a run that failed with a TimeoutError of its
        # own (an API call, Node.timeout) re-raises it, not "did not finish"
        done, _ = concurrent.futures.wait([future], _wait_limit(timeout))
        if not done:
            raise TimeoutError(
                f"Run '{self.run_id}' did not finish within {timeout} s; it is still "
                f"{self.status}. Call wait() again, or cancel() it."
            )
        return future.result()

    async def wait_async(self) -> Store:
        """Awaitable version of :meth:`wait` (no timeout; cancel the waiting task instead)."""
        if self._watcher is not None:
            return await self._watcher.wait_async()  # type: ignore[no-any-return]
        future = self._future
        assert future is not None
        if future.done():
            return future.result()
        return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)

    def cancel(self) -> None:
        """Stop the run: an awaiting AsyncNode is cancelled at once; a sync exec in a
        worker thread finishes its attempt first. Status becomes ``cancelled``. A run in
        another process is asked through the database and stops within a second or so."""
        if self._watcher is not None:
            self._watcher.cancel()
            return
        if self._future is not None and self._future.done():
            return
        _log.info("Cancel requested for run '%s'", self.run_id)
        self._control.stop()  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id!r} {self.status}>"


def _check_timeout(timeout: Any) -> None:
    """A wait's timeout: None (no limit) or a number of seconds (at most 0: look once)."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"RunHandle.wait(timeout=...) takes a number of seconds, or None to wait until "
            f"the run stops; got {timeout!r} ({type(timeout).__name__})."
        )
    if math.isnan(timeout):
        raise ValueError(
            "RunHandle.wait(timeout=nan): give a number of seconds, or None to wait until "
            "the run stops."
        )


def _wait_limit(timeout: float | None) -> float | None:
    """A checked timeout as the standard library's waits take it: past what they can wait
    (inf, 1e308) is no limit, as it is when the run is followed from the database."""
    return None if timeout is None or timeout >= threading.TIMEOUT_MAX else timeout
