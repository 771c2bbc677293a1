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
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, bindparam, case, exists, func, select, update
from sqlalchemy.engine import URL

from pocoflow.errors import PersistenceError, RunExistsError, RunTakenOverError
from pocoflow.logging import get_logger
from pocoflow.persistence.connect import (
    SQLITE_BEGIN_WRITE,
    SQLITE_COMMIT,
    SQLITE_NO_WAIT,
    SQLITE_ROLLBACK,
    WAL_FOLD_BUSY_MS,
    WAL_LIMIT_BYTES,
    explain,
    is_busy,
    is_memory,
    is_sqlite,
    out_of_space,
    safe_url,
    wal_checkpoint,
    wal_size,
    write_connection,
)
from pocoflow.persistence.models import checkpoints, events, run_inputs, runs
from pocoflow.persistence.queue import DONE_CHANNEL
from pocoflow.persistence.rows import CHECKPOINT_COLUMNS, EVENT_COLUMNS, StepWrite

_log = get_logger("db")

#: PostgreSQL connections writing at once (each group-commits its queue). More lanes
#: measured slower where client and server share two CPUs; raise it for a remote server.
POSTGRES_LANES = 1
#: PostgreSQL: a writer connection idle longer than this is pinged before it commits.
IDLE_PING_S = 1.0
#: SQLite: the WAL's size is looked at after every this many commits (a stat call).
WAL_CHECK_EVERY = 8


class WriteStatements:
    """The step-write statements, built as Core constructs and compiled once per dialect.

    A step runs them on the DBAPI cursor: the SQL is SQLAlchemy's, the
    per-statement overhead is the driver's alone (a few µs instead of tens).
    Every statement but a new run's insert is fenced: it writes only while the
    top-level run (``fence_run``) is owned by ``fence_owner``. On SQLite, which
    holds its write lock for the whole transaction, the run row's fenced update
    goes first and the other rows of a fenced-out write are simply not sent; on
    PostgreSQL, whose statements go out as one pipeline, each insert carries the
    fence itself (``INSERT ... SELECT ... WHERE EXISTS``).
    """

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        self.sqlite = dialect.name == "sqlite"
        if self.sqlite:  # the stdlib driver takes :name parameters and dicts
            from sqlalchemy.dialects import sqlite
            from sqlalchemy.dialects.sqlite import insert as dialect_insert

            dialect = sqlite.dialect(paramstyle="named")
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        self._dialect = dialect
        self._insert = dialect_insert
        fence = runs.alias("fence")
        self._owned = exists().where(
            fence.c.run_id == bindparam("fence_run"), fence.c.owner == bindparam("fence_owner")
        )
        if self.sqlite:
            self.insert_event = self._compile(events.insert(), EVENT_COLUMNS)
            self.insert_checkpoint = self._compile(checkpoints.insert(), CHECKPOINT_COLUMNS)
        else:
            self.insert_event = self._compile(self._fenced_insert(events, EVENT_COLUMNS))
            self.insert_checkpoint = self._compile(
                self._fenced_insert(checkpoints, CHECKPOINT_COLUMNS)
            )
        columns = ("run_id", "graph_json", "input_json")
        self.insert_input = self._compile(
            dialect_insert(run_inputs)
            .values({c: bindparam(c) for c in columns})
            .on_conflict_do_nothing(index_elements=["run_id"])
        )
        self.notify_done = (
            None
            if self.sqlite
            else self._compile(select(func.pg_notify(bindparam("channel"), bindparam("run_id"))))
        )
        #: this transaction need not wait for the disk (see StepWrite.lazy)
        self.lazy_commit = (
            None
            if self.sqlite
            else str(
                select(func.set_config("synchronous_commit", "off", True)).compile(
                    dialect=dialect, compile_kwargs={"literal_binds": True}
                )
            )
        )
        self.revision: str | None = None  # the schema revision new runs expect
        self._new_runs: dict[tuple[str, ...], str] = {}
        self._child_runs: dict[tuple[tuple[str, ...], bool], str] = {}
        self._updates: dict[tuple[tuple[str, ...], bool], str] = {}

    def _compile(self, statement: Any, columns: Sequence[str] | None = None) -> str:
        return str(
            statement.compile(dialect=self._dialect, column_keys=list(columns) if columns else None)
        )

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

    def child_run(self, columns: tuple[str, ...], rerun: bool) -> str:
        """Insert a nested flow's run (an IntegrityError if another run has its id), or
        (*rerun*: started again after a resume) reset its row: only a row of the same
        parent, never another run that happens to have that id."""
        sql_text = self._child_runs.get((columns, rerun))
        if sql_text is None:
            insert = self._fenced_insert(runs, columns)
            statement = (
                insert.on_conflict_do_update(
                    index_elements=["run_id"],
                    set_={c: insert.excluded[c] for c in columns if c != "run_id"},
                    where=runs.c.parent_run_id == insert.excluded.parent_run_id,
                )
                if rerun
                else insert
            )
            sql_text = self._child_runs[(columns, rerun)] = self._compile(statement)
        return sql_text

    def update_run(self, columns: tuple[str, ...], top_level: bool) -> str:
        """Update a run's row while it is owned: a top-level run by its own ``owner``, a
        nested flow's run by its top-level run's. ``total_steps`` never goes down: it
        counts the steps committed, and an interrupt landing after a step's commit can
        leave the engine's count (which an end write carries) one short."""
        sql_text = self._updates.get((columns, top_level))
        if sql_text is None:
            owned = runs.c.owner == bindparam("fence_owner") if top_level else self._owned
            values: dict[str, Any] = {c: bindparam(c) for c in columns}
            if "total_steps" in values:
                steps = values["total_steps"]
                values["total_steps"] = case(
                    (runs.c.total_steps > steps, runs.c.total_steps), else_=steps
                )
            statement = (
                update(runs).where(runs.c.run_id == bindparam("pk_run_id"), owned).values(values)
            )
            sql_text = self._updates[(columns, top_level)] = self._compile(statement)
        return sql_text


class SchemaMoved(Exception):
    """A new run's transaction found the schema at another revision than the one this
    process opened the database at (another process migrated it); nothing was written."""

    def __init__(self, found: str | None) -> None:
        super().__init__(found)
        self.found = found


#: Read in the transaction of every new run: the schema must still be the one opened.
REVISION_SQL = "SELECT version_num FROM alembic_version"


def _check_revision(found: list[Any], statements: WriteStatements) -> None:
    revisions = [row[0] for row in found]
    if revisions != [statements.revision]:
        raise SchemaMoved(revisions[0] if revisions else None)


def _fence_of(write: StepWrite) -> dict[str, Any]:
    run, owner = write.fence if write.fence is not None else (write.run_id, None)
    return {"fence_run": run, "fence_owner": owner}


def _update_params(write: StepWrite) -> dict[str, Any]:
    params = dict(write.run_update)  # type: ignore[arg-type]
    params["pk_run_id"] = write.run_id
    run, owner = write.fence if write.fence is not None else (write.run_id, None)
    params["fence_run"] = run
    params["fence_owner"] = owner
    return params


def _run_row(cursor: Any, statements: WriteStatements, write: StepWrite) -> None:
    """Send the write's run row: a new run's insert, a nested run's upsert, or an update."""
    if write.run_insert is not None:
        if write.new_run:
            cursor.execute(statements.new_run(tuple(write.run_insert)), write.run_insert)
        else:
            cursor.execute(
                statements.child_run(tuple(write.run_insert), write.rerun),
                {**write.run_insert, **_fence_of(write)},
            )
    elif write.run_update:
        top_level = write.fence is None or write.fence[0] == write.run_id
        cursor.execute(
            statements.update_run(tuple(write.run_update), top_level), _update_params(write)
        )


def apply_all(
    conn: Any,
    statements: WriteStatements,
    writes: Sequence[StepWrite],
) -> list[Any]:
    """Run the statements of *writes* (of different runs) in one transaction, and return
    per write a proof of ownership for :func:`owned`.

    Run rows go first, then events and checkpoints as one ``executemany`` per
    statement, so a group commit costs a few statements, not a few per run (a run
    has at most one write in flight, so this keeps each run's order).
    """
    if statements.sqlite:
        return apply_locked(conn.cursor(), statements, writes)
    return _apply_pipelined(conn, statements, writes)


def apply_locked(
    cursor: Any,
    statements: WriteStatements,
    writes: Sequence[StepWrite],
) -> list[bool]:
    """SQLite, under its write lock: run rows first (updates grouped, their rowcount
    checked at once); a fenced-out write's other rows are not sent at all."""
    kept = [True] * len(writes)
    updates: dict[tuple[tuple[str, ...], bool], list[int]] = {}
    checked = False
    for index, write in enumerate(writes):
        if write.run_insert is not None:
            if write.new_run and not checked and statements.revision is not None:
                _check_revision(cursor.execute(REVISION_SQL).fetchall(), statements)
                checked = True
            _run_row(cursor, statements, write)
            kept[index] = cursor.rowcount != 0
        elif write.run_update:
            top_level = write.fence is None or write.fence[0] == write.run_id
            updates.setdefault((tuple(write.run_update), top_level), []).append(index)
    for (columns, top_level), indexes in updates.items():
        params = [_update_params(writes[i]) for i in indexes]
        _execute(cursor, statements.update_run(columns, top_level), params)
        if cursor.rowcount != len(indexes):  # some write lost its run: which?
            for index, row in zip(indexes, params, strict=True):
                cursor.execute(statements.update_run(columns, top_level), row)
                kept[index] = cursor.rowcount != 0
    inputs: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    checkpoint_rows: list[dict[str, Any]] = []
    for write, still_owned in zip(writes, kept, strict=True):
        if still_owned:
            if write.run_input is not None:
                inputs.append({"run_id": write.run_id, **write.run_input})
            event_rows.extend(write.event_rows)
            if write.checkpoint is not None:
                checkpoint_rows.append(write.checkpoint)
    _execute(cursor, statements.insert_input, inputs)
    _execute(cursor, statements.insert_event, event_rows)
    _execute(cursor, statements.insert_checkpoint, checkpoint_rows)
    return kept


def _apply_pipelined(
    conn: Any,
    statements: WriteStatements,
    writes: Sequence[StepWrite],
) -> list[Any]:
    """PostgreSQL, sent as one pipeline: each run row through a cursor of its own (its
    rowcount is read once the pipeline has run); every other row carries the fence."""
    proofs: list[Any] = []
    inputs: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    checkpoint_rows: list[dict[str, Any]] = []
    revision = None
    if writes and all(write.lazy for write in writes):
        conn.cursor().execute(statements.lazy_commit)
    for write in writes:
        proof: Any = None
        if write.new_run and revision is None and statements.revision is not None:
            revision = conn.cursor()
            revision.execute(REVISION_SQL)
        if write.run_insert is not None or write.run_update:
            proof = conn.cursor()
            _run_row(proof, statements, write)
            if write.new_run and revision is not None:
                proof = (proof, revision, statements)
        proofs.append(proof)
        if write.run_input is not None:
            inputs.append({"run_id": write.run_id, **write.run_input})
        fence = _fence_of(write)
        event_rows.extend({**row, **fence} for row in write.event_rows)
        if write.checkpoint is not None:
            checkpoint_rows.append({**write.checkpoint, **fence})
    cursor = conn.cursor()
    _execute(cursor, statements.insert_input, inputs)
    _execute(cursor, statements.insert_event, event_rows)
    _execute(cursor, statements.insert_checkpoint, checkpoint_rows)
    _execute(
        cursor,
        statements.notify_done,  # type: ignore[arg-type]
        [{"channel": DONE_CHANNEL, "run_id": w.run_id} for w in writes if w.ended],
    )
    return proofs


def owned(proof: Any) -> bool:
    """Whether a write's run row was written (its run still belonged to the writer):
    *proof* is None (no run row), a bool (SQLite) or the row's cursor (PostgreSQL; for
    a new run, with the cursor that read the schema revision: SchemaMoved if it moved)."""
    if proof is None or proof is True or proof is False:
        return proof is not False
    if proof.__class__ is tuple:
        proof, revision, statements = proof
        _check_revision(revision.fetchall(), statements)
    return bool(proof.rowcount != 0)


def _execute(cursor: Any, statement: str, rows: list[dict[str, Any]]) -> None:
    if len(rows) == 1:
        cursor.execute(statement, rows[0])
    elif rows:
        cursor.executemany(statement, rows)


def refused(write: StepWrite, error: BaseException, url: URL) -> BaseException:
    """The error to raise for a failed write: a new run on a run_id that exists is a
    RunExistsError (the transaction wrote nothing), a known failure of the database is
    explained (:func:`connect.explain`), anything else stays as it is."""
    taken = type(error).__name__ in ("IntegrityError", "UniqueViolation")
    if taken and write.new_run:
        return RunExistsError(
            f"Run '{write.run_id}' already exists in {safe_url(url)}; a new run needs a new "
            "run_id (leave Flow(run_id=...) unset for a fresh one each run), and a stopped "
            "run goes on with flow.resume(run_id). Nothing was written."
        )
    if taken and write.run_insert is not None:  # a nested flow's run: RUN.STEP is taken
        return RunExistsError(
            f"Run '{write.top_run}' cannot record its nested flow's run '{write.run_id}': "
            f"another run in {safe_url(url)} has that id (a run_id ending in '.<step>' "
            "looks like a nested run's): give one of the two another run_id. Nothing of "
            "the nested run was written."
        )
    return explain(error, url)


def taken_over(write: StepWrite) -> RunTakenOverError:
    run_id = write.top_run
    return RunTakenOverError(
        f"Run '{run_id}' was taken over by another process (this one stalled longer than "
        "its lease, and a resume claimed the run); this process wrote nothing more. See "
        "db.get_run(run_id) for where the run stands now."
    )


def cut_short(write: StepWrite, error: BaseException) -> PersistenceError:
    """The error for a run whose write shared a commit that *error* cut short (raised
    in the run that led the commit: each other run gets its own error, not the same
    object raised in many tasks)."""
    run_id = write.top_run
    refusal = PersistenceError(
        f"Run '{run_id}': the commit its step shared with other runs was cut short by "
        f"{type(error).__name__}: {error}. That step may not be recorded; "
        "db.get_run(run_id) shows where the run stands, and flow.resume(run_id) goes on "
        "from its last recorded step."
    )
    refusal.__cause__ = error
    return refusal


def _rollback(cursor: Any) -> None:
    """End a failed fast-path transaction (a failed COMMIT may have ended it already)."""
    try:
        if cursor.connection.in_transaction:
            cursor.execute(SQLITE_ROLLBACK)
    except Exception:
        _log.debug("Rolling back a failed write failed", exc_info=True)


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
        self._used_at = 0.0  # when its connection last committed (PostgreSQL)

    def commit(self, write: StepWrite) -> None:
        ticket = _Ticket(write)
        with self._queue_lock:
            self.queue.append(ticket)
        with self.lock:
            if not ticket.done:
                with self._queue_lock:
                    batch, self.queue = self.queue, []
                self._commit_batch(batch)
            if self._writer.wal_due:  # this write's turn to fold the WAL in, writers held
                self._writer.fold_wal_locked()
        if ticket.error is not None:
            raise ticket.error

    def _commit_batch(self, batch: list[_Ticket]) -> None:
        try:
            kept = self._transaction([t.write for t in batch])
            for ticket, still_owned in zip(batch, kept, strict=True):
                if not still_owned:
                    ticket.error = taken_over(ticket.write)
        except Exception as exc:
            url = self._writer.engine.url
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
            try:
                kept = self._sqlite_transaction(writes)
            except Exception as exc:
                if not out_of_space(exc):
                    raise
                # no room: folding the WAL into the database file may make some (a WAL
                # holds every version of a page written since it was last emptied)
                _log.warning(
                    "No room to write to %s; folding the WAL in and trying again", writer.safe_url
                )
                writer.fold_wal_locked("TRUNCATE")  # (frees the WAL's room on disk)
                kept = self._sqlite_transaction(writes)
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
            finally:
                self._used_at = time.monotonic()
        writer.committed()
        return kept

    def _sqlite_transaction(self, writes: Sequence[StepWrite]) -> list[bool]:
        writer = self._writer
        with write_connection(writer.engine) as conn, conn.begin():
            proofs = apply_all(conn.connection.driver_connection, writer.statements, writes)
            return [owned(proof) for proof in proofs]

    def _connection(self) -> Any:
        raw = self._raw
        if raw is not None and time.monotonic() - self._used_at > IDLE_PING_S:
            # idle a while: the server may have dropped it since (a restart, an idle
            # session timeout, a reaper); a step's commit must not go to a dead socket
            try:
                raw.driver_connection.execute("SELECT 1")
            except Exception:
                self.close()
                raw = None
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

    def __init__(self, engine: Engine, revision: str | None = None) -> None:
        self.engine = engine
        self.safe_url = safe_url(engine.url)
        self.sqlite = is_sqlite(engine)
        self.statements = WriteStatements(engine)
        self.statements.revision = revision
        self.commits = 0  # transactions so far (the WAL checkpointer watches it)
        #: per event loop thread: the writes gathering for one commit (the recorder's)
        self.batches: dict[int, Any] = {}
        #: per event loop thread: the batch whose commit is under way (recorder.batched)
        self.committing: dict[int, Any] = {}
        self._lanes = [_Lane(self) for _ in range(1 if self.sqlite else POSTGRES_LANES)]
        self._next = 0
        self._now: Any = None  # SQLite fast path: its own connection, busy_timeout 0
        # SQLite's WAL bound: past wal_limit, the next write folds the WAL in (wal_due)
        self.database_file = (
            engine.url.database if self.sqlite and not is_memory(engine.url) else None
        )
        self.wal_limit = WAL_LIMIT_BYTES
        self.wal_due = False
        if self.sqlite:
            self._now = engine.raw_connection()
            self._now.driver_connection.execute(SQLITE_NO_WAIT)

    def committed(self) -> None:
        """Count a commit; every WAL_CHECK_EVERY commits on SQLite, see whether the WAL
        went past its bound (the next write then folds it in)."""
        self.commits += 1
        if not self.commits % WAL_CHECK_EVERY:
            self.look_at_wal()

    def look_at_wal(self) -> None:
        """SQLite: if the WAL went past its bound, the next write folds it in."""
        if self.database_file is not None and wal_size(self.database_file) > self.wal_limit:
            self.wal_due = True

    def fold_wal(self, *, limit: float | None = None, mode: str = "RESTART") -> bool:
        """Fold the WAL into the database file if it holds more than *limit* bytes (None:
        the bound), taking the writers' turn: this process writes nothing meanwhile.
        RESTART (the next commit starts the WAL over; cheaper for writers that go on) or
        TRUNCATE (the WAL file emptied). True if it was folded."""
        bound = self.wal_limit if limit is None else limit
        with self._lanes[0].lock:
            if self.database_file is None or wal_size(self.database_file) <= bound:
                return True
            return self.fold_wal_locked(mode)

    def _fold_now(self) -> bool:
        """Fold the WAL in on this thread (the lane lock held) if that needs no waiting:
        one RESTART attempt on the fast path's connection (busy timeout 0). Steps of
        every run of this loop pause for it (a few ms per 8 MiB) instead of moving to
        worker threads, where a crowd of concurrent runs would stay for a while."""
        try:
            folded = wal_checkpoint(self._now.driver_connection, "RESTART")
        except Exception:
            _log.debug("WAL checkpoint (RESTART) of %s failed", self.safe_url, exc_info=True)
            return False
        if folded:
            self.wal_due = False
            self.wal_limit = WAL_LIMIT_BYTES
        return folded

    def fold_wal_locked(self, mode: str = "RESTART") -> bool:
        """:meth:`fold_wal` for a caller that holds the lane lock. If readers of an older
        snapshot keep it from finishing, the next try waits until the WAL grew by
        another bound (so writers are not held at every step)."""
        self.wal_due = False
        if self.database_file is None:
            return True
        size = wal_size(self.database_file)
        folded = False
        try:
            raw = self.engine.raw_connection()
            try:
                folded = wal_checkpoint(
                    raw.driver_connection, mode, busy_timeout_ms=WAL_FOLD_BUSY_MS
                )
            finally:
                raw.close()
        except Exception:
            _log.debug("WAL checkpoint (%s) of %s failed", mode, self.safe_url, exc_info=True)
        if folded:
            self.wal_limit = WAL_LIMIT_BYTES
        else:
            self.wal_limit = size + WAL_LIMIT_BYTES
            _log.info(
                "The WAL of %s holds %d bytes and could not be folded in (readers of "
                "an older snapshot); trying again past %d",
                self.safe_url,
                size,
                self.wal_limit,
            )
        return folded

    def commit(self, write: StepWrite) -> None:
        """Commit *write*, maybe together with others; may wait for locks.
        RunTakenOverError if its run has another owner now (nothing of it was written)."""
        lanes = self._lanes
        lane = next((lane for lane in lanes if not lane.lock.locked()), None)
        if lane is None:  # every lane busy: queue behind one of them, in turn
            self._next = (self._next + 1) % len(lanes)
            lane = lanes[self._next]
        lane.commit(write)

    def commit_all(self, writes: Sequence[StepWrite]) -> list[BaseException | None]:
        """Commit the writes of several runs in one transaction (a batch the event loop
        gathered; call it from a worker thread: it may wait for locks). Per write, the
        error that kept it from landing (RunTakenOverError, RunExistsError...) or None."""
        lane = self._lanes[0]
        tickets = [_Ticket(write) for write in writes]
        with lane.lock:
            lane._commit_batch(tickets)
            if self.wal_due:
                self.fold_wal_locked()
        return [ticket.error for ticket in tickets]

    def commit_all_now(self, writes: Sequence[StepWrite]) -> list[BaseException | None] | None:
        """SQLite only: :meth:`commit_all` on this thread if that needs no waiting; None,
        having written nothing, if it would wait (or a write failed: the worker thread's
        path then retries each write on its own and reports per write)."""
        lane = self._lanes[0]
        if self._now is None or not lane.lock.acquire(blocking=False):
            return None
        try:
            if self.wal_due and not self._fold_now():
                return None
            cursor = self._now.driver_connection.cursor()
            try:  # (BEGIN fails if another process holds the write lock, or no room)
                cursor.execute(SQLITE_BEGIN_WRITE)
                kept = apply_locked(cursor, self.statements, writes)
                cursor.execute(SQLITE_COMMIT)
            except BaseException as exc:  # a KeyboardInterrupt too must not leave it open
                _rollback(cursor)
                if not isinstance(exc, Exception):
                    raise
                return None
            self.committed()
            return [
                None if still_owned else taken_over(write)
                for write, still_owned in zip(writes, kept, strict=True)
            ]
        finally:
            lane.lock.release()

    def commit_now(self, write: StepWrite) -> bool:
        """SQLite only: commit on this thread if no writer (here or elsewhere) holds the
        lock; return False, having written nothing, if one does. RunTakenOverError if
        the write's run has another owner now (nothing of it was written)."""
        lane = self._lanes[0]
        if self._now is None or not lane.lock.acquire(blocking=False):
            return False
        try:
            if self.wal_due and not self._fold_now():
                return False  # readers in the way: a worker thread folds it, waiting
            cursor = self._now.driver_connection.cursor()
            try:
                cursor.execute(SQLITE_BEGIN_WRITE)
                [still_owned] = apply_locked(cursor, self.statements, [write])
                cursor.execute(SQLITE_COMMIT)
            except BaseException as exc:  # rolled back, whatever it is (a Ctrl-C too)
                _rollback(cursor)
                # busy (another process holds the write lock; a COMMIT waits for readers;
                # in-memory databases have no WAL) or no room (the WAL must be folded
                # in): a worker thread tries again, and waits
                if out_of_space(exc) or is_busy(exc):
                    return False
                error = refused(write, exc, self.engine.url)
                if error is exc:
                    raise
                raise error from exc
            self.commits += 1  # (committed(), inlined: this is the steps' fast path)
            if not self.commits % WAL_CHECK_EVERY:
                self.look_at_wal()
            if not still_owned:
                raise taken_over(write)
            return True
        finally:
            lane.lock.release()

    def close(self, wait: float = 5.0) -> None:
        """Close the writer's connections, waiting up to *wait* seconds for a write in
        progress (at interpreter exit, one may be stuck in a daemon thread)."""
        for lane in self._lanes:
            if lane.lock.acquire(timeout=wait):
                try:
                    lane.close()
                finally:
                    lane.lock.release()
        lane = self._lanes[0]
        if lane.lock.acquire(timeout=wait):
            try:
                if self._now is not None:
                    self._now.close()
                    self._now = None
            finally:
                lane.lock.release()
