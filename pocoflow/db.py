"""WorkflowDB and AsyncWorkflowDB: the run database, blocking and awaitable.

pocoflow 0.2's ``from pocoflow.db import WorkflowDB`` and its methods, on
SQLite or PostgreSQL: both take a file path (SQLite) or a SQLAlchemy URL and
return plain dicts with 0.2's keys (plus the new columns). Both facades only
delegate to :class:`pocoflow.persistence.records.RunRecords`, the one
implementation; their methods are generated from it (see
:mod:`pocoflow.persistence.facades`), so the two can never drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pocoflow.persistence.delta import FULL_EVERY
from pocoflow.persistence.records import LEASE_SECONDS, RunRecords, Target
from pocoflow.persistence.watch import RunWatcher
from pocoflow.store import Store

T = TypeVar("T")

__all__ = ["AsyncWorkflowDB", "WorkflowDB", "schema_revision", "upgrade_schema"]


class AsyncWorkflowDB:
    """The run database, awaitable: runs, events, checkpoints of every flow.

    ``AsyncWorkflowDB("pocoflow.db")`` or ``AsyncWorkflowDB("postgresql+asyncpg://...")``;
    the parameter is named ``db_path`` as in pocoflow 0.2, and takes either.
    The database is opened (and migrated to the current schema) on first use.
    ``lease_seconds``: a running run whose heartbeat is older shows as
    ``interrupted``. ``allow_pickle``: checkpoint values no codec handles are
    pickled (trusted databases only). ``full_every``: steps between full
    snapshots at most. Each method runs in a worker thread, on asyncio or trio.
    """

    def __init__(
        self,
        db_path: Target,
        *,
        lease_seconds: float = LEASE_SECONDS,
        allow_pickle: bool = False,
        full_every: int = FULL_EVERY,
    ) -> None:
        if isinstance(db_path, (WorkflowDB, AsyncWorkflowDB)):
            raise TypeError(
                f"Pass a path or URL, not a {type(db_path).__name__}; use it "
                "directly (Flow(db=...) takes either)."
            )
        self.records = RunRecords(
            db_path, lease_seconds=lease_seconds, allow_pickle=allow_pickle, full_every=full_every
        )
        self._given = db_path

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self.records.safe_url

    @property
    def db_path(self) -> Path | None:
        """The SQLite file: the path as given (0.2 kept it so, relative or not), or the
        file a ``sqlite://`` URL names; None for other databases."""
        given = self._given
        if isinstance(given, os.PathLike) or (isinstance(given, str) and "://" not in given):
            return Path(given)
        url = self.records.url
        return Path(url.database) if url.get_backend_name() == "sqlite" and url.database else None

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

    def watch(self, run_id: str) -> RunWatcher:
        """Follow run *run_id* from this process (what ``RunHandle.for_run`` uses)."""
        return RunWatcher(self.records, run_id)

    # ── generated from RunRecords by pocoflow.persistence.facades: do not edit ──

    async def create_run(self, run_id: str, flow_name: str = "") -> None:
        """Insert a run with status ``running`` (ignored if the run_id exists)."""
        return await self._call(self.records.create_run, run_id, flow_name)

    async def update_run(self, run_id: str, **fields: Any) -> None:
        """Set fields of a run: status, completed_at, total_steps, current_node, error_msg..."""
        return await self._call(self.records.update_run, run_id, **fields)

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run as a dict, or None."""
        return await self._call(self.records.get_run, run_id)

    async def list_runs(
        self,
        limit: int = 100,
        *,
        offset: int = 0,
        status: str | None = None,
        flow_name: str | None = None,
        parent_run_id: str | None = None,
        include_nested: bool = False,
        search: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest runs first, filtered and paged.

        ``status`` (``interrupted`` too), ``flow_name``, ``search`` (a substring of the
        run_id or the error message), ``since``/``until`` (start time, a datetime or
        ISO-8601 text). Nested flows' child runs are left out unless
        ``include_nested`` or ``parent_run_id`` asks for them.
        """
        return await self._call(
            self.records.list_runs,
            limit,
            offset=offset,
            status=status,
            flow_name=flow_name,
            parent_run_id=parent_run_id,
            include_nested=include_nested,
            search=search,
            since=since,
            until=until,
        )

    async def count_runs(
        self,
        *,
        flow_name: str | None = None,
        include_nested: bool = False,
        search: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> dict[str, int]:
        """Runs per status among those the filters cover (see :meth:`list_runs`), with
        ``interrupted`` told apart from ``running``.
        """
        return await self._call(
            self.records.count_runs,
            flow_name=flow_name,
            include_nested=include_nested,
            search=search,
            since=since,
            until=until,
        )

    async def get_run_input(self, run_id: str) -> dict[str, Any] | None:
        """The graph (``graph_json``) and input store (``input_json``) a run started with."""
        return await self._call(self.records.get_run_input, run_id)

    async def save_event(self, run_id: str, event: str, **kw: Any) -> None:
        """Append an event: step, node_name, action, elapsed_ms, error_msg, ts, detail."""
        return await self._call(self.records.save_event, run_id, event, **kw)

    async def get_events(
        self,
        run_id: str | None,
        *,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """A run's events in the order they happened (``run_id=None``: every run's);
        ``after_id`` keeps only those newer than that event id, to follow a log.
        """
        return await self._call(self.records.get_events, run_id, after_id=after_id, limit=limit)

    async def save_checkpoint(
        self,
        run_id: str,
        step: int,
        node_name: str,
        store: Store | Mapping[str, Any],
    ) -> None:
        """Write a full snapshot of *store* as the checkpoint of *step* (replacing one
        written before, as in 0.2).
        """
        return await self._call(self.records.save_checkpoint, run_id, step, node_name, store)

    async def get_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        """A run's checkpoints by step, each ``store_json`` the full store."""
        return await self._call(self.records.get_checkpoints, run_id)

    async def load_checkpoint(self, run_id: str, step: int) -> Store:
        """The Store as it was after *step*; ``KeyError`` if there is no such checkpoint."""
        return await self._call(self.records.load_checkpoint, run_id, step)

    async def last_action(self, run_id: str) -> str | None:
        """The action of the run's last finished node (None: no node finished)."""
        return await self._call(self.records.last_action, run_id)

    async def checkpoint_steps(self, run_id: str) -> list[dict[str, Any]]:
        """A run's checkpoints without their stores: step, node_name, kind, created_at,
        next_node (cheap, for a step slider).
        """
        return await self._call(self.records.checkpoint_steps, run_id)

    async def get_checkpoint_json(self, run_id: str, step: int) -> dict[str, Any]:
        """The store after *step* as stored: JSON values, with the codec's tagged objects
        (``{"__pf__": ...}``) left as they are. Nothing is decoded, so nothing a
        database holds is imported or run: safe to show from any database.
        """
        return await self._call(self.records.get_checkpoint_json, run_id, step)

    async def cancel_run(self, run_id: str) -> str:
        """Stop a run from any process: ``"requested"`` for a running run (its process
        sees the request within a second and ends it ``cancelled`` with its checkpoint),
        ``"cancelled"`` for one no process runs (queued, paused, interrupted, or left
        running by pocoflow 0.2 with no owner), or its status if it already ended.
        RunNotFoundError if there is no such run.
        """
        return await self._call(self.records.cancel_run, run_id)

    async def resume(self, run_id: str, updates: Mapping[str, Any] | None = None) -> str:
        """Put a paused (or failed, cancelled, interrupted) run back in its queue for the
        workers, with *updates* for its store (a human's answer): a worker writes them
        to the store and goes on at the node the run stopped at; nothing before it runs
        again. Returns the queue. Works from any process; a run that was not queued goes
        to the ``default`` queue. To go on in this process instead: flow.resume(run_id).
        """
        return await self._call(self.records.resume, run_id, updates)

    async def delete_runs(
        self,
        older_than: timedelta | datetime | str,
        *,
        status: str | None = None,
        batch: int = 500,
    ) -> dict[str, int]:
        """Delete runs that ended (completed, failed or cancelled; or only *status*) before
        *older_than* (an age, or a time), with their nested runs, events, checkpoints and
        inputs, *batch* runs per transaction so writers are never held up long. Returns the
        rows deleted per table. Runs queued, running or paused are never deleted.
        """
        return await self._call(self.records.delete_runs, older_than, status=status, batch=batch)
    # ── end of generated methods ──


class WorkflowDB:
    """Blocking version of :class:`AsyncWorkflowDB`; see it for details.

    As in pocoflow 0.2, the database is opened (created, migrated) at once.
    ``WorkflowDB(...).aio`` is the async twin on the same database.
    """

    def __init__(
        self,
        db_path: Target,
        *,
        lease_seconds: float = LEASE_SECONDS,
        allow_pickle: bool = False,
        full_every: int = FULL_EVERY,
    ) -> None:
        self.aio = AsyncWorkflowDB(
            db_path, lease_seconds=lease_seconds, allow_pickle=allow_pickle, full_every=full_every
        )
        self.records = self.aio.records
        self.records.open()

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self.aio.url

    @property
    def db_path(self) -> Path | None:
        """The SQLite file as given (0.2 attribute); None for other databases."""
        return self.aio.db_path

    def __repr__(self) -> str:
        return f"<WorkflowDB {self.url}>"

    def watch(self, run_id: str) -> RunWatcher:
        """Follow run *run_id* from this process (what ``RunHandle.for_run`` uses)."""
        return RunWatcher(self.records, run_id)

    # ── generated from RunRecords by pocoflow.persistence.facades: do not edit ──

    def create_run(self, run_id: str, flow_name: str = "") -> None:
        """Insert a run with status ``running`` (ignored if the run_id exists)."""
        return self.records.create_run(run_id, flow_name)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set fields of a run: status, completed_at, total_steps, current_node, error_msg..."""
        return self.records.update_run(run_id, **fields)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run as a dict, or None."""
        return self.records.get_run(run_id)

    def list_runs(
        self,
        limit: int = 100,
        *,
        offset: int = 0,
        status: str | None = None,
        flow_name: str | None = None,
        parent_run_id: str | None = None,
        include_nested: bool = False,
        search: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest runs first, filtered and paged.

        ``status`` (``interrupted`` too), ``flow_name``, ``search`` (a substring of the
        run_id or the error message), ``since``/``until`` (start time, a datetime or
        ISO-8601 text). Nested flows' child runs are left out unless
        ``include_nested`` or ``parent_run_id`` asks for them.
        """
        return self.records.list_runs(
            limit,
            offset=offset,
            status=status,
            flow_name=flow_name,
            parent_run_id=parent_run_id,
            include_nested=include_nested,
            search=search,
            since=since,
            until=until,
        )

    def count_runs(
        self,
        *,
        flow_name: str | None = None,
        include_nested: bool = False,
        search: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> dict[str, int]:
        """Runs per status among those the filters cover (see :meth:`list_runs`), with
        ``interrupted`` told apart from ``running``.
        """
        return self.records.count_runs(
            flow_name=flow_name,
            include_nested=include_nested,
            search=search,
            since=since,
            until=until,
        )

    def get_run_input(self, run_id: str) -> dict[str, Any] | None:
        """The graph (``graph_json``) and input store (``input_json``) a run started with."""
        return self.records.get_run_input(run_id)

    def save_event(self, run_id: str, event: str, **kw: Any) -> None:
        """Append an event: step, node_name, action, elapsed_ms, error_msg, ts, detail."""
        return self.records.save_event(run_id, event, **kw)

    def get_events(
        self,
        run_id: str | None,
        *,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """A run's events in the order they happened (``run_id=None``: every run's);
        ``after_id`` keeps only those newer than that event id, to follow a log.
        """
        return self.records.get_events(run_id, after_id=after_id, limit=limit)

    def save_checkpoint(
        self,
        run_id: str,
        step: int,
        node_name: str,
        store: Store | Mapping[str, Any],
    ) -> None:
        """Write a full snapshot of *store* as the checkpoint of *step* (replacing one
        written before, as in 0.2).
        """
        return self.records.save_checkpoint(run_id, step, node_name, store)

    def get_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        """A run's checkpoints by step, each ``store_json`` the full store."""
        return self.records.get_checkpoints(run_id)

    def load_checkpoint(self, run_id: str, step: int) -> Store:
        """The Store as it was after *step*; ``KeyError`` if there is no such checkpoint."""
        return self.records.load_checkpoint(run_id, step)

    def last_action(self, run_id: str) -> str | None:
        """The action of the run's last finished node (None: no node finished)."""
        return self.records.last_action(run_id)

    def checkpoint_steps(self, run_id: str) -> list[dict[str, Any]]:
        """A run's checkpoints without their stores: step, node_name, kind, created_at,
        next_node (cheap, for a step slider).
        """
        return self.records.checkpoint_steps(run_id)

    def get_checkpoint_json(self, run_id: str, step: int) -> dict[str, Any]:
        """The store after *step* as stored: JSON values, with the codec's tagged objects
        (``{"__pf__": ...}``) left as they are. Nothing is decoded, so nothing a
        database holds is imported or run: safe to show from any database.
        """
        return self.records.get_checkpoint_json(run_id, step)

    def cancel_run(self, run_id: str) -> str:
        """Stop a run from any process: ``"requested"`` for a running run (its process
        sees the request within a second and ends it ``cancelled`` with its checkpoint),
        ``"cancelled"`` for one no process runs (queued, paused, interrupted, or left
        running by pocoflow 0.2 with no owner), or its status if it already ended.
        RunNotFoundError if there is no such run.
        """
        return self.records.cancel_run(run_id)

    def resume(self, run_id: str, updates: Mapping[str, Any] | None = None) -> str:
        """Put a paused (or failed, cancelled, interrupted) run back in its queue for the
        workers, with *updates* for its store (a human's answer): a worker writes them
        to the store and goes on at the node the run stopped at; nothing before it runs
        again. Returns the queue. Works from any process; a run that was not queued goes
        to the ``default`` queue. To go on in this process instead: flow.resume(run_id).
        """
        return self.records.resume(run_id, updates)

    def delete_runs(
        self,
        older_than: timedelta | datetime | str,
        *,
        status: str | None = None,
        batch: int = 500,
    ) -> dict[str, int]:
        """Delete runs that ended (completed, failed or cancelled; or only *status*) before
        *older_than* (an age, or a time), with their nested runs, events, checkpoints and
        inputs, *batch* runs per transaction so writers are never held up long. Returns the
        rows deleted per table. Runs queued, running or paused are never deleted.
        """
        return self.records.delete_runs(older_than, status=status, batch=batch)
    # ── end of generated methods ──


def schema_revision(target: Target) -> dict[str, str | None]:
    """The schema revision of a database (``before`` and ``after`` alike), this
    PocoFlow's ``head``, and ``exists`` (None for a SQLite file not created yet, which
    this leaves uncreated)."""
    from pocoflow.persistence.migrate import schema_status

    return schema_status(target)


def upgrade_schema(target: Target) -> dict[str, str | None]:
    """Bring a database to this PocoFlow's schema (creating it if new); the revisions
    ``before`` and ``after``. A database newer than this PocoFlow is refused untouched
    (``DatabaseVersionError``)."""
    from pocoflow.persistence.migrate import schema_status

    return schema_status(target, upgrade_it=True)


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
