"""Workers: run the queued runs of one flow, many at once, on any number of machines.

``pocoflow worker module:flow --db URL`` (or :class:`Worker` inside a service)
claims runs that ``flow.submit`` queued, highest priority first, at most
``concurrency`` at a time, and runs them with the engine like any other run:
each step checkpointed and fenced, a heartbeat per run. The database is the
broker: workers share nothing else, so any number of them, on any machines,
can serve one PostgreSQL database (SQLite: one machine). A worker wakes on a
PostgreSQL ``NOTIFY`` as soon as a run is queued (on SQLite it polls), takes
up runs whose worker died (a stale heartbeat) from their last checkpoint, and
on SIGTERM/SIGINT stops claiming, lets its runs finish for ``grace_period``
seconds, then stops the rest and hands them back to the queue, resumable.
"""

from __future__ import annotations

import functools
import math
import signal
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from pocoflow.control import RunControl, find
from pocoflow.engine import execute
from pocoflow.logging import get_logger

if TYPE_CHECKING:
    from pocoflow.flow import Flow

_log = get_logger("worker")

#: How often a worker on SQLite (which has no NOTIFY) looks for queued runs.
SQLITE_POLL_S = 0.1
#: How long a worker on PostgreSQL waits for a NOTIFY before looking anyway (a run whose
#: ``not_before`` came, a dead worker's run to take up).
POSTGRES_POLL_S = 1.0


class Worker:
    """Runs queued runs of *flow* from its database (or *db*), *concurrency* at a time.

    ``queue`` names the queue to serve. ``queue_concurrency`` caps the runs of the
    queue running at once across all workers; ``rate`` caps the runs started per
    ``rate_period`` seconds across all workers (give every worker of a queue the same
    limits). A run whose worker died is taken up again; one that has killed
    ``max_attempts`` workers is failed instead. ``grace_period``: seconds a stopping
    worker lets its runs finish before it hands them back.
    """

    def __init__(self, flow: Flow, *, db: Any = None, queue: str = "default",
                 concurrency: int = 4, queue_concurrency: int | None = None,
                 rate: int | None = None, rate_period: float = 1.0, max_attempts: int = 3,
                 poll_interval: float | None = None, grace_period: float = 30.0) -> None:
        from pocoflow.persistence.queue import Limits

        if db is not None:
            flow.db = db
        if flow.db is None:
            raise ValueError(f"Worker: flow '{flow.flow_name}' has no database; give one: "
                             "Worker(flow, db='postgresql://...') or --db URL.")
        for name, value in (("concurrency", concurrency), ("max_attempts", max_attempts)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Worker: {name} must be an int >= 1, got {value!r}.")
        for name, value in (("queue_concurrency", queue_concurrency), ("rate", rate)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"Worker: {name} must be None or an int >= 1, got {value!r}.")
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"Worker: queue must be a non-empty str, got {queue!r}.")
        self.flow = flow
        self.queue = queue
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.grace_period = grace_period
        self._limits = Limits(concurrency, queue_concurrency, rate, rate_period)
        self._records = flow.db.records
        self._poll = poll_interval
        self._running: dict[str, str] = {}  # run_id -> the owner token it was claimed with
        self._stopping = False
        self._handed_back: set[str] = set()
        self._wake: anyio.Event | None = None
        self._stop_call: Any = None

    @property
    def running(self) -> list[str]:
        """The run ids this worker is running now."""
        return list(self._running)

    def stop(self) -> None:
        """Stop claiming, let the runs finish for ``grace_period`` seconds, then hand the
        rest back. Safe from any thread or a signal handler."""
        call = self._stop_call
        if call is not None:
            call(self._begin_stop)
        else:
            self._stopping = True

    def serve(self) -> None:
        """Run the worker until SIGTERM or SIGINT (the ``pocoflow worker`` command)."""
        anyio.run(self.run_async, True)

    async def run_async(self, handle_signals: bool = False) -> None:
        """Serve the queue until :meth:`stop` (or, with *handle_signals*, SIGTERM/SIGINT)."""
        from pocoflow.control import _loop_call_soon
        from pocoflow.persistence.queue import QUEUE_CHANNEL, Listener

        await anyio.to_thread.run_sync(self._records.open)
        self._stop_call = _loop_call_soon()
        listener = Listener(self._records.database.engine, QUEUE_CHANNEL, self.queue)
        poll = self._poll or (POSTGRES_POLL_S if listener.listening else SQLITE_POLL_S)
        _log.info("Worker serving queue '%s' of flow '%s' on %s (concurrency %d)",
                  self.queue, self.flow.flow_name, self._records.safe_url, self.concurrency)
        try:
            async with anyio.create_task_group() as runs:
                async with anyio.create_task_group() as helpers:
                    if handle_signals:
                        helpers.start_soon(self._watch_signals)
                    if listener.listening:
                        helpers.start_soon(self._listen, listener, poll)
                    await self._claim_forever(runs, poll)
                    helpers.cancel_scope.cancel()
                await self._drain()
        finally:
            listener.close()
            self._stop_call = None
        _log.info("Worker stopped (queue '%s')", self.queue)

    def _begin_stop(self) -> None:
        self._stopping = True
        self._nudge()

    def _nudge(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _claim_forever(self, runs: anyio.abc.TaskGroup, poll: float) -> None:
        from dataclasses import replace

        while not self._stopping:
            self._wake = anyio.Event()
            free = self.concurrency - len(self._running)
            claimed: list[dict[str, Any]] = []
            if free > 0:
                claimed = await anyio.to_thread.run_sync(functools.partial(
                    self._records.claim_queued, self.queue, replace(self._limits, room=free),
                    max_attempts=self.max_attempts))
                for row in claimed:
                    self._running[row["run_id"]] = self._records.database.token_of(
                        row["run_id"]) or ""
                    runs.start_soon(self._run_one, row)
            if claimed and len(self._running) < self.concurrency:
                continue  # there may be more waiting
            with anyio.move_on_after(poll):
                await self._wake.wait()

    async def _run_one(self, row: dict[str, Any]) -> None:
        from pocoflow.persistence.resume import prepare_claimed

        run_id = row["run_id"]
        try:
            start, store = await anyio.to_thread.run_sync(prepare_claimed, self.flow,
                                                          self._records, row)
            await execute(self.flow, store, start=start, control=RunControl(run_id))
        except Exception as exc:  # recorded with the run; the worker goes on
            _log.warning("Run '%s' failed: %s", run_id, exc)
        finally:
            token = self._running.pop(run_id, None)
            if run_id in self._handed_back and token is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._records.hand_back, run_id, token)
            self._nudge()

    async def _drain(self) -> None:
        """Let the runs finish for the grace period, then stop and hand back the rest."""
        with anyio.move_on_after(self.grace_period if math.isfinite(self.grace_period)
                                 else None):
            while self._running:
                self._wake = anyio.Event()
                await self._wake.wait()
        for run_id in list(self._running):
            control = find(run_id)
            if control is not None:
                self._handed_back.add(run_id)
                control.stop()
        while self._running:
            self._wake = anyio.Event()
            await self._wake.wait()

    async def _listen(self, listener: Any, poll: float) -> None:
        while True:
            if await anyio.to_thread.run_sync(listener.wait, poll, abandon_on_cancel=True):
                self._nudge()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for received in signals:
                _log.info("Worker got %s: finishing its runs (grace %s s)",
                          signal.Signals(received).name, self.grace_period)
                self._begin_stop()
                return
