"""All SQL of PocoFlow: engines, connection setup, and every statement (SQLAlchemy Core).

One implementation for SQLite and PostgreSQL; the dialect comes from the URL.
The statements run on SQLAlchemy's sync engine, called from worker threads
by :mod:`pocoflow.persistence.db`: that works on asyncio and trio alike, and
one thread hop per step is cheaper than the one hop per statement of an
async driver. :mod:`pocoflow.persistence.writer` commits the step writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, bindparam, create_engine, event, func, select, update
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError

from pocoflow.logging import get_logger
from pocoflow.persistence.models import checkpoints, events, run_inputs, runs

_log = get_logger("db")

#: How long a SQLite writer waits for another process's lock before failing.
BUSY_TIMEOUT_MS = 30_000
#: 0.2's column sets: what the 0.2 methods return.
RUN_COLUMNS = ("run_id", "flow_name", "status", "started_at", "completed_at", "total_steps",
               "current_node", "error_msg")
UPDATABLE = frozenset(RUN_COLUMNS[1:]) | {"next_node", "owner", "heartbeat_at",
                                          "parent_run_id"}

_SYNC_DRIVERS = {
    "sqlite": "sqlite", "sqlite+aiosqlite": "sqlite", "sqlite+pysqlite": "sqlite",
    "postgresql": "postgresql+psycopg", "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg", "postgresql+psycopg2": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
}


_second: tuple[int, str] = (-1, "")


def iso(ts: float) -> str:
    """UNIX time as UTC ISO-8601 with microseconds (so stored timestamps sort as text).

    The date part is cached per second: this runs several times per step.
    """
    global _second
    whole, micro = divmod(round(ts * 1_000_000), 1_000_000)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, datetime.fromtimestamp(whole, timezone.utc)
                            .strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{micro:06d}+00:00"


def now_iso() -> str:
    return iso(time.time())


def iso_ago(seconds: float) -> str:
    return iso(time.time() - seconds)


# ── URLs and engines ────────────────────────────────────────────────────────

def to_url(target: str | os.PathLike[str] | URL, *, create_dirs: bool = True) -> URL:
    """A SQLAlchemy URL for a file path or URL, with the sync driver PocoFlow runs on.

    ``sqlite+aiosqlite`` and ``postgresql+asyncpg`` URLs are accepted and run
    on the stdlib sqlite3 and psycopg 3 drivers.
    """
    if isinstance(target, URL):
        url = target
    elif isinstance(target, str) and "://" in target:
        try:
            url = make_url(target)
        except ArgumentError as exc:
            raise ValueError(f"Database URL {target!r} is not a valid SQLAlchemy URL: {exc}") \
                from None
    elif isinstance(target, (str, os.PathLike)):
        path = Path(target).expanduser()
        if str(target) != ":memory:":
            path = path.absolute()
            if create_dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
        return URL.create("sqlite", database=str(path))
    else:
        raise TypeError(
            f"A database is a file path or a SQLAlchemy URL string, got {type(target).__name__}."
        )
    driver = _SYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(
            f"Database URL {url.render_as_string(hide_password=True)!r}: PocoFlow supports "
            "SQLite (a path, sqlite:///file.db) and PostgreSQL (postgresql+asyncpg://... or "
            f"postgresql+psycopg://...), not {url.drivername!r}."
        )
    url = url.set(drivername=driver)
    if create_dirs and driver == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
    return url


def safe_url(url: URL) -> str:
    """The URL for messages and logs: never the password."""
    return url.render_as_string(hide_password=True)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def create_db_engine(url: URL) -> Engine:
    """A pooled engine; SQLite gets WAL, synchronous=NORMAL, a busy timeout and
    BEGIN IMMEDIATE for write transactions (so writers queue instead of failing)."""
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, pool_size=8, max_overflow=32, pool_timeout=60,
                               connect_args={"check_same_thread": False,
                                             "timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    try:
        return create_engine(url, pool_size=10, max_overflow=40, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"The database driver for {safe_url(url)!r} is not installed ({exc.name}). "
            "Install it with: pip install 'pocoflow[postgres]'."
        ) from None


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _sqlite_begin)
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous = NORMAL")
    # WAL checkpoints run in PocoFlow's background checkpointer, not inside a step's commit
    cursor.execute("PRAGMA wal_autocheckpoint = 0")
    cursor.close()


def use_wal(engine: Engine) -> None:
    """Put a SQLite file in WAL mode (persistent), once its schema is known to be ours."""
    raw = engine.raw_connection()  # outside any transaction: WAL cannot be set inside one
    try:
        raw.driver_connection.execute("PRAGMA journal_mode = WAL")
    finally:
        raw.close()


def wal_checkpoint(engine: Engine, mode: str = "PASSIVE") -> None:
    """Copy the SQLite WAL into the database file (PASSIVE never waits for readers)."""
    if mode not in ("PASSIVE", "TRUNCATE"):
        raise ValueError(f"Unknown WAL checkpoint mode {mode!r}.")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("pocoflow_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def write_connection(engine: Engine) -> Connection:
    """A connection whose transactions take SQLite's write lock up front."""
    return engine.connect().execution_options(pocoflow_write=True)


# ── writes: one transaction per step, group-committed ───────────────────────

EVENT_COLUMNS = ("run_id", "event", "ts", "step", "node_name", "action", "elapsed_ms",
                 "error_msg", "detail")
#: The optional fields of an event row (0.2's, plus ``detail``).
EVENT_FIELDS = EVENT_COLUMNS[3:]


def event_row(run_id: str, event: str, ts: str, **fields: Any) -> dict[str, Any]:
    """A pf_events row with every column present (unset fields are NULL)."""
    unknown = fields.keys() - EVENT_FIELDS
    if unknown:
        raise TypeError(f"Unknown event field(s) {sorted(unknown)}; the fields are "
                        f"{sorted({*EVENT_FIELDS, 'ts'})}.")
    row = dict.fromkeys(EVENT_FIELDS)
    row.update(fields, run_id=run_id, event=event, ts=ts)
    return row


CHECKPOINT_COLUMNS = ("run_id", "step", "node_name", "store_json", "created_at", "kind",
                      "next_node", "excluded")


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


@dataclass
class StepWrite:
    """What one step of one run writes, committed in one transaction."""

    run_id: str
    run_insert: dict[str, Any] | None = None
    run_input: dict[str, Any] | None = None  # graph_json, input_json: with a new run only
    run_update: dict[str, Any] | None = None
    event_rows: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None

    def apply(self, cursor: Any, statements: WriteStatements) -> None:
        """Run this write's statements on a DBAPI cursor inside an open transaction
        (the one-write case of :func:`apply_all`, kept direct: it is every step's path)."""
        run_id = self.run_id
        if self.run_insert is not None:
            cursor.execute(statements.upsert_run(tuple(self.run_insert)), self.run_insert)
            if self.run_input is not None:
                cursor.execute(statements.insert_input, {"run_id": run_id, **self.run_input})
        if self.event_rows:
            cursor.executemany(statements.insert_event, self.event_rows)
        if self.checkpoint is not None:
            cursor.execute(statements.insert_checkpoint, self.checkpoint)
        if self.run_update:
            cursor.execute(statements.update_run(tuple(self.run_update)),
                           {**self.run_update, "pk_run_id": run_id})


def apply_all(cursor: Any, statements: WriteStatements, writes: Sequence[StepWrite]) -> None:
    """Run the statements of *writes* (of different runs) in one transaction, one
    ``executemany`` per statement: a group commit costs a few statements, not a few per run.

    Runs first, then what refers to them. A run has at most one write in flight, so
    grouping by statement keeps each run's order.
    """
    if len(writes) == 1:
        writes[0].apply(cursor, statements)
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


#: Transaction control on the SQLite driver connection (the writer's fast path).
SQLITE_BEGIN_WRITE = "BEGIN IMMEDIATE"
SQLITE_COMMIT = "COMMIT"
SQLITE_ROLLBACK = "ROLLBACK"
SQLITE_NO_WAIT = "PRAGMA busy_timeout = 0"


# ── single statements (the 0.2 methods) ─────────────────────────────────────

def insert_run(conn: Connection, values: dict[str, Any]) -> None:
    """Insert a run unless one with this run_id exists (0.2's INSERT OR IGNORE)."""
    exists = conn.execute(select(runs.c.run_id).where(runs.c.run_id == values["run_id"]))
    if exists.first() is None:
        conn.execute(runs.insert(), values)


def update_run(conn: Connection, run_id: str, values: dict[str, Any]) -> int:
    return conn.execute(update(runs).where(runs.c.run_id == run_id).values(values)).rowcount


def insert_event(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(events.insert(), row)


def upsert_checkpoint(conn: Connection, row: dict[str, Any]) -> None:
    """0.2's INSERT OR REPLACE: a step written again replaces the earlier checkpoint."""
    conn.execute(checkpoints.delete().where(and_(checkpoints.c.run_id == row["run_id"],
                                                 checkpoints.c.step == row["step"])))
    conn.execute(checkpoints.insert(), row)


def heartbeat(conn: Connection, owner: str, run_ids: Iterable[str]) -> None:
    conn.execute(update(runs).where(and_(runs.c.run_id.in_(list(run_ids)),
                                         runs.c.owner == owner, runs.c.status == "running"))
                 .values(heartbeat_at=now_iso()))


def claim_run(conn: Connection, run_id: str, status: str, owner: str | None,
              heartbeat_at: str | None, new_owner: str) -> int:
    """Take a stopped run over for a resume, if its row is still as observed (1: taken)."""
    def same(column: Any, value: Any) -> Any:
        return column.is_(None) if value is None else column == value

    return conn.execute(
        update(runs)
        .where(runs.c.run_id == run_id, runs.c.status == status, same(runs.c.owner, owner),
               same(runs.c.heartbeat_at, heartbeat_at))
        .values(status="running", owner=new_owner, heartbeat_at=now_iso(), completed_at=None,
                error_msg=None)).rowcount


# ── reads ───────────────────────────────────────────────────────────────────

def get_run(conn: Connection, run_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
    return dict(row) if row is not None else None


def list_runs(conn: Connection, *, limit: int | None, offset: int, status: str | None,
              flow_name: str | None, parent_run_id: str | None,
              top_level: bool) -> list[dict[str, Any]]:
    """Newest first, filtered by stored status, flow name and parent run."""
    query = select(runs)
    if status is not None:
        query = query.where(runs.c.status == status)
    if flow_name is not None:
        query = query.where(runs.c.flow_name == flow_name)
    if parent_run_id is not None:
        query = query.where(runs.c.parent_run_id == parent_run_id)
    elif top_level:
        query = query.where(runs.c.parent_run_id.is_(None))
    query = query.order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
    query = query.limit(limit).offset(offset)
    return [dict(r) for r in conn.execute(query).mappings()]


def count_runs(conn: Connection) -> dict[str, int]:
    query = select(runs.c.status, func.count()).group_by(runs.c.status)
    return {status: n for status, n in conn.execute(query)}


def get_run_input(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """A run's graph and input store (JSON texts), or None."""
    query = select(run_inputs).where(run_inputs.c.run_id == run_id)
    row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def get_events(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    query = select(events).where(events.c.run_id == run_id).order_by(events.c.id)
    return [dict(r) for r in conn.execute(query).mappings()]


def get_checkpoint_rows(conn: Connection, run_id: str, up_to: int | None = None,
                        ) -> list[dict[str, Any]]:
    """Checkpoint rows of a run by step; with *up_to*, only those a rebuild of that
    step needs (from the last full snapshot at or before it)."""
    query = select(checkpoints).where(checkpoints.c.run_id == run_id)
    if up_to is not None:
        last_full = (select(func.max(checkpoints.c.step))
                     .where(checkpoints.c.run_id == run_id, checkpoints.c.step <= up_to,
                            checkpoints.c.kind == "full")
                     .scalar_subquery())
        query = query.where(checkpoints.c.step <= up_to,
                            checkpoints.c.step >= func.coalesce(last_full, up_to))
    query = query.order_by(checkpoints.c.step)
    return [dict(r) for r in conn.execute(query).mappings()]


def last_action(conn: Connection, run_id: str) -> str | None:
    query = (select(events.c.action)
             .where(events.c.run_id == run_id, events.c.event == "node_end")
             .order_by(events.c.id.desc()).limit(1))
    return conn.execute(query).scalar()


def last_checkpoint_step(conn: Connection, run_id: str) -> int | None:
    query = select(func.max(checkpoints.c.step)).where(checkpoints.c.run_id == run_id)
    return conn.execute(query).scalar()


