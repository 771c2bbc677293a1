"""Following a run by its id from any process: its status, waiting for its end, cancel.

``RunHandle.for_run(run_id, db)`` is built on this. On PostgreSQL a run's end
sends a ``NOTIFY`` (channel ``pocoflow_done``, the run id as payload), so a
waiter wakes at once; on SQLite it polls.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from pocoflow.errors import RunFailedError, RunNotFoundError

if TYPE_CHECKING:
    from pocoflow.persistence.records import RunRecords
    from pocoflow.store import Store

#: Statuses after which a run does nothing more until someone acts (paused: a human).
STOPPED = ("completed", "failed", "cancelled", "paused")
SQLITE_POLL_S = 0.05
POSTGRES_POLL_S = 1.0


class RunWatcher:
    """One run of a database, followed from outside the process that runs it."""

    def __init__(self, records: RunRecords, run_id: str) -> None:
        self._records = records
        self.run_id = run_id

    def row(self) -> dict[str, Any]:
        run = self._records.get_run(self.run_id)
        if run is None:
            raise RunNotFoundError(
                f"No run '{self.run_id}' in {self._records.safe_url}; "
                "db.list_runs() shows the runs there."
            )
        return run

    def status(self) -> str:
        return str(self.row()["status"])

    def cancel(self) -> str:
        return self._records.cancel_run(self.run_id)

    def wait(self, timeout: float | None = None) -> Store:
        """Block until the run completes, fails, is cancelled or pauses; return its last
        checkpointed store (RunFailedError with its recorded error if it failed;
        TimeoutError after *timeout* seconds, the run going on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        listener, poll = self._listener()
        try:
            listener.listen()  # before the first look, so no NOTIFY falls in between
            while True:
                run = self.row()
                if run["status"] in STOPPED:
                    return self._outcome(run)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise self._timeout(timeout, run)
                listener.wait(poll if left is None else min(poll, left))
        finally:
            listener.close()

    async def wait_async(self) -> Store:
        """Awaitable :meth:`wait` without a timeout (cancel the waiting task instead): no
        thread is left behind waiting for the run when the task is cancelled."""
        import anyio
        import anyio.to_thread

        listener, poll = self._listener()
        try:
            if listener.listening:
                await anyio.to_thread.run_sync(listener.listen, abandon_on_cancel=True)
            while True:
                run = await anyio.to_thread.run_sync(self.row, abandon_on_cancel=True)
                if run["status"] in STOPPED:
                    return await anyio.to_thread.run_sync(self._outcome, run)
                if listener.listening:  # one bounded wait at a time: an abandoned one ends
                    await anyio.to_thread.run_sync(listener.wait, poll, abandon_on_cancel=True)
                else:
                    await anyio.sleep(poll)
        finally:
            listener.close()

    def _listener(self) -> tuple[Any, float]:
        from pocoflow.persistence.queue import DONE_CHANNEL, Listener

        listener = Listener(self._records.database.engine, DONE_CHANNEL, self.run_id)
        return listener, POSTGRES_POLL_S if listener.listening else SQLITE_POLL_S

    def _timeout(self, timeout: float | None, run: dict[str, Any]) -> TimeoutError:
        return TimeoutError(
            f"Run '{self.run_id}' did not stop within {timeout} s; it is "
            f"{run['status']}. Wait again, or cancel it."
        )

    def _outcome(self, run: dict[str, Any]) -> Store:
        """The store a stopped run leaves: its last checkpoint, or (a queued run cancelled
        before it started) the store it was submitted with."""
        if run["status"] == "failed":
            raise RunFailedError(f"Run '{self.run_id}' failed: {run.get('error_msg')}")
        from pocoflow.store import Store

        steps = self._records.checkpoint_steps(self.run_id)
        if steps:
            return self._records.load_checkpoint(self.run_id, steps[-1]["step"])
        from pocoflow.persistence.codec import decode_state

        started = self._records.get_run_input(self.run_id) or {}
        state = json.loads(started["input_json"]) if started.get("input_json") else {}
        return Store(decode_state(state, allow_pickle=self._records.allow_pickle), name=self.run_id)
