"""Committing step writes: one transaction per step, group-committed across runs.

``commit`` may wait (call it from a worker thread). A thread that finds its
lane's lock taken leaves its write in the lane's queue, and the holder commits
it with its own: many concurrent runs share few transactions. SQLite has one
lane (it has one writer anyway) plus ``commit_now``, the fast path for the
event loop thread, which commits only if that cannot block. PostgreSQL has
several lanes, each with its own connection, which writes a whole
transaction as one pipeline (about one network round trip).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from pocoflow.logging import get_logger
from pocoflow.persistence import sql

_log = get_logger("db")

#: PostgreSQL connections writing at once (each group-commits its queue). More lanes
#: measured slower where client and server share two CPUs; raise it for a remote server.
POSTGRES_LANES = 1


class _Ticket:
    __slots__ = ("done", "error", "write")

    def __init__(self, write: sql.StepWrite) -> None:
        self.write = write
        self.done = False
        self.error: BaseException | None = None


class _Lane:
    """One writer: a lock, a queue of waiting writes, and (PostgreSQL) a connection."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self.lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self.queue: list[_Ticket] = []
        self._raw: Any = None

    def commit(self, write: sql.StepWrite) -> None:
        ticket = _Ticket(write)
        with self._queue_lock:
            self.queue.append(ticket)
        with self.lock:
            if not ticket.done:
                with self._queue_lock:
                    batch, self.queue = self.queue, []
                self._commit_batch(batch)
        if ticket.error is not None:
            raise ticket.error

    def _commit_batch(self, batch: list[_Ticket]) -> None:
        try:
            self._transaction([t.write for t in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:  # one bad write must not sink the others: retry them one by one
                for ticket in batch:
                    try:
                        self._transaction([ticket.write])
                    except Exception as one_error:
                        ticket.error = one_error
        finally:
            for ticket in batch:
                ticket.done = True

    def _transaction(self, writes: Sequence[sql.StepWrite]) -> None:
        writer = self._writer
        statements = writer.statements
        if writer.sqlite:  # a pooled connection whose BEGIN IMMEDIATE waits for the lock
            with sql.write_connection(writer.engine) as conn, conn.begin():
                cursor = conn.connection.driver_connection.cursor()
                try:
                    sql.apply_all(cursor, statements, writes)
                finally:
                    cursor.close()
        else:
            connection = self._connection()
            try:
                with connection.pipeline(), connection.cursor() as cursor:
                    sql.apply_all(cursor, statements, writes)
                connection.commit()
            except BaseException:
                if connection.broken:
                    self.close()
                else:
                    connection.rollback()
                raise
        writer.commits += 1

    def _connection(self) -> Any:
        raw = self._raw
        if raw is None or raw.driver_connection.closed or raw.driver_connection.broken:
            self.close()
            raw = self._raw = self._writer.engine.raw_connection()
        return raw.driver_connection

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.invalidate()
            except Exception:
                _log.debug("Closing a writer connection failed", exc_info=True)


class Writer:
    """Commits the step writes of every run of one database in this process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = sql.is_sqlite(engine)
        self.statements = sql.WriteStatements(engine)
        self.commits = 0  # transactions so far (the WAL checkpointer watches it)
        self._lanes = [_Lane(self) for _ in range(1 if self.sqlite else POSTGRES_LANES)]
        self._next = 0
        self._now: Any = None  # SQLite fast path: its own connection, busy_timeout 0
        if self.sqlite:
            self._now = engine.raw_connection()
            self._now.driver_connection.execute(sql.SQLITE_NO_WAIT)

    def commit(self, write: sql.StepWrite) -> None:
        """Commit *write*, maybe together with others; may wait for locks."""
        lanes = self._lanes
        lane = next((lane for lane in lanes if not lane.lock.locked()), None)
        if lane is None:  # every lane busy: queue behind one of them, in turn
            self._next = (self._next + 1) % len(lanes)
            lane = lanes[self._next]
        lane.commit(write)

    def commit_now(self, write: sql.StepWrite) -> bool:
        """SQLite only: commit on this thread if no writer (here or elsewhere) holds the
        lock; return False, having written nothing, if one does."""
        lane = self._lanes[0]
        if self._now is None or not lane.lock.acquire(blocking=False):
            return False
        try:
            cursor = self._now.driver_connection.cursor()
            try:
                cursor.execute(sql.SQLITE_BEGIN_WRITE)
            except Exception as exc:  # another process holds the write lock: don't wait here
                if "locked" in str(exc) or "busy" in str(exc):
                    return False
                raise
            try:
                write.apply(cursor, self.statements)
            except BaseException:
                cursor.execute(sql.SQLITE_ROLLBACK)
                raise
            cursor.execute(sql.SQLITE_COMMIT)
            self.commits += 1
            return True
        finally:
            lane.lock.release()

    def close(self) -> None:
        for lane in self._lanes:
            with lane.lock:
                lane.close()
        with self._lanes[0].lock:
            if self._now is not None:
                self._now.close()
                self._now = None
