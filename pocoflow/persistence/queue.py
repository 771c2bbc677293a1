"""The queue: queued runs in ``pf_runs``, claimed by workers, PostgreSQL as the broker.

A queued run is a ``pf_runs`` row with status ``queued`` and a ``queue``
name. Workers claim the highest priority, oldest runs of their own flow whose
``not_before`` has come (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers
never wait on each other's rows; SQLite's write lock makes its claims one at a
time), and in the same transaction take up runs whose worker stopped
heartbeating (or fail them, after ``max_attempts``). A global per-queue
concurrency limit and a rate limit are checked under a lock on the queue (a
PostgreSQL advisory lock; SQLite's write lock), so they hold across every
worker. On PostgreSQL each submit, requeue and hand-back, and each run's end,
sends a ``NOTIFY``, so idle workers and waiting callers wake at once. Here
too: a human's updates kept until a checkpoint holds them (:func:`requeue`,
:func:`pending_updates`), runs handed back by a stopping worker, and deleting
old runs.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from pocoflow.errors import PersistenceError, RunExistsError, error_text
from pocoflow.logging import get_logger
from pocoflow.persistence.connect import explain
from pocoflow.persistence.models import IN_FLIGHT, checkpoints, events, run_inputs, runs
from pocoflow.persistence.rows import claimed_run

#: The PostgreSQL channels: a run was queued (payload: the queue), a run ended (its id).
_log = get_logger("worker")

QUEUE_CHANNEL = "pocoflow_queue"
DONE_CHANNEL = "pocoflow_done"
ENDED = ("completed", "failed", "cancelled")


def _postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def notify(conn: Connection, channel: str, payload: str) -> None:
    """Wake the listeners of *channel* when this transaction commits (PostgreSQL only)."""
    if _postgres(conn):
        conn.execute(select(func.pg_notify(channel, payload)))


# ── submitting ──────────────────────────────────────────────────────────────


#: A submit whose dedup_key changes hands (its holder ends, another run takes it) this
#: many times while it looks gives up; each turn is one more run of that key ending.
DEDUP_TRIES = 5


def submit(conn: Connection, row: dict[str, Any], inputs: dict[str, Any]) -> str:
    """Insert a queued run and its input; return its run_id, or, when its ``dedup_key``
    is held by a run still queued or running, that run's id (nothing inserted).

    It inserts without reading first (a taken run_id fails the insert): one round trip
    less on the way from submit to the first node."""
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    key = row.get("dedup_key")
    statement = insert(runs).values(row)
    if key is not None:  # a key held by a run in flight inserts nothing (no error)
        statement = statement.on_conflict_do_nothing(
            index_elements=["dedup_key"], index_where=text(IN_FLIGHT)
        )
    # an INSERT's rowcount is kept only when asked for (SQLAlchemy 2; psycopg reports -1)
    statement = statement.execution_options(preserve_rowcount=True)
    for _ in range(DEDUP_TRIES):
        try:
            if conn.execute(statement).rowcount != 0:
                break
        except IntegrityError:
            raise _run_exists(row["run_id"]) from None
        # the key is held: a taken run_id says so first, as it does without a key
        if conn.execute(select(runs.c.run_id).where(runs.c.run_id == row["run_id"])).first():
            raise _run_exists(row["run_id"])
        holder = conn.execute(
            select(runs.c.run_id).where(
                runs.c.dedup_key == key, runs.c.status.in_(("queued", "running"))
            )
        ).scalar()
        if holder is not None:
            return str(holder)
        # its holder ended meanwhile: try again (a run that took the key since is found)
    else:
        raise PersistenceError(
            f"submit: dedup_key {key!r} changed hands {DEDUP_TRIES} times while run "
            f"'{row['run_id']}' was being queued (runs holding it kept ending); nothing was "
            "queued. Submit again."
        )
    conn.execute(run_inputs.insert().values(run_id=row["run_id"], **inputs))
    notify(conn, QUEUE_CHANNEL, row["queue"])
    return str(row["run_id"])


def _run_exists(run_id: str) -> RunExistsError:
    return RunExistsError(
        f"Run '{run_id}' already exists; a submitted run needs a new run_id (leave "
        "submit(run_id=...) and Flow(run_id=...) unset for a fresh one each time), and a "
        "stopped run goes back to the workers with db.resume(run_id). Nothing was queued."
    )


def requeue(conn: Connection, run: dict[str, Any], values: dict[str, Any]) -> int:
    """Put a stopped run back in its queue (a resume for the workers), if its row is still
    as read; 1 if it was.

    A human's resume starts the count of workers lost to the run afresh (``attempts``).
    Its updates (``resume_updates``, a store's JSON) are kept with the newest checkpoint
    id of the run at this moment: a worker applies them only while no newer checkpoint
    exists, so a worker that dies before checkpointing them does not lose them, and one
    that comes after a checkpoint holding them does not apply them twice. A paused run
    whose ``dedup_key`` another run in flight took meanwhile goes on without it."""

    def same(column: Any, value: Any) -> Any:
        return column.is_(None) if value is None else column == value

    values = {**values, "attempts": 0}
    updates = values.get("resume_updates")
    if updates is not None:
        values["resume_updates"] = json.dumps(
            {
                "after_checkpoint": _newest_checkpoint(conn, run["run_id"]),
                "store": json.loads(updates),
            }
        )
    key = run.get("dedup_key")
    if (
        key is not None
        and conn.execute(
            select(runs.c.run_id).where(
                runs.c.dedup_key == key,
                runs.c.run_id != run["run_id"],
                runs.c.status.in_(("queued", "running")),
            )
        ).first()
        is not None
    ):
        values["dedup_key"] = None
    done = conn.execute(
        update(runs)
        .where(
            runs.c.run_id == run["run_id"],
            runs.c.status == run["status"],
            same(runs.c.owner, run.get("owner")),
            same(runs.c.heartbeat_at, run.get("heartbeat_at")),
        )
        .values(values)
    ).rowcount
    if done:
        notify(conn, QUEUE_CHANNEL, values.get("queue") or run.get("queue") or "default")
    return done


def _newest_checkpoint(conn: Connection, run_id: str) -> int:
    """The id of the newest checkpoint of *run_id* or of a nested flow's run inside it
    (ids only grow), 0 if none."""
    found = conn.execute(
        select(checkpoints.c.run_id, func.max(checkpoints.c.id))
        .where(
            (checkpoints.c.run_id == run_id)
            | checkpoints.c.run_id.like(f"{_escaped(run_id)}.%", escape="\\")
        )
        .group_by(checkpoints.c.run_id)
    ).all()
    nested = re.compile(re.escape(run_id) + r"(\.\d+)*")
    return max((int(newest) for owner, newest in found if nested.fullmatch(owner)), default=0)


def pending_updates(conn: Connection, run_id: str, stored: str | None) -> str | None:
    """The store JSON of the updates a ``db.resume`` left for *run_id*, or None if there
    are none or a checkpoint taken since holds them already."""
    if not stored:
        return None
    kept = json.loads(stored)
    if not (isinstance(kept, dict) and set(kept) == {"after_checkpoint", "store"}):
        return stored  # written by hand, without a checkpoint mark: always applied
    if _newest_checkpoint(conn, run_id) > int(kept["after_checkpoint"]):
        return None
    return json.dumps(kept["store"])


# ── claiming ────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Limits:
    """What one claim may take: *room* runs of flow *flow_name* (None: of any flow) for
    this worker, within the queue's global concurrency and its rate (runs started per
    *per_seconds*)."""

    room: int
    concurrency: int | None = None
    rate: int | None = None
    per_seconds: float = 1.0
    flow_name: str | None = None


def claim(
    conn: Connection,
    queue: str,
    limits: Limits,
    *,
    owner: str,
    now: str,
    stale_before: str,
    rate_since: str,
    max_attempts: int,
    orphans: bool = True,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Claim queued runs (and runs whose worker stopped heartbeating before
    *stale_before*) of *queue* for *owner*. Returns the claimed rows as they were
    before the claim (``resume_updates``: the updates still to apply, if any;
    ``input_json``, for a run's first start: the store it starts from), and the
    ids of runs ended instead: failed for having used up *max_attempts*, or cancelled
    because a cancel was asked before their worker died. Without *orphans*, queued
    runs only (one query less).

    Only runs of ``limits.flow_name`` are taken: a worker runs its own flow's runs,
    never another flow's that shares the queue. ``started_at`` becomes the claim's time
    for a run that never ran a step (until then it is when the run was queued)."""
    limited = limits.concurrency is not None or limits.rate is not None
    if _postgres(conn):
        # a claim need not wait for the disk: if the server loses it in a crash, the run
        # is queued again, and this worker's writes to it are fenced out (its token is
        # not the row's), so it stops; no step is recorded twice
        conn.execute(select(func.set_config("synchronous_commit", "off", True)))
        if limited:  # claims of this queue one at a time: the limits hold
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(queue))))
    room = limits.room
    in_queue = runs.c.queue == queue
    if limits.concurrency is not None:
        busy = conn.execute(
            select(func.count()).where(
                in_queue, runs.c.status == "running", runs.c.heartbeat_at >= stale_before
            )
        ).scalar()
        room = min(room, limits.concurrency - int(busy or 0))
    if limits.rate is not None:  # runs taken up within the period: first starts and
        # runs going on (resumed, handed back, of a dead worker) alike
        started = conn.execute(
            select(func.count()).where(in_queue, runs.c.claimed_at >= rate_since)
        ).scalar()
        room = min(room, limits.rate - int(started or 0))
    if room <= 0:
        return [], []
    mine = (
        (in_queue,)
        if limits.flow_name is None
        else (in_queue, runs.c.flow_name == limits.flow_name)
    )
    columns = (
        runs.c.run_id,
        runs.c.status,
        runs.c.owner,
        runs.c.heartbeat_at,
        runs.c.attempts,
        runs.c.resume_updates,
        runs.c.total_steps,
        runs.c.cancel_requested_at,
        runs.c.next_node,
        runs.c.forked_at_step,
    )
    waiting = (
        # with what a first start starts from, so the worker reads nothing more
        select(*columns, run_inputs.c.input_json)
        .select_from(runs.outerjoin(run_inputs, run_inputs.c.run_id == runs.c.run_id))
        .where(
            *mine,
            runs.c.status == "queued",
            (runs.c.not_before.is_(None)) | (runs.c.not_before <= now),
        )
        .order_by(runs.c.priority.desc(), runs.c.started_at, runs.c.run_id)
    )
    orphaned = (
        select(*columns)
        .where(*mine, runs.c.status == "running", runs.c.heartbeat_at < stale_before)
        .order_by(runs.c.heartbeat_at)
        .limit(room)
    )
    if _postgres(conn):
        waiting = waiting.with_for_update(skip_locked=True, of=runs)
        orphaned = orphaned.with_for_update(skip_locked=True)
    found = [dict(r) for r in conn.execute(orphaned).mappings()] if orphans else []
    if len(found) < room:
        found += [dict(r) for r in conn.execute(waiting.limit(room - len(found))).mappings()]
    taken, worn_out, cancelled = [], [], []
    for row in found:
        if row["cancel_requested_at"] is not None:  # asked to stop before its worker let go
            cancelled.append(row["run_id"])
        elif row["status"] != "running":
            taken.append(row)
        elif row["attempts"] >= max_attempts:
            worn_out.append(row["run_id"])
        else:
            taken.append(row)
    _end_unowned(conn, worn_out, now, "failed", (
        f"its worker stopped {max_attempts} times while running it (killed, or out of "
        "memory?); it is not retried again. Resume it by hand to try once more."))
    _end_unowned(conn, cancelled, now, "cancelled", "cancelled")
    for run_id in (*worn_out, *cancelled):
        notify(conn, DONE_CHANNEL, run_id)
    first: list[str] = []
    again: list[str] = []
    for row in taken:
        if _first_start(row):
            first.append(row["run_id"])
        else:  # it goes on from its checkpoints, not from its input
            row.pop("input_json", None)
            again.append(row["run_id"])
    claimed = {**claimed_run(owner, now), "attempts": runs.c.attempts + 1, "claimed_at": now}
    if first:  # started_at becomes the claim's time (until now, when it was queued)
        conn.execute(update(runs).where(runs.c.run_id.in_(first))
                     .values({**claimed, "started_at": now}))
    if again:
        conn.execute(update(runs).where(runs.c.run_id.in_(again)).values(claimed))
    for row in taken:
        row["resume_updates"] = pending_updates(conn, row["run_id"], row["resume_updates"])
    return taken, [*worn_out, *cancelled]


def _end_unowned(
    conn: Connection, run_ids: list[str], now: str, status: str, error_msg: str
) -> None:
    """End runs no worker runs any more (a claim found them used up, or asked to cancel
    before their worker died)."""
    if run_ids:
        conn.execute(
            update(runs)
            .where(runs.c.run_id.in_(run_ids))
            .values(status=status, completed_at=now, heartbeat_at=now, owner=None,
                    error_msg=error_msg)
        )


def _first_start(row: dict[str, Any]) -> bool:
    """A queued run that never ran a step (nor was resumed with updates)."""
    return row["status"] == "queued" and row["total_steps"] is None


def claimable(engine: Any, queue: str, flow_name: str | None, lease_seconds: float) -> bool:
    """Whether a claim of *queue* could find anything (a read: an idle worker does not
    take SQLite's write lock, nor the queue's lock, every time it looks)."""
    from pocoflow.persistence.rows import iso_ago, now_iso

    mine = [runs.c.queue == queue]
    if flow_name is not None:
        mine.append(runs.c.flow_name == flow_name)
    ready = (runs.c.status == "queued") & (
        runs.c.not_before.is_(None) | (runs.c.not_before <= now_iso())
    )
    stale = (runs.c.status == "running") & (runs.c.heartbeat_at < iso_ago(lease_seconds))
    with engine.connect() as conn:
        try:
            return (
                conn.execute(select(runs.c.run_id).where(*mine, ready | stale).limit(1)).first()
                is not None
            )
        finally:
            conn.rollback()


def hand_back(conn: Connection, run_id: str, owner: str, now: str) -> int:
    """A worker shutting down gives a run it stopped back to the queue (not counted as a
    failed attempt); only if it still owns the run, and the run did not end meanwhile
    (when the recorder recorded the stop, the run is queued already)."""
    done = conn.execute(
        update(runs)
        .where(
            runs.c.run_id == run_id, runs.c.owner == owner, runs.c.status.in_(("running", "queued"))
        )
        .values(
            status="queued",
            owner=None,
            heartbeat_at=now,
            completed_at=None,
            attempts=func.max(runs.c.attempts - 1, 0)
            if conn.dialect.name == "sqlite"
            else func.greatest(runs.c.attempts - 1, 0),
        )
    ).rowcount
    if done:
        row = conn.execute(select(runs.c.queue).where(runs.c.run_id == run_id)).scalar()
        notify(conn, QUEUE_CHANNEL, row or "default")
    return done


def fail_claimed(engine: Any, run_id: str, owner: str, error: BaseException) -> bool:
    """Fail a run a worker claimed but could not start (its checkpoint names a node the
    flow lacks, a value does not decode...), if the worker still owns it; True if so.
    Without this the run would stay ``running``, heartbeated by a worker not running it."""
    from pocoflow.persistence.connect import write_connection
    from pocoflow.persistence.rows import now_iso

    now = now_iso()
    with write_connection(engine) as conn, conn.begin():
        done = conn.execute(
            update(runs)
            .where(runs.c.run_id == run_id, runs.c.owner == owner, runs.c.status == "running")
            .values(
                status="failed",
                completed_at=now,
                heartbeat_at=now,
                error_msg=f"{type(error).__name__}: {error}",
            )
        ).rowcount
        if done:
            notify(conn, DONE_CHANNEL, run_id)
    return bool(done)


#: Runs a stopping worker is handing back: their end, when recorded, puts them back in
#: their queue instead of marking them cancelled (see :func:`handed_back_row`).
_handing_back: set[str] = set()


def hand_back_on_stop(run_id: str) -> None:
    """Record that the run *run_id* of this process is being stopped to be handed back."""
    _handing_back.add(run_id)


def forget_hand_back(run_id: str) -> None:
    _handing_back.discard(run_id)


def handed_back_row(run_id: str, steps: int, at: str) -> dict[str, Any] | None:
    """The run row to write at the recorded end of a cancelled run, if a stopping worker
    is handing it back: queued again, owner kept (the worker clears it afterwards), so a
    waiter never sees it cancelled. None for any other run."""
    if run_id not in _handing_back:
        return None
    return {
        "status": "queued",
        "total_steps": steps,
        "completed_at": None,
        "error_msg": None,
        "heartbeat_at": at,
    }


# ── retention ───────────────────────────────────────────────────────────────


def old_runs(conn: Connection, before: str, statuses: tuple[str, ...], limit: int) -> list[str]:
    """Top-level runs that ended with one of *statuses* before *before* (oldest first),
    locked until the transaction ends (PostgreSQL; SQLite's write transaction holds the
    whole file): a run resumed or claimed meanwhile is skipped, and one that a resume
    would take waits for the deletion, then finds no run, so a run in flight is never
    deleted."""
    query = (
        select(runs.c.run_id)
        .where(
            runs.c.parent_run_id.is_(None),
            runs.c.status.in_(statuses),
            func.coalesce(runs.c.completed_at, runs.c.started_at) < before,
        )
        .order_by(runs.c.started_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(conn.execute(query).scalars())


def delete_runs(conn: Connection, run_ids: list[str]) -> dict[str, int]:
    """Delete runs, their nested flows' runs, and all their events, checkpoints and
    inputs; the rows deleted per table."""
    ids = list(run_ids)
    parents = ids
    while parents:  # nested flows' runs, level by level (by parent, not by id prefix)
        parents = list(
            conn.execute(select(runs.c.run_id).where(runs.c.parent_run_id.in_(parents))).scalars()
        )
        ids += parents
    return {
        "events": conn.execute(delete(events).where(events.c.run_id.in_(ids))).rowcount,
        "checkpoints": conn.execute(
            delete(checkpoints).where(checkpoints.c.run_id.in_(ids))
        ).rowcount,
        "inputs": conn.execute(delete(run_inputs).where(run_inputs.c.run_id.in_(ids))).rowcount,
        "runs": conn.execute(delete(runs).where(runs.c.run_id.in_(ids))).rowcount,
    }


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ── waking up ───────────────────────────────────────────────────────────────


class Listener:
    """Waits for a PostgreSQL NOTIFY on one channel, on a connection of its own (call
    :meth:`wait` from a worker thread). On SQLite it has nothing to listen to: :meth:`wait`
    sleeps out the timeout, and callers poll.

    Call :meth:`listen` before reading what a notification would announce, so that none
    is missed in between. :meth:`close` may come from another thread while a
    :meth:`wait` is going on (its caller was cancelled): the waiting thread then closes
    the connection as it returns, so a connection is never closed under a thread using
    it."""

    def __init__(self, engine: Any, channel: str, payload: str | None = None) -> None:
        self._engine = engine
        self._channel = channel
        self._payload = payload
        self._raw: Any = None
        self._lock = threading.Lock()
        self._waiting = False
        self._closed = False
        self._lost = False  # the last wait lost its connection (said once)

    @property
    def listening(self) -> bool:
        return bool(self._engine.dialect.name == "postgresql")

    def listen(self) -> None:
        """Start listening now (blocking: a round trip to the server)."""
        if self.listening:
            self._enter()
            try:
                self._connection()
            finally:
                self._leave()

    def wait(self, timeout: float) -> bool:
        """Block until a notification (with our payload, if one was given) or *timeout*
        seconds; True if one came."""
        if not self.listening:
            time.sleep(timeout)
            return False
        if not self._enter():
            return False
        try:
            connection = self._connection()
            for note in connection.notifies(timeout=timeout):
                if self._payload is None or note.payload == self._payload:
                    self._lost = False
                    return True
            self._lost = False
            return False
        except Exception as exc:  # the server went away (restart, failover, a reaper)
            self._drop()  # the next wait connects (and listens) again
            if not self._lost:
                self._lost = True
                shown = error_text(explain(exc, self._engine.url)).splitlines()
                _log.warning(
                    "Lost the connection listening on %s (%s); polling until it is back",
                    self._channel,
                    shown[0] if shown else type(exc).__name__,
                )
            time.sleep(timeout)  # not a busy loop while the server is down
            return True  # a notification may have been missed meanwhile: look now
        finally:
            self._leave()

    def _enter(self) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._waiting = True
            return True

    def _leave(self) -> None:
        with self._lock:
            self._waiting = False
            if self._closed:
                self._drop()

    def _connection(self) -> Any:
        raw = self._raw
        if raw is None or raw.driver_connection.closed:
            raw = self._raw = self._engine.raw_connection()
            connection = raw.driver_connection
            connection.autocommit = True
            from psycopg import sql as pg_sql

            connection.execute(pg_sql.SQL("LISTEN {}").format(pg_sql.Identifier(self._channel)))
        return raw.driver_connection

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if not self._waiting:
                self._drop()

    def _drop(self) -> None:
        """Let go of the connection: one that failed, or one we are done with."""
        raw, self._raw = self._raw, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.invalidate()

