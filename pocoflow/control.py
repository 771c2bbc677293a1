"""Run controls: a running run's id, live status and stop switch, reachable from any thread.

The engine gives each top-level run a :class:`RunControl` and lists it here
while the run is going on, so whoever learns that the run must stop (a
``RunHandle`` in another thread, the database's watcher when a cancel was
requested from another process or the run was taken over) can stop it by
its id, without knowing anything else about the run.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

_active: dict[str, RunControl] = {}
_lock = threading.Lock()


class RunControl:
    """One run as seen from outside: its id, live status, and the cancel switch."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.status = "running"
        self.cancel_requested = False
        #: why the run must stop, when it is not a plain cancel (it was taken over)
        self.stop_error: BaseException | None = None
        #: when the sinks' grace to hear of a cancel ends (see engine.SINK_GRACE_S)
        self.grace_deadline: float | None = None
        self._scope: Any = None  # the run's anyio CancelScope while it runs
        self._call_soon: Callable[[Callable[[], None]], Any] | None = None

    def cancel(self) -> None:
        """Stop the run; call it on the run's event loop thread (see :meth:`stop`)."""
        self.cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()

    def stop(self, error: BaseException | None = None) -> None:
        """Stop the run from any thread: a cancel, or with *error* (the run then raises
        it and writes nothing more). An awaiting node is cancelled where it awaits; a
        sync exec finishes its attempt first."""
        if error is not None and self.stop_error is None:
            self.stop_error = error
        # seen by the engine between two nodes even if the loop gets no turn before the
        # next one (nodes with no exec never yield): it cancels the run itself there
        self.cancel_requested = True
        call_soon = self._call_soon
        if call_soon is None:  # not started yet, or over: the flag is seen at the start
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
            call_soon(self.cancel)

    def attach(self, scope: Any) -> None:
        """Bind to the run's cancel scope and loop (on the loop thread, at the start)."""
        self._scope = scope
        self._call_soon = loop_call_soon()

    def detach(self) -> None:
        self._scope = None
        self._call_soon = None


def loop_call_soon() -> Callable[[Callable[[], None]], Any]:
    """The running loop's way to run a callback on its thread from another thread."""
    import sys

    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        loop = asyncio._get_running_loop()
        if loop is not None:
            return loop.call_soon_threadsafe
    import trio  # not asyncio: anyio's other backend

    return trio.lowlevel.current_trio_token().run_sync_soon


def register(control: RunControl) -> None:
    with _lock:
        _active[control.run_id] = control


def unregister(control: RunControl) -> None:
    with _lock:
        if _active.get(control.run_id) is control:
            del _active[control.run_id]


def find(run_id: str) -> RunControl | None:
    """The control of a run going on in this process, or None."""
    return _active.get(run_id)


def stop(run_id: str, error: BaseException | None = None) -> bool:
    """Stop the run *run_id* if it runs in this process; True if it does."""
    control = find(run_id)
    if control is None:
        return False
    control.stop(error)
    return True
