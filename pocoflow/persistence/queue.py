"""The queue: queued runs in ``pf_runs``, claimed by workers, PostgreSQL as the broker.

A queued run is a ``pf_runs`` row with status ``queued`` and a ``queue``
name. Workers claim the highest priority, oldest runs whose ``not_before``
has come (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so workers never wait on
each other's rows; SQLite's write lock makes its claims one at a time), and
in the same transaction take up runs whose worker stopped heartbeating. A
global per-queue concurrency limit and a rate limit are checked under a lock
on the queue (a PostgreSQL advisory lock; SQLite's write lock), so they hold
across every worker. On PostgreSQL each submit and each run's end sends a
``NOTIFY``, so idle workers and waiting callers wake at once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.engine import Connection

from pocoflow.persistence.models import IN_FLIGHT, checkpoints, events, run_inputs, runs

#: The PostgreSQL channels: a run was queued (payload: the queue), a run ended (its id).
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

def submit(conn: Connection, row: dict[str, Any], inputs: dict[str, Any]) -> str:
    """Insert a queued run and its input; return its run_id, or, when its ``dedup_key``
    is held by a run still queued or running, that run's id (nothing inserted)."""
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    statement = insert(runs).values(row)
    if row.get("dedup_key") is not None:
        statement = statement.on_conflict_do_nothing(index_elements=["dedup_key"],
                                                     index_where=text(IN_FLIGHT))
    if conn.execute(statement).rowcount == 0:
        held = select(runs.c.run_id).where(runs.c.dedup_key == row["dedup_key"],
                                           runs.c.status.in_(("queued", "running")))
        existing = conn.execute(held).scalar()
        if existing is not None:
            return str(existing)
        conn.execute(insert(runs).values(row))  # the holder ended meanwhile
    conn.execute(run_inputs.insert().values(run_id=row["run_id"], **inputs))
    notify(conn, QUEUE_CHANNEL, row["queue"])
    return str(row["run_id"])


def requeue(conn: Connection, run: dict[str, Any], values: dict[str, Any]) -> int:
    """Put a stopped run back in its queue (a resume for the workers), if its row is still
    as read; 1 if it was."""
    def same(column: Any, value: Any) -> Any:
        return column.is_(None) if value is None else column == value

    done = conn.execute(
        update(runs).where(runs.c.run_id == run["run_id"], runs.c.status == run["status"],
                           same(runs.c.owner, run.get("owner")),
                           same(runs.c.heartbeat_at, run.get("heartbeat_at")))
        .values(values)).rowcount
    if done:
        notify(conn, QUEUE_CHANNEL, values.get("queue") or run.get("queue") or "default")
    return done


# ── claiming ────────────────────────────────────────────────────────────────

@dataclass(frozen=True)
class Limits:
    """What one claim may take: *room* runs for this worker, within the queue's
    global concurrency and its rate (runs started per *per_seconds*)."""

    room: int
    concurrency: int | None = None
    rate: int | None = None
    per_seconds: float = 1.0


def claim(conn: Connection, queue: str, limits: Limits, *, owner: str, now: str,
          stale_before: str, rate_since: str, max_attempts: int) -> tuple[list[dict[str, Any]],
                                                                      list[str]]:
    """Claim queued runs (and runs whose worker stopped heartbeating before
    *stale_before*) of *queue* for *owner*. Returns the claimed rows as they were
    before the claim, and the ids of runs failed for having used up *max_attempts*."""
    limited = limits.concurrency is not None or limits.rate is not None
    if limited and _postgres(conn):  # claims of this queue one at a time: the limits hold
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(queue))))
    room = limits.room
    in_queue = runs.c.queue == queue
    if limits.concurrency is not None:
        busy = conn.execute(select(func.count()).where(
            in_queue, runs.c.status == "running", runs.c.heartbeat_at >= stale_before)).scalar()
        room = min(room, limits.concurrency - int(busy or 0))
    if limits.rate is not None:
        started = conn.execute(select(func.count()).where(
            in_queue, runs.c.status != "queued", runs.c.started_at >= rate_since)).scalar()
        room = min(room, limits.rate - int(started or 0))
    if room <= 0:
        return [], []
    columns = (runs.c.run_id, runs.c.status, runs.c.owner, runs.c.heartbeat_at,
               runs.c.attempts, runs.c.resume_updates)
    waiting = (select(*columns)
               .where(in_queue, runs.c.status == "queued",
                      or_(runs.c.not_before.is_(None), runs.c.not_before <= now))
               .order_by(runs.c.priority.desc(), runs.c.started_at, runs.c.run_id)
               .limit(room))
    orphaned = (select(*columns)
                .where(in_queue, runs.c.status == "running", runs.c.heartbeat_at < stale_before)
                .order_by(runs.c.heartbeat_at).limit(room))
    if _postgres(conn):
        waiting = waiting.with_for_update(skip_locked=True)
        orphaned = orphaned.with_for_update(skip_locked=True)
    found = [dict(r) for r in conn.execute(orphaned).mappings()]
    found += [dict(r) for r in conn.execute(waiting.limit(room - len(found))).mappings()] \
        if len(found) < room else []
    taken, worn_out = [], []
    for row in found:
        if row["status"] == "running" and row["attempts"] >= max_attempts:
            worn_out.append(row["run_id"])
        else:
            taken.append(row)
    if worn_out:
        conn.execute(update(runs).where(runs.c.run_id.in_(worn_out)).values(
            status="failed", completed_at=now, owner=None, error_msg=(
                f"its worker stopped {max_attempts} times while running it (killed, or "
                "out of memory?); it is not retried again. Resume it by hand to try once "
                "more.")))
        for run_id in worn_out:
            notify(conn, DONE_CHANNEL, run_id)
    for row in taken:
        values: dict[str, Any] = {"status": "running", "owner": owner, "heartbeat_at": now,
                                  "attempts": runs.c.attempts + 1, "resume_updates": None,
                                  "cancel_requested_at": None}
        if row["status"] == "queued":
            values["started_at"] = now
        conn.execute(update(runs).where(runs.c.run_id == row["run_id"]).values(values))
    return taken, worn_out


def hand_back(conn: Connection, run_id: str, owner: str, now: str) -> int:
    """A worker shutting down gives a run it stopped back to the queue (not counted as a
    failed attempt); only if it still owns the run."""
    done = conn.execute(
        update(runs).where(runs.c.run_id == run_id, runs.c.owner == owner)
        .values(status="queued", owner=None, heartbeat_at=now, completed_at=None,
                attempts=func.max(runs.c.attempts - 1, 0) if conn.dialect.name == "sqlite"
                else func.greatest(runs.c.attempts - 1, 0))).rowcount
    if done:
        row = conn.execute(select(runs.c.queue).where(runs.c.run_id == run_id)).scalar()
        notify(conn, QUEUE_CHANNEL, row or "default")
    return done


# ── retention ───────────────────────────────────────────────────────────────

def old_runs(conn: Connection, before: str, statuses: tuple[str, ...],
             limit: int) -> list[str]:
    """Top-level runs that ended with one of *statuses* before *before* (oldest first)."""
    query = (select(runs.c.run_id)
             .where(runs.c.parent_run_id.is_(None), runs.c.status.in_(statuses),
                    func.coalesce(runs.c.completed_at, runs.c.started_at) < before)
             .order_by(runs.c.started_at).limit(limit))
    return list(conn.execute(query).scalars())


def delete_runs(conn: Connection, run_ids: list[str]) -> dict[str, int]:
    """Delete runs, their nested flows' runs, and all their events, checkpoints and
    inputs; the rows deleted per table."""
    family = or_(runs.c.run_id.in_(run_ids),
                 *[runs.c.run_id.like(f"{_escaped(r)}.%", escape="\\") for r in run_ids])
    ids = list(conn.execute(select(runs.c.run_id).where(family)).scalars())
    counts = {
        "events": conn.execute(delete(events).where(events.c.run_id.in_(ids))).rowcount,
        "checkpoints": conn.execute(
            delete(checkpoints).where(checkpoints.c.run_id.in_(ids))).rowcount,
        "inputs": conn.execute(delete(run_inputs).where(run_inputs.c.run_id.in_(ids))).rowcount,
        "runs": conn.execute(delete(runs).where(runs.c.run_id.in_(ids))).rowcount,
    }
    return counts


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")



# ── waking up ───────────────────────────────────────────────────────────────

class Listener:
    """Waits for a PostgreSQL NOTIFY on one channel, on a connection of its own (call
    :meth:`wait` from a worker thread). On SQLite it has nothing to listen to: :meth:`wait`
    sleeps out the timeout, and callers poll."""

    def __init__(self, engine: Any, channel: str, payload: str | None = None) -> None:
        self._engine = engine
        self._channel = channel
        self._payload = payload
        self._raw: Any = None

    @property
    def listening(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    def wait(self, timeout: float) -> bool:
        """Block until a notification (with our payload, if one was given) or *timeout*
        seconds; True if one came."""
        if not self.listening:
            import time

            time.sleep(timeout)
            return False
        connection = self._connection()
        for note in connection.notifies(timeout=timeout):
            if self._payload is None or note.payload == self._payload:
                return True
        return False

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
        raw, self._raw = self._raw, None
        if raw is not None:
            with contextlib.suppress(Exception):  # a connection we are done with
                raw.invalidate()
