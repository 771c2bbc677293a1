"""WorkflowDB and AsyncWorkflowDB: pocoflow 0.2's database API, on SQLite or PostgreSQL.

Both take a file path (SQLite) or a SQLAlchemy URL and return plain dicts
with 0.2's keys (plus the new columns). :class:`RunRecords` holds the one
implementation; ``AsyncWorkflowDB`` runs it in worker threads (so it works
on asyncio and trio), and ``WorkflowDB`` is its blocking facade.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pocoflow.errors import RunNotFoundError
from pocoflow.events import RUN_STATUSES
from pocoflow.persistence import sql
from pocoflow.persistence.codec import dumps
from pocoflow.persistence.database import Database, owner_is_dead
from pocoflow.persistence.delta import FULL_EVERY, DeltaTracker, apply_row, rebuild
from pocoflow.store import Store

T = TypeVar("T")

#: Seconds without a heartbeat after which a running run counts as interrupted.
LEASE_SECONDS = 30.0
_LIST_STATUSES = (*RUN_STATUSES, "interrupted")

Target = str | os.PathLike[str]


class RunRecords:
    """The one implementation behind both facades (blocking; call it from a thread)."""

    def __init__(self, target: Target, *, lease_seconds: float, allow_pickle: bool,
                 full_every: int) -> None:
        if isinstance(target, (WorkflowDB, AsyncWorkflowDB)):
            raise TypeError("Pass a path or URL, not a WorkflowDB; use it directly.")
        if not (isinstance(lease_seconds, (int, float)) and lease_seconds > 0):
            raise ValueError(f"lease_seconds must be a positive number, got {lease_seconds!r}.")
        if not (isinstance(full_every, int) and full_every >= 1):
            raise ValueError(f"full_every must be an int >= 1, got {full_every!r}.")
        self.url = sql.to_url(target)
        self.lease_seconds = float(lease_seconds)
        self.allow_pickle = allow_pickle
        self.full_every = full_every
        self._database: Database | None = None

    @property
    def database(self) -> Database:
        database = self._database
        if database is None or database.pid != os.getpid():  # first use, or a forked child
            database = self._database = Database.open(self.url)
        return database

    @property
    def is_open(self) -> bool:
        return self._database is not None

    def open(self) -> Database:
        return self.database

    def tracker(self) -> DeltaTracker:
        return DeltaTracker(full_every=self.full_every, allow_pickle=self.allow_pickle)

    def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.database.engine.connect() as conn:
            try:
                return fn(conn, *args, **kwargs)
            finally:
                conn.rollback()

    def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with sql.write_connection(self.database.engine) as conn, conn.begin():
            return fn(conn, *args, **kwargs)

    # ── runs ────────────────────────────────────────────────────────────────

    def create_run(self, run_id: str, flow_name: str = "") -> None:
        _check_id(run_id)
        self._write(sql.insert_run, {"run_id": run_id, "flow_name": flow_name,
                                     "started_at": sql.now_iso()})

    def update_run(self, run_id: str, **fields: Any) -> None:
        unknown = set(fields) - sql.UPDATABLE
        if unknown:
            raise TypeError(
                f"update_run: unknown field(s) {sorted(unknown)}; the fields are "
                f"{sorted(sql.UPDATABLE)}."
            )
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise ValueError(
                f"update_run: status {fields['status']!r} is not one of {list(RUN_STATUSES)}."
            )
        if fields:
            self._write(sql.update_run, run_id, fields)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self._read(sql.get_run, run_id)
        return self._present(row) if row is not None else None

    def list_runs(self, limit: int = 100, *, offset: int = 0, status: str | None = None,
                  flow_name: str | None = None, parent_run_id: str | None = None,
                  include_nested: bool = False) -> list[dict[str, Any]]:
        if status is not None and status not in _LIST_STATUSES:
            raise ValueError(f"list_runs: status {status!r} is not one of {list(_LIST_STATUSES)}.")
        if not isinstance(limit, int) or limit < 0 or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"list_runs: limit and offset must be ints >= 0, got {limit!r}, "
                             f"{offset!r}.")
        if status in ("running", "interrupted"):
            # liveness is partly decided here (a dead owner pid), so filter after presenting;
            # running rows are few (bounded by what runs at once)
            rows = self._read(sql.list_runs, limit=None, offset=0, status="running",
                              flow_name=flow_name, parent_run_id=parent_run_id,
                              top_level=not include_nested)
            kept = [r for r in map(self._present, rows) if r["status"] == status]
            return kept[offset:offset + limit]
        rows = self._read(sql.list_runs, limit=limit, offset=offset, status=status,
                          flow_name=flow_name, parent_run_id=parent_run_id,
                          top_level=not include_nested)
        return [self._present(row) for row in rows]

    def get_run_input(self, run_id: str) -> dict[str, Any] | None:
        """The graph (``graph_json``) and input store (``input_json``) a run started with."""
        return self._read(sql.get_run_input, run_id)

    def count_runs(self) -> dict[str, int]:
        """Runs per stored status (``interrupted`` runs are counted as ``running``)."""
        return self._read(sql.count_runs)

    def _present(self, row: dict[str, Any]) -> dict[str, Any]:
        """A run row as callers see it: ``interrupted`` if its process is gone."""
        if row["status"] == "running" and row.get("owner") and (
                (row.get("heartbeat_at") or row["started_at"]) < sql.iso_ago(self.lease_seconds)
                or owner_is_dead(row["owner"])):
            row["status"] = "interrupted"
        return row

    # ── events ──────────────────────────────────────────────────────────────

    def save_event(self, run_id: str, event: str, **kw: Any) -> None:
        ts = kw.pop("ts", None) or sql.now_iso()
        self._write(sql.insert_event, sql.event_row(run_id, event, ts, **kw))

    def get_events(self, run_id: str) -> list[dict[str, Any]]:
        return self._read(sql.get_events, run_id)

    # ── checkpoints ─────────────────────────────────────────────────────────

    def save_checkpoint(self, run_id: str, step: int, node_name: str,
                        store: Store | Mapping[str, Any]) -> None:
        """A full snapshot for *step* (replacing one written before, as in 0.2)."""
        transient = store.transient if isinstance(store, Store) else ()
        encoded = self.tracker().full(store, transient)
        self._write(sql.upsert_checkpoint, {
            "run_id": run_id, "step": step, "node_name": node_name,
            "store_json": encoded.store_json, "created_at": sql.now_iso(), "kind": "full",
            "excluded": json.dumps(encoded.excluded) if encoded.excluded else None})

    def get_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        """Every checkpoint of the run in step order, each with the full store."""
        rows = self._read(sql.get_checkpoint_rows, run_id)
        out: list[dict[str, Any]] = []
        state: dict[str, Any] = {}
        for row in rows:
            state = apply_row(state, row)
            out.append({**row, "store_json": dumps(state)})
        return out

    def checkpoint_rows(self, run_id: str, step: int | None = None) -> list[dict[str, Any]]:
        """The rows that rebuild *step* (default: the last step), from a full snapshot on."""
        def read(conn: Any) -> list[dict[str, Any]]:
            at = step if step is not None else sql.last_checkpoint_step(conn, run_id)
            return [] if at is None else sql.get_checkpoint_rows(conn, run_id, at)

        rows = self._read(read)
        if not rows or (step is not None and rows[-1]["step"] != step):
            where = f"step {step}" if step is not None else "any step"
            raise RunNotFoundError(
                f"No checkpoint for run_id={run_id!r} at {where} in {self.database.safe_url}. "
                "List them with db.get_checkpoints(run_id)."
            )
        return rows

    def last_action(self, run_id: str) -> str | None:
        """The action of the run's last finished node."""
        return self._read(sql.last_action, run_id)

    def load_checkpoint(self, run_id: str, step: int) -> Store:
        rows = self.checkpoint_rows(run_id, step)
        excluded = json.loads(rows[-1]["excluded"]) if rows[-1].get("excluded") else ()
        return Store(rebuild(rows, allow_pickle=self.allow_pickle), name=f"{run_id}@step{step}",
                     transient=excluded)

    # ── recording (used by the Flow recorder) ───────────────────────────────

    def commit(self, write: sql.StepWrite) -> None:
        self.database.writer.commit(write)


def _check_id(run_id: Any) -> None:
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"A run_id must be a non-empty str, got {run_id!r}.")


class AsyncWorkflowDB:
    """The run database, awaitable: runs, events, checkpoints of every flow.

    ``AsyncWorkflowDB("pocoflow.db")`` or ``AsyncWorkflowDB("postgresql+asyncpg://...")``.
    The database is opened (and migrated to the current schema) on first use.
    ``lease_seconds``: a running run whose heartbeat is older shows as
    ``interrupted``. ``allow_pickle``: checkpoint values no codec handles are
    pickled (trusted databases only). ``full_every``: steps between full
    snapshots at most.
    """

    def __init__(self, target: Target, *, lease_seconds: float = LEASE_SECONDS,
                 allow_pickle: bool = False, full_every: int = FULL_EVERY) -> None:
        self.records = RunRecords(target, lease_seconds=lease_seconds,
                                  allow_pickle=allow_pickle, full_every=full_every)

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return sql.safe_url(self.records.url)

    def __repr__(self) -> str:
        return f"<AsyncWorkflowDB {self.url}>"

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        import functools

        import anyio.to_thread

        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    async def open(self) -> AsyncWorkflowDB:
        """Open (and migrate) now rather than on first use; returns self."""
        await self._call(self.records.open)
        return self

    async def create_run(self, run_id: str, flow_name: str = "") -> None:
        """Insert a run with status ``running`` (ignored if the run_id exists)."""
        await self._call(self.records.create_run, run_id, flow_name)

    async def update_run(self, run_id: str, **fields: Any) -> None:
        """Set fields of a run: status, completed_at, total_steps, current_node, error_msg..."""
        await self._call(self.records.update_run, run_id, **fields)

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run as a dict, or None."""
        return await self._call(self.records.get_run, run_id)

    async def list_runs(self, limit: int = 100, *, offset: int = 0, status: str | None = None,
                        flow_name: str | None = None, parent_run_id: str | None = None,
                        include_nested: bool = False) -> list[dict[str, Any]]:
        """Newest runs first, filtered by status (``interrupted`` too) and flow name, paged.

        Nested flows' child runs are left out unless ``include_nested`` or
        ``parent_run_id`` asks for them."""
        return await self._call(self.records.list_runs, limit, offset=offset, status=status,
                                flow_name=flow_name, parent_run_id=parent_run_id,
                                include_nested=include_nested)

    async def save_event(self, run_id: str, event: str, **kw: Any) -> None:
        """Append an event: step, node_name, action, elapsed_ms, error_msg, ts, detail."""
        await self._call(self.records.save_event, run_id, event, **kw)

    async def get_events(self, run_id: str) -> list[dict[str, Any]]:
        """A run's events in the order they happened."""
        return await self._call(self.records.get_events, run_id)

    async def save_checkpoint(self, run_id: str, step: int, node_name: str,
                              store: Store | Mapping[str, Any]) -> None:
        """Write a full snapshot of *store* as the checkpoint of *step*."""
        await self._call(self.records.save_checkpoint, run_id, step, node_name, store)

    async def get_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        """A run's checkpoints by step, each ``store_json`` the full store."""
        return await self._call(self.records.get_checkpoints, run_id)

    async def load_checkpoint(self, run_id: str, step: int) -> Store:
        """The Store as it was after *step*; ``KeyError`` if there is no such checkpoint."""
        return await self._call(self.records.load_checkpoint, run_id, step)


class WorkflowDB:
    """Blocking version of :class:`AsyncWorkflowDB`; see it for details.

    As in pocoflow 0.2, the database is opened (created, migrated) at once.
    ``WorkflowDB(...).aio`` is the async twin on the same database.
    """

    def __init__(self, target: Target, *, lease_seconds: float = LEASE_SECONDS,
                 allow_pickle: bool = False, full_every: int = FULL_EVERY) -> None:
        self.aio = AsyncWorkflowDB(target, lease_seconds=lease_seconds,
                                   allow_pickle=allow_pickle, full_every=full_every)
        self.records = self.aio.records
        self.records.database  # noqa: B018 - open now, as 0.2 did

    @property
    def url(self) -> str:
        return self.aio.url

    @property
    def db_path(self) -> Path | None:
        """The SQLite file (0.2 attribute); None for other databases."""
        url = self.records.url
        return Path(url.database) if url.get_backend_name() == "sqlite" and url.database \
            else None

    def __repr__(self) -> str:
        return f"<WorkflowDB {self.url}>"

    def create_run(self, run_id: str, flow_name: str = "") -> None:
        self.records.create_run(run_id, flow_name)

    def update_run(self, run_id: str, **fields: Any) -> None:
        self.records.update_run(run_id, **fields)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return self.records.get_run(run_id)

    def list_runs(self, limit: int = 100, *, offset: int = 0, status: str | None = None,
                  flow_name: str | None = None, parent_run_id: str | None = None,
                  include_nested: bool = False) -> list[dict[str, Any]]:
        return self.records.list_runs(limit, offset=offset, status=status, flow_name=flow_name,
                                      parent_run_id=parent_run_id, include_nested=include_nested)

    def save_event(self, run_id: str, event: str, **kw: Any) -> None:
        self.records.save_event(run_id, event, **kw)

    def get_events(self, run_id: str) -> list[dict[str, Any]]:
        return self.records.get_events(run_id)

    def save_checkpoint(self, run_id: str, step: int, node_name: str,
                        store: Store | Mapping[str, Any]) -> None:
        self.records.save_checkpoint(run_id, step, node_name, store)

    def get_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        return self.records.get_checkpoints(run_id)

    def last_action(self, run_id: str) -> str | None:
        """The action of the run's last finished node."""
        return self._read(sql.last_action, run_id)

    def load_checkpoint(self, run_id: str, step: int) -> Store:
        return self.records.load_checkpoint(run_id, step)


def as_async_db(db: Any) -> AsyncWorkflowDB:
    """What ``Flow(db=...)`` accepts: an AsyncWorkflowDB, a WorkflowDB, a path or a URL."""
    if isinstance(db, AsyncWorkflowDB):
        return db
    if isinstance(db, WorkflowDB):
        return db.aio
    if isinstance(db, (str, os.PathLike)):
        return AsyncWorkflowDB(db)
    raise TypeError(
        f"Flow(db=...) takes a WorkflowDB, an AsyncWorkflowDB, a path or a URL, got "
        f"{type(db).__name__}."
    )
