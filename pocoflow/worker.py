"""Workers: run the queued runs of one flow, many at once, on any number of machines.

``pocoflow worker module:flow --db URL`` (or :class:`Worker` inside a service)
claims runs that ``flow.submit`` queued,
highest priority first, at most ``concurrency`` at a time, and runs them with
the engine like any other run: each step checkpointed and fenced, a heartbeat
per run. The database is the broker: workers share nothing else, so any number
of them, on any machines, can serve one PostgreSQL database (SQLite: one
machine). A worker claims only runs of its own flow (by ``flow_name``), wakes
on a PostgreSQL ``NOTIFY`` as soon as a run is queued (on SQLite it polls),
takes up runs whose worker died (a stale heartbeat) from their last
checkpoint, and fails a run that has killed ``max_attempts`` workers.

Stopping: :meth:`Worker.stop`, SIGTERM or SIGINT make the worker stop claiming
and let its runs finish for ``grace_period`` seconds; then (or at once, on a
second signal, or when the task running :meth:`Worker.run_async` is cancelled)
it stops the rest (a sync exec finishes its attempt, which is checkpointed) and
hands them back to the queue, resumable: a run handed back is ``queued``
again, never ``cancelled``, and another worker goes on from its last
checkpoint.
"""

from __future__ import annotations

import functools
import math
import signal
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread

from pocoflow.control import RunControl, find
from pocoflow.engine import execute
from pocoflow.errors import (
    DatabaseConnectionError,
    DatabaseTimeoutError,
    PocoFlowError,
    RunTakenOverError,
)
from pocoflow.logging import get_logger
from pocoflow.persistence.rows import MAX_INTEGER

if TYPE_CHECKING:
    from pocoflow.flow import Flow

_log = get_logger("worker")

#: How often a worker on SQLite (which has no NOTIFY) looks for queued runs.
SQLITE_POLL_S = 0.1
#: How long a worker on PostgreSQL waits for a NOTIFY before looking anyway (a run whose
#: ``not_before`` came, a dead worker's run to take up).
POSTGRES_POLL_S = 1.0
#: The longest single wait for a NOTIFY (a stopping worker's listener ends within it).
LISTEN_SLICE_S = 1.0
#: The longest pause between claims after the database failed (it doubles up to this).
MAX_BACKOFF_S = 30.0
#: The longest rate period or poll interval: a year (beyond, a limit never lets a run go).
MAX_PERIOD_S = 366 * 24 * 3600.0


class Worker:
    """Runs queued runs of *flow* from its database (or *db*), *concurrency* at a time.

    ``queue`` names the queue to serve; only runs of this flow (its ``flow_name``) are
    taken from it. ``queue_concurrency`` caps the runs of the queue running at once
    across all workers; ``rate`` caps the runs started per ``rate_period`` seconds
    across all workers (give every worker of a queue the same limits). A run whose
    worker died is taken up again once its lease (the database's ``lease_seconds``)
    runs out; one that has killed ``max_attempts`` workers is failed instead.
    ``poll_interval``: seconds between looks at the queue when nothing wakes the worker
    (default 0.1 on SQLite, 1 on PostgreSQL, which wakes it with a NOTIFY).
    ``grace_period``: seconds a stopping worker lets its runs finish before it hands
    them back. *db* (a WorkflowDB, AsyncWorkflowDB, path or URL) becomes *flow*'s
    database.
    """

    def __init__(
        self,
        flow: Flow,
        *,
        db: Any = None,
        queue: str = "default",
        concurrency: int = 4,
        queue_concurrency: int | None = None,
        rate: int | None = None,
        rate_period: float = 1.0,
        max_attempts: int = 3,
        poll_interval: float | None = None,
        grace_period: float = 30.0,
    ) -> None:
        from pocoflow.persistence.queue import Limits

        if db is not None:
            flow.db = db
        if flow.db is None:
            raise ValueError(
                f"Worker: flow '{flow.flow_name}' has no database; give one: "
                "Worker(flow, db='postgresql://...') or --db URL."
            )
        for name, value in (("concurrency", concurrency), ("max_attempts", max_attempts)):
            if not _is_int(value) or not 1 <= value <= MAX_INTEGER:
                raise ValueError(
                    f"Worker: {name} must be an int from 1 to {MAX_INTEGER}, got {value!r}."
                )
        for name, value in (("queue_concurrency", queue_concurrency), ("rate", rate)):
            if value is not None and (not _is_int(value) or not 1 <= value <= MAX_INTEGER):
                raise ValueError(
                    f"Worker: {name} must be None or an int from 1 to {MAX_INTEGER}, got {value!r}."
                )
        for name, number, least, most in (
            ("rate_period", rate_period, False, MAX_PERIOD_S),
            ("poll_interval", poll_interval, False, MAX_PERIOD_S),
            ("grace_period", grace_period, True, math.inf),  # inf: wait for every run
        ):
            if number is None and name == "poll_interval":
                continue
            if (
                not _is_number(number)
                or not (number >= 0 if least else number > 0)
                or (number > most)
            ):
                bound = f", at most {most:g}" if math.isfinite(most) else ""
                raise ValueError(
                    f"Worker: {name} must be a number of seconds "
                    f"{'>= 0' if least else '> 0'}{bound}, got {number!r}."
                )
        from pocoflow.persistence.rows import storable

        if not isinstance(queue, str) or not queue or storable(queue) != queue:
            raise ValueError(
                "Worker: queue must be a non-empty str without NUL or lone surrogates, "
                f"got {queue!r}."
            )
        self.flow = flow
        self.queue = queue
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.grace_period = grace_period
        self._limits = Limits(concurrency, queue_concurrency, rate, rate_period, flow.flow_name)
        self._records = flow.db.records
        self._poll = poll_interval
        self._running: dict[str, str] = {}  # run_id -> the owner token it was claimed with
        self._stopping = False
        self._hurry = False  # stop now: no (more) grace period
        self._handed_back: set[str] = set()
        self._wake: anyio.Event | None = None
        self._notified = False  # a NOTIFY came since the last claim
        self._orphans_looked_at = -math.inf  # (time.monotonic) see _claim
        self._orphans_every = POSTGRES_POLL_S  # (the poll interval, once serving)
        self._stop_call: Any = None
        self._served = False

    @property
    def running(self) -> list[str]:
        """The run ids this worker is running now."""
        return list(self._running)

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming, let the runs finish for ``grace_period`` seconds (``now``: not at
        all), then hand the rest back to the queue. Safe from any thread or a signal
        handler; :meth:`run_async` returns once every run is finished or handed back."""
        call = self._stop_call
        if call is not None:
            try:
                call(functools.partial(self._begin_stop, now))
                return
            except RuntimeError:  # its loop just closed: nothing runs any more
                pass
        self._stopping = True
        self._hurry = self._hurry or now

    def serve(self) -> None:
        """Run the worker until SIGTERM or SIGINT (the ``pocoflow worker`` command); a
        second signal hands the runs in flight back at once."""
        anyio.run(self.run_async, True)

    async def run_async(self, handle_signals: bool = False) -> None:
        """Serve the queue until :meth:`stop` (or, with *handle_signals*, SIGTERM/SIGINT).

        Cancelling the task that awaits this stops the worker at once: its runs are
        handed back to the queue (not recorded as cancelled), then the cancel goes on."""
        from pocoflow.control import loop_call_soon

        await anyio.to_thread.run_sync(self._records.open)
        self._stop_call = loop_call_soon()
        self._served = False
        try:
            async with anyio.create_task_group() as guard:
                guard.start_soon(self._stop_when_cancelled)
                with anyio.CancelScope(shield=True):  # an outer cancel goes through stop()
                    await self._serve(handle_signals)
                self._served = True
                guard.cancel_scope.cancel()
        finally:
            self._stop_call = None
        _log.info("Worker stopped (queue '%s')", self.queue)

    async def _stop_when_cancelled(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            if not self._served:
                self._begin_stop(True)

    async def _serve(self, handle_signals: bool) -> None:
        from pocoflow.persistence.queue import QUEUE_CHANNEL, Listener

        listener = Listener(self._records.database.engine, QUEUE_CHANNEL, self.queue)
        try:
            if listener.listening:  # before the first claim: no NOTIFY falls in between
                await anyio.to_thread.run_sync(listener.listen)
            poll = self._poll or (POSTGRES_POLL_S if listener.listening else SQLITE_POLL_S)
            self._orphans_every = poll
            _log.info(
                "Worker serving queue '%s' of flow '%s' on %s (concurrency %d)",
                self.queue,
                self.flow.flow_name,
                self._records.safe_url,
                self.concurrency,
            )
            async with anyio.create_task_group() as helpers:
                if handle_signals:
                    helpers.start_soon(self._watch_signals)
                if listener.listening:
                    helpers.start_soon(self._listen, listener, poll)
                async with anyio.create_task_group() as runs:
                    await self._claim_forever(runs, poll)
                    await self._drain()
                helpers.cancel_scope.cancel()
        finally:
            listener.close()

    def _begin_stop(self, now: bool = False) -> None:
        self._stopping = True
        self._hurry = self._hurry or now
        self._nudge()

    def _nudge(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _claim_forever(self, runs: anyio.abc.TaskGroup, poll: float) -> None:
        from dataclasses import replace

        failures = 0
        while not self._stopping:
            self._wake = anyio.Event()
            free = self.concurrency - len(self._running)
            claimed: list[dict[str, Any]] = []
            pause = poll
            if free > 0:
                notified, self._notified = self._notified, False
                try:
                    claimed = await anyio.to_thread.run_sync(
                        self._claim, replace(self._limits, room=free), notified
                    )
                    failures = 0
                except Exception as exc:  # the database is away: try again, later and later
                    failures += 1
                    pause = min(poll * 2**failures, MAX_BACKOFF_S)
                    _log.warning(
                        "Worker could not claim runs of queue '%s' (%s); trying again in %.1f s",
                        self.queue,
                        exc,
                        pause,
                    )
                database = self._records.database
                for row in claimed:
                    self._running[row["run_id"]] = database.token_of(row["run_id"]) or ""
                    runs.start_soon(self._run_one, row)
            if claimed and len(self._running) < self.concurrency:
                continue  # there may be more waiting
            with anyio.move_on_after(pause):
                await self._wake.wait()

    def _claim(self, limits: Any, notified: bool = False) -> list[dict[str, Any]]:
        """Claim what there is room for; unless a NOTIFY said a run was queued, look
        first with a read (a worker polling an empty queue takes no lock). A claim a
        NOTIFY woke looks for runs whose worker died (orphans) at most once a poll
        interval: that query is a round trip of its own, and a lease is far longer."""
        from pocoflow.persistence.queue import claimable

        records = self._records
        if not notified and not claimable(
            records.database.engine, self.queue, limits.flow_name, records.lease_seconds
        ):
            return []
        now = time.monotonic()
        orphans = not notified or now - self._orphans_looked_at >= self._orphans_every
        if orphans:
            self._orphans_looked_at = now
        return records.claim_queued(
            self.queue,
            limits,  # type: ignore[no-any-return]
            max_attempts=self.max_attempts,
            orphans=orphans,
        )

    async def _run_one(self, row: dict[str, Any]) -> None:
        from pocoflow.persistence.resume import prepare_claimed

        run_id = row["run_id"]
        token = self._running.get(run_id, "")
        try:
            try:
                start, store = await anyio.to_thread.run_sync(
                    prepare_claimed, self.flow, self._records, row
                )
            except Exception as exc:
                if isinstance(exc, PocoFlowError) and not isinstance(exc, _SERVER_AWAY):
                    # it can never start (a node it names is gone...)
                    _log.error("Run '%s' cannot start: %s", run_id, exc)
                    await anyio.to_thread.run_sync(self._fail_unstarted, run_id, token, exc)
                    return
                # the database, most likely (a timeout, a lost connection): another
                # worker, or this one, takes it up again
                _log.warning(
                    "Run '%s' could not be prepared (%s); it is taken up again "
                    "once its lease runs out",
                    run_id,
                    exc,
                )
                self._records.database.disown(run_id)
                return
            if run_id in self._handed_back:  # the worker stopped before the run began
                return
            await execute(self.flow, store, start=start, control=RunControl(run_id))
        except RunTakenOverError as exc:
            _log.warning("Run '%s' stopped here: %s", run_id, exc)
        except Exception as exc:  # recorded with the run; the worker goes on
            _log.warning("Run '%s' failed: %s", run_id, exc)
        finally:
            self._running.pop(run_id, None)
            if run_id in self._handed_back:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._hand_back, run_id, token)
            self._nudge()

    def _hand_back(self, run_id: str, token: str) -> None:
        from pocoflow.persistence.queue import forget_hand_back

        try:
            if self._records.hand_back(run_id, token):
                _log.info("Run '%s' handed back to queue '%s'", run_id, self.queue)
        except Exception:
            _log.warning(
                "Handing run '%s' back failed; it is taken up again once its lease runs out",
                run_id,
                exc_info=True,
            )
        finally:
            forget_hand_back(run_id)
            self._handed_back.discard(run_id)

    def _fail_unstarted(self, run_id: str, token: str, error: BaseException) -> None:
        from pocoflow.persistence.queue import fail_claimed

        self._records.database.disown(run_id)
        fail_claimed(self._records.database.engine, run_id, token, error)

    async def _drain(self) -> None:
        """Let the runs finish for the grace period, then stop and hand back the rest."""
        from pocoflow.persistence.queue import hand_back_on_stop

        grace = self.grace_period if math.isfinite(self.grace_period) else None
        with anyio.move_on_after(grace):
            while self._running and not self._hurry:
                self._wake = anyio.Event()
                await self._wake.wait()
        for run_id in list(self._running):
            self._handed_back.add(run_id)
            hand_back_on_stop(run_id)
            control = find(run_id)
            if control is not None:
                control.stop()
        while self._running:
            self._wake = anyio.Event()
            await self._wake.wait()

    async def _listen(self, listener: Any, poll: float) -> None:
        while True:
            if await anyio.to_thread.run_sync(
                listener.wait, min(poll, LISTEN_SLICE_S), abandon_on_cancel=True
            ):
                self._notified = True
                self._nudge()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for received in signals:
                name = signal.Signals(received).name
                if not self._stopping:
                    _log.info(
                        "Worker got %s: finishing its runs (grace %s s; send it again "
                        "to hand them back now)",
                        name,
                        self.grace_period,
                    )
                    self._begin_stop()
                else:
                    _log.info("Worker got %s again: handing its runs back now", name)
                    self._begin_stop(True)


#: errors of a server that is away for now: a run that meets one is not failed for it
_SERVER_AWAY = (DatabaseTimeoutError, DatabaseConnectionError)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
