"""Following a run by its id from any process: its status, waiting for its end, cancel.

``RunHandle.for_run(run_id, db)`` is built on this. On PostgreSQL a run's end
sends a ``NOTIFY`` (channel ``pocoflow_done``, the run id as payload), so a
waiter wakes at once; on SQLite it polls.
"""

from __future__ import annotations

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
            raise RunNotFoundError(f"No run '{self.run_id}' in {self._records.safe_url}; "
                                   "db.list_runs() shows the runs there.")
        return run

    def status(self) -> str:
        return str(self.row()["status"])

    def cancel(self) -> str:
        return self._records.cancel_run(self.run_id)

    def wait(self, timeout: float | None = None) -> Store:
        """Block until the run completes, fails, is cancelled or pauses; return its last
        checkpointed store (RunFailedError with its recorded error if it failed;
        TimeoutError after *timeout* seconds, the run going on)."""
        from pocoflow.persistence.queue import DONE_CHANNEL, Listener

        deadline = None if timeout is None else time.monotonic() + timeout
        listener = Listener(self._records.database.engine, DONE_CHANNEL, self.run_id)
        poll = POSTGRES_POLL_S if listener.listening else SQLITE_POLL_S
        try:
            while True:
                run = self.row()
                if run["status"] in STOPPED:
                    return self._outcome(run)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"Run '{self.run_id}' did not stop within {timeout} s; it is "
                        f"{run['status']}. Wait again, or cancel it.")
                listener.wait(poll if left is None else min(poll, left))
        finally:
            listener.close()

    def _outcome(self, run: dict[str, Any]) -> Store:
        if run["status"] == "failed":
            raise RunFailedError(f"Run '{self.run_id}' failed: {run.get('error_msg')}")
        from pocoflow.store import Store

        steps = self._records.checkpoint_steps(self.run_id)
        if steps:
            return self._records.load_checkpoint(self.run_id, steps[-1]["step"])
        return Store(name=self.run_id)
