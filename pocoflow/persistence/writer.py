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

from sqlalchemy import Engine, bindparam, update

from pocoflow.logging import get_logger
from pocoflow.persistence.connect import (
    SQLITE_BEGIN_WRITE,
    SQLITE_COMMIT,
    SQLITE_NO_WAIT,
    SQLITE_ROLLBACK,
    is_busy,
    is_sqlite,
    write_connection,
)
from pocoflow.persistence.models import checkpoints, events, run_inputs, runs
from pocoflow.persistence.rows import CHECKPOINT_COLUMNS, EVENT_COLUMNS, StepWrite

_log = get_logger("db")

#: PostgreSQL connections writing at once (each group-commits its queue). More lanes
#: measured slower where client and server share two CPUs; raise it for a remote server.
POSTGRES_LANES = 1


class WriteStatements:
    """The step-write statements, built as Core constructs and compiled once per dialect.

    A step runs them on the DBAPI cursor: the SQL is SQLAlchemy's, the
    per-statement overhead is the driver's alone (a few µs instead of tens).
    """

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        if dialect.name == "sqlite":  # the stdlib driver takes :name parameters and dicts
            from sqlalchemy.dialects import sqlite

            dialect = sqlite.dialect(paramstyle="named")
        self._dialect = dialect
        if engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert
        self._upsert = upsert
        self.insert_event = self._compile(events.insert(), EVENT_COLUMNS)
        self.insert_checkpoint = self._compile(checkpoints.insert(), CHECKPOINT_COLUMNS)
        columns = ("run_id", "graph_json", "input_json")
        self.insert_input = self._compile(
            upsert(run_inputs).values({c: bindparam(c) for c in columns})
            .on_conflict_do_nothing(index_elements=["run_id"]))
        self._inserts: dict[tuple[str, ...], str] = {}
        self._updates: dict[tuple[str, ...], str] = {}

    def _compile(self, statement: Any, columns: Sequence[str] | None = None) -> str:
        compiled = statement.compile(dialect=self._dialect,
                                     column_keys=list(columns) if columns else None)
        return str(compiled)

    def upsert_run(self, columns: tuple[str, ...]) -> str:
        """Insert a run, or (a nested flow run again after a resume) reset its row."""
        sql_text = self._inserts.get(columns)
        if sql_text is None:
            insert = self._upsert(runs).values({c: bindparam(c) for c in columns})
            statement = insert.on_conflict_do_update(
                index_elements=["run_id"],
                set_={c: insert.excluded[c] for c in columns if c != "run_id"})
            sql_text = self._inserts[columns] = self._compile(statement)
        return sql_text

    def update_run(self, columns: tuple[str, ...]) -> str:
        sql_text = self._updates.get(columns)
        if sql_text is None:
            statement = (update(runs).where(runs.c.run_id == bindparam("pk_run_id"))
                         .values({c: bindparam(c) for c in columns}))
            sql_text = self._updates[columns] = self._compile(statement)
        return sql_text


def apply_one(cursor: Any, statements: WriteStatements, write: StepWrite) -> None:
    """Run one write's statements on a DBAPI cursor inside an open transaction (the
    one-write case of :func:`apply_all`, kept direct: it is every step's path)."""
    run_id = write.run_id
    if write.run_insert is not None:
        cursor.execute(statements.upsert_run(tuple(write.run_insert)), write.run_insert)
        if write.run_input is not None:
            cursor.execute(statements.insert_input, {"run_id": run_id, **write.run_input})
    if write.event_rows:
        cursor.executemany(statements.insert_event, write.event_rows)
    if write.checkpoint is not None:
        cursor.execute(statements.insert_checkpoint, write.checkpoint)
    if write.run_update:
        cursor.execute(statements.update_run(tuple(write.run_update)),
                       {**write.run_update, "pk_run_id": run_id})


def apply_all(cursor: Any, statements: WriteStatements, writes: Sequence[StepWrite]) -> None:
    """Run the statements of *writes* (of different runs) in one transaction, one
    ``executemany`` per statement: a group commit costs a few statements, not a few per run.

    Runs first, then what refers to them. A run has at most one write in flight, so
    grouping by statement keeps each run's order.
    """
    if len(writes) == 1:
        apply_one(cursor, statements, writes[0])
        return
    inserts: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    inputs, event_rows, checkpoint_rows = [], [], []
    for write in writes:
        if write.run_insert is not None:
            inserts.setdefault(tuple(write.run_insert), []).append(write.run_insert)
            if write.run_input is not None:
                inputs.append({"run_id": write.run_id, **write.run_input})
        event_rows.extend(write.event_rows)
        if write.checkpoint is not None:
            checkpoint_rows.append(write.checkpoint)
        if write.run_update:
            updates.setdefault(tuple(write.run_update), []).append(
                {**write.run_update, "pk_run_id": write.run_id})
    for columns, rows in inserts.items():
        _execute(cursor, statements.upsert_run(columns), rows)
    _execute(cursor, statements.insert_input, inputs)
    _execute(cursor, statements.insert_event, event_rows)
    _execute(cursor, statements.insert_checkpoint, checkpoint_rows)
    for columns, rows in updates.items():
        _execute(cursor, statements.update_run(columns), rows)


def _execute(cursor: Any, statement: str, rows: list[dict[str, Any]]) -> None:
    if len(rows) == 1:
        cursor.execute(statement, rows[0])
    elif rows:
        cursor.executemany(statement, rows)

class _Ticket:
    __slots__ = ("done", "error", "write")

    def __init__(self, write: StepWrite) -> None:
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

    def commit(self, write: StepWrite) -> None:
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

    def _transaction(self, writes: Sequence[StepWrite]) -> None:
        writer = self._writer
        statements = writer.statements
        if writer.sqlite:  # a pooled connection whose BEGIN IMMEDIATE waits for the lock
            with write_connection(writer.engine) as conn, conn.begin():
                cursor = conn.connection.driver_connection.cursor()
                try:
                    apply_all(cursor, statements, writes)
                finally:
                    cursor.close()
        else:
            connection = self._connection()
            try:
                with connection.pipeline(), connection.cursor() as cursor:
                    apply_all(cursor, statements, writes)
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
        self.sqlite = is_sqlite(engine)
        self.statements = WriteStatements(engine)
        self.commits = 0  # transactions so far (the WAL checkpointer watches it)
        self._lanes = [_Lane(self) for _ in range(1 if self.sqlite else POSTGRES_LANES)]
        self._next = 0
        self._now: Any = None  # SQLite fast path: its own connection, busy_timeout 0
        if self.sqlite:
            self._now = engine.raw_connection()
            self._now.driver_connection.execute(SQLITE_NO_WAIT)

    def commit(self, write: StepWrite) -> None:
        """Commit *write*, maybe together with others; may wait for locks."""
        lanes = self._lanes
        lane = next((lane for lane in lanes if not lane.lock.locked()), None)
        if lane is None:  # every lane busy: queue behind one of them, in turn
            self._next = (self._next + 1) % len(lanes)
            lane = lanes[self._next]
        lane.commit(write)

    def commit_now(self, write: StepWrite) -> bool:
        """SQLite only: commit on this thread if no writer (here or elsewhere) holds the
        lock; return False, having written nothing, if one does."""
        lane = self._lanes[0]
        if self._now is None or not lane.lock.acquire(blocking=False):
            return False
        try:
            cursor = self._now.driver_connection.cursor()
            try:
                cursor.execute(SQLITE_BEGIN_WRITE)
            except Exception as exc:  # another process holds the write lock: don't wait here
                if is_busy(exc):
                    return False
                raise
            try:
                apply_one(cursor, self.statements, write)
            except BaseException:
                cursor.execute(SQLITE_ROLLBACK)
                raise
            cursor.execute(SQLITE_COMMIT)
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
