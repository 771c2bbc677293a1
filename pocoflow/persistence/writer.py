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

from sqlalchemy import Engine, bindparam, exists, select, update

from pocoflow.errors import RunExistsError, RunTakenOverError
from pocoflow.logging import get_logger
from pocoflow.persistence.connect import (
    SQLITE_BEGIN_WRITE,
    SQLITE_COMMIT,
    SQLITE_NO_WAIT,
    SQLITE_ROLLBACK,
    is_busy,
    is_sqlite,
    safe_url,
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
    Every statement but a new run's insert is fenced: it writes only where the
    top-level run (``fence_run``) is still owned by ``fence_owner``.
    """

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        if dialect.name == "sqlite":  # the stdlib driver takes :name parameters and dicts
            from sqlalchemy.dialects import sqlite

            dialect = sqlite.dialect(paramstyle="named")
        self._dialect = dialect
        if engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        self._insert = dialect_insert
        fence = runs.alias("fence")
        self._owned = exists().where(fence.c.run_id == bindparam("fence_run"),
                                     fence.c.owner == bindparam("fence_owner"))
        self.insert_event = self._compile(self._fenced_insert(events, EVENT_COLUMNS))
        self.insert_checkpoint = self._compile(
            self._fenced_insert(checkpoints, CHECKPOINT_COLUMNS))
        columns = ("run_id", "graph_json", "input_json")
        self.insert_input = self._compile(
            dialect_insert(run_inputs).values({c: bindparam(c) for c in columns})
            .on_conflict_do_nothing(index_elements=["run_id"]))
        self._new_runs: dict[tuple[str, ...], str] = {}
        self._child_runs: dict[tuple[str, ...], str] = {}
        self._updates: dict[tuple[str, ...], str] = {}

    def _compile(self, statement: Any) -> str:
        return str(statement.compile(dialect=self._dialect))

    def _fenced_insert(self, table: Any, columns: Sequence[str]) -> Any:
        rows = select(*[bindparam(c) for c in columns]).where(self._owned)
        return self._insert(table).from_select(list(columns), rows)

    def new_run(self, columns: tuple[str, ...]) -> str:
        """Insert a new top-level run (an IntegrityError if its run_id exists)."""
        sql_text = self._new_runs.get(columns)
        if sql_text is None:
            statement = runs.insert().values({c: bindparam(c) for c in columns})
            sql_text = self._new_runs[columns] = self._compile(statement)
        return sql_text

    def child_run(self, columns: tuple[str, ...]) -> str:
        """Insert a nested flow's run, or (run again after a resume) reset its row."""
        sql_text = self._child_runs.get(columns)
        if sql_text is None:
            insert = self._fenced_insert(runs, columns)
            statement = insert.on_conflict_do_update(
                index_elements=["run_id"],
                set_={c: insert.excluded[c] for c in columns if c != "run_id"})
            sql_text = self._child_runs[columns] = self._compile(statement)
        return sql_text

    def update_run(self, columns: tuple[str, ...]) -> str:
        sql_text = self._updates.get(columns)
        if sql_text is None:
            statement = (update(runs)
                         .where(runs.c.run_id == bindparam("pk_run_id"), self._owned)
                         .values({c: bindparam(c) for c in columns}))
            sql_text = self._updates[columns] = self._compile(statement)
        return sql_text


def _fenced(row: dict[str, Any], fence: tuple[str, str] | None) -> dict[str, Any]:
    run, owner = fence if fence is not None else (None, None)
    return {**row, "fence_run": run, "fence_owner": owner}


def apply_all(conn: Any, statements: WriteStatements, writes: Sequence[StepWrite],
              ) -> list[Any]:
    """Run the statements of *writes* (of different runs) in one transaction.

    Each write's run row (insert or update) goes through a cursor of its own, whose
    rowcount, read once the statements are sent, says whether the write still owned
    its run; those cursors are returned in the order of *writes*. Events and
    checkpoints go as one ``executemany`` per statement, so a group commit costs a
    few statements, not a few per run. A run has at most one write in flight, so
    grouping by statement keeps each run's order.
    """
    proofs: list[Any] = []
    inputs: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    checkpoint_rows: list[dict[str, Any]] = []
    for write in writes:  # run rows first: events and checkpoints refer to them
        proof = None
        if write.run_insert is not None:
            proof = conn.cursor()
            if write.new_run:
                proof.execute(statements.new_run(tuple(write.run_insert)), write.run_insert)
            else:
                proof.execute(statements.child_run(tuple(write.run_insert)),
                              _fenced(write.run_insert, write.fence))
            if write.run_input is not None:
                inputs.append({"run_id": write.run_id, **write.run_input})
        proofs.append(proof)
        fence = write.fence
        event_rows.extend(_fenced(row, fence) for row in write.event_rows)
        if write.checkpoint is not None:
            checkpoint_rows.append(_fenced(write.checkpoint, fence))
    cursor = conn.cursor()
    _execute(cursor, statements.insert_input, inputs)
    _execute(cursor, statements.insert_event, event_rows)
    _execute(cursor, statements.insert_checkpoint, checkpoint_rows)
    for index, write in enumerate(writes):
        if write.run_update:
            proofs[index] = conn.cursor()
            proofs[index].execute(
                statements.update_run(tuple(write.run_update)),
                _fenced({**write.run_update, "pk_run_id": write.run_id}, write.fence))
    return proofs


def owned(proof: Any) -> bool:
    """Whether a write's run row was written (its run still belonged to the writer)."""
    return proof is None or proof.rowcount != 0


def _execute(cursor: Any, statement: str, rows: list[dict[str, Any]]) -> None:
    if len(rows) == 1:
        cursor.execute(statement, rows[0])
    elif rows:
        cursor.executemany(statement, rows)


def refused(write: StepWrite, error: BaseException, url: str) -> BaseException:
    """The error to raise for a failed write: a new run on a run_id that exists is a
    RunExistsError (the transaction wrote nothing), anything else stays as it is."""
    if write.new_run and type(error).__name__ in ("IntegrityError", "UniqueViolation"):
        return RunExistsError(
            f"Run '{write.run_id}' already exists in {url}; a new run needs a new run_id "
            "(leave Flow(run_id=...) unset for a fresh one each run), and a stopped run "
            "goes on with flow.resume(run_id). Nothing was written."
        )
    return error


def taken_over(write: StepWrite) -> RunTakenOverError:
    run_id = write.fence[0] if write.fence is not None else write.run_id
    return RunTakenOverError(
        f"Run '{run_id}' was taken over by another process (this one stalled longer than "
        "its lease, and a resume claimed the run); this process wrote nothing more. See "
        "db.get_run(run_id) for where the run stands now."
    )


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
            kept = self._transaction([t.write for t in batch])
            for ticket, still_owned in zip(batch, kept, strict=True):
                if not still_owned:
                    ticket.error = taken_over(ticket.write)
        except Exception as exc:
            url = self._writer.safe_url
            if len(batch) == 1:
                batch[0].error = refused(batch[0].write, exc, url)
            else:  # one bad write must not sink the others: retry them one by one
                for ticket in batch:
                    try:
                        if not self._transaction([ticket.write])[0]:
                            ticket.error = taken_over(ticket.write)
                    except Exception as one_error:
                        ticket.error = refused(ticket.write, one_error, url)
        finally:
            for ticket in batch:
                ticket.done = True

    def _transaction(self, writes: Sequence[StepWrite]) -> list[bool]:
        """Commit *writes* together; per write, whether it still owned its run."""
        writer = self._writer
        statements = writer.statements
        if writer.sqlite:  # a pooled connection whose BEGIN IMMEDIATE waits for the lock
            with write_connection(writer.engine) as conn, conn.begin():
                proofs = apply_all(conn.connection.driver_connection, statements, writes)
                kept = [owned(proof) for proof in proofs]
        else:
            connection = self._connection()
            try:
                with connection.pipeline():
                    proofs = apply_all(connection, statements, writes)
                kept = [owned(proof) for proof in proofs]
                connection.commit()
            except BaseException:
                if connection.broken:
                    self.close()
                else:
                    connection.rollback()
                raise
        writer.commits += 1
        return kept

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
        self.safe_url = safe_url(engine.url)
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
        """Commit *write*, maybe together with others; may wait for locks.
        RunTakenOverError if its run has another owner now (nothing of it was written)."""
        lanes = self._lanes
        lane = next((lane for lane in lanes if not lane.lock.locked()), None)
        if lane is None:  # every lane busy: queue behind one of them, in turn
            self._next = (self._next + 1) % len(lanes)
            lane = lanes[self._next]
        lane.commit(write)

    def commit_now(self, write: StepWrite) -> bool:
        """SQLite only: commit on this thread if no writer (here or elsewhere) holds the
        lock; return False, having written nothing, if one does. RunTakenOverError if
        the write's run has another owner now (nothing of it was written)."""
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
            connection = self._now.driver_connection
            try:
                [proof] = apply_all(connection, self.statements, [write])
                still_owned = owned(proof)
            except BaseException as exc:
                cursor.execute(SQLITE_ROLLBACK)
                error = refused(write, exc, self.safe_url)
                if error is exc:
                    raise
                raise error from None
            cursor.execute(SQLITE_COMMIT)
            self.commits += 1
            if not still_owned:
                raise taken_over(write)
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
