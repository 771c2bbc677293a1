"""RunRecords: the one implementation of the run database API (blocking).

``pocoflow.db.AsyncWorkflowDB`` runs these methods in worker threads (so they
work on asyncio and trio) and ``pocoflow.db.WorkflowDB`` calls them directly;
both facades are generated from :data:`API` and the signatures here, so they
cannot drift. Runs come back as plain dicts with pocoflow 0.2's keys (plus
the new columns).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from sqlalchemy.engine import URL

from pocoflow import control
from pocoflow.errors import ResumeError, RunNotFoundError
from pocoflow.events import RUN_STATUSES
from pocoflow.logging import get_logger
from pocoflow.persistence import queries, rows
from pocoflow.persistence.codec import dumps
from pocoflow.persistence.connect import explain, is_memory, safe_url, to_url, write_connection
from pocoflow.persistence.database import Database, owner_is_dead
from pocoflow.persistence.delta import FULL_EVERY, DeltaTracker, apply_row, rebuild, rebuild_json
from pocoflow.persistence.writer import SchemaMoved
from pocoflow.store import Store

T = TypeVar("T")
_log = get_logger("db")

#: Seconds without a heartbeat after which a running run counts as interrupted.
LEASE_SECONDS = 30.0
LIST_STATUSES = (*RUN_STATUSES, "interrupted")

Target = str | os.PathLike[str]

#: The public methods, in the order the facades list them.
API = (
    "create_run",
    "update_run",
    "get_run",
    "list_runs",
    "count_runs",
    "get_run_input",
    "save_event",
    "get_events",
    "save_checkpoint",
    "get_checkpoints",
    "load_checkpoint",
    "last_action",
    "checkpoint_steps",
    "get_checkpoint_json",
    "cancel_run",
    "resume",
    "delete_runs",
)


class RunRecords:
    """The run database of one path or URL: the implementation behind both facades."""

    def __init__(
        self,
        target: Target | URL,
        *,
        lease_seconds: float = LEASE_SECONDS,
        allow_pickle: bool = False,
        full_every: int = FULL_EVERY,
    ) -> None:
        if not isinstance(target, (str, os.PathLike, URL)):
            raise TypeError(
                f"A database is a file path or a SQLAlchemy URL string, got "
                f"{type(target).__name__}."
            )
        if not (isinstance(lease_seconds, (int, float)) and lease_seconds > 0):
            raise ValueError(f"lease_seconds must be a positive number, got {lease_seconds!r}.")
        if not (isinstance(full_every, int) and full_every >= 1):
            raise ValueError(f"full_every must be an int >= 1, got {full_every!r}.")
        self.url = to_url(target)
        if is_memory(self.url):  # its own database: gone with this object
            weakref.finalize(self, Database.forget, self.url)
        self.lease_seconds = float(lease_seconds)
        self.allow_pickle = allow_pickle
        self.full_every = full_every
        self._database: Database | None = None

    @property
    def safe_url(self) -> str:
        return safe_url(self.url)

    @property
    def database(self) -> Database:
        database = self._database
        if database is None or database.forked:  # first use, or a forked child
            database = self._database = Database.open(self.url)
        return database

    @property
    def is_open(self) -> bool:
        return self._database is not None

    def open(self) -> None:
        """Open (create, migrate) the database now rather than on first use."""
        self.database  # noqa: B018

    def tracker(self) -> DeltaTracker:
        return DeltaTracker(full_every=self.full_every, allow_pickle=self.allow_pickle)

    def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        database = self.database
        try:
            with database.engine.connect() as conn:
                try:
                    return fn(conn, *args, **kwargs)
                finally:
                    conn.rollback()
        except Exception as exc:
            explained = explain(exc, self.url)
            if explained is exc:
                raise
            raise explained from exc

    def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        database = self.database
        try:
            with write_connection(database.engine) as conn, conn.begin():
                done = fn(conn, *args, **kwargs)
        except Exception as exc:
            explained = explain(exc, self.url)
            if explained is exc:
                raise
            raise explained from exc
        database.writer.committed()  # (the WAL's bound counts these writes too)
        return done

    # ── runs ────────────────────────────────────────────────────────────────

    def create_run(self, run_id: str, flow_name: str = "") -> None:
        """Insert a run with status ``running`` (ignored if the run_id exists)."""
        _check_id(run_id)
        if not isinstance(flow_name, str):
            raise TypeError(f"create_run: flow_name must be text, got {flow_name!r}.")
        self._write(queries.insert_run, rows.created_run(_key(run_id), flow_name, rows.now_iso()))

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set fields of a run: status, completed_at, total_steps, current_node, error_msg..."""
        unknown = set(fields) - rows.UPDATABLE
        if unknown:  # ignored, as pocoflow 0.2 did, but said
            _log.warning(
                "update_run('%s'): unknown field(s) %s ignored; the fields are %s.",
                run_id,
                sorted(unknown),
                sorted(rows.UPDATABLE),
            )
            fields = {k: v for k, v in fields.items() if k not in unknown}
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise ValueError(
                f"update_run: status {fields['status']!r} is not one of {list(RUN_STATUSES)}."
            )
        if fields:
            self._write(queries.update_run, _key(run_id), rows.run_fields("update_run", fields))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run as a dict, or None."""
        row = self._read(queries.get_run, _key(run_id))
        return self._present(row) if row is not None else None

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
        ``include_nested`` or ``parent_run_id`` asks for them."""
        if status is not None and status not in LIST_STATUSES:
            raise ValueError(f"list_runs: status {status!r} is not one of {list(LIST_STATUSES)}.")
        if not all(isinstance(n, int) and 0 <= n < 2**62 for n in (limit, offset)):
            raise ValueError(
                f"list_runs: limit and offset must be ints >= 0, got {limit!r}, {offset!r}."
            )
        where = _filter(status, flow_name, parent_run_id, include_nested, search, since, until)
        if status in ("running", "interrupted"):
            # liveness is partly decided here (a dead owner pid), so filter after presenting;
            # running rows are few (bounded by what runs at once)
            found = self._read(queries.list_runs, where, limit=None, offset=0)
            kept = [r for r in map(self._present, found) if r["status"] == status]
            return kept[offset : offset + limit]
        found = self._read(queries.list_runs, where, limit=limit, offset=offset)
        return [self._present(row) for row in found]

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
        ``interrupted`` told apart from ``running``."""
        where = _filter(None, flow_name, None, include_nested, search, since, until)

        def read(conn: Any) -> dict[str, int]:
            counts = queries.count_runs(conn, where)
            if counts.get("running"):
                live = queries.list_runs(
                    conn, replace(where, status="running"), limit=None, offset=0
                )
                interrupted = sum(
                    1 for r in map(self._present, live) if r["status"] == "interrupted"
                )
                if interrupted:
                    counts["interrupted"] = interrupted
                    counts["running"] -= interrupted
                    if not counts["running"]:
                        del counts["running"]
            return counts

        return self._read(read)

    def get_run_input(self, run_id: str) -> dict[str, Any] | None:
        """The graph (``graph_json``) and input store (``input_json``) a run started with."""
        return self._read(queries.get_run_input, _key(run_id))

    def input_excluded(self, run_id: str) -> list[str]:
        """The keys a run's input left out: transient again if it goes on from its input."""
        return self._read(queries.input_excluded, _key(run_id))

    def _present(self, row: dict[str, Any]) -> dict[str, Any]:
        """A run row as callers see it: ``interrupted`` if its process is gone."""
        if (
            row["status"] == "running"
            and row.get("owner")
            and (
                (row.get("heartbeat_at") or row["started_at"]) < rows.iso_ago(self.lease_seconds)
                or owner_is_dead(row["owner"])
                or (self._database is not None and row["owner"] in self._database.abandoned)
            )
        ):
            row["status"] = "interrupted"
        return row

    # ── events ──────────────────────────────────────────────────────────────

    def save_event(self, run_id: str, event: str, **kw: Any) -> None:
        """Append an event: step, node_name, action, elapsed_ms, error_msg, ts, detail."""
        if not isinstance(event, str):
            raise TypeError(f"save_event: event must be text (e.g. 'note'), got {event!r}.")
        ts = kw.pop("ts", None) or rows.now_iso()
        rows.check_event_fields(kw)
        self._write(
            queries.insert_event, rows.event_row(_key(run_id), rows.storable(event), ts, **kw)
        )

    def get_events(
        self, run_id: str | None, *, after_id: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """A run's events in the order they happened (``run_id=None``: every run's);
        ``after_id`` keeps only those newer than that event id, to follow a log."""
        if not isinstance(after_id, int) or after_id < 0:
            raise ValueError(f"get_events: after_id must be an event id >= 0, got {after_id!r}.")
        return self._read(queries.get_events, _key(run_id), after_id=after_id, limit=limit)

    def last_action(self, run_id: str) -> str | None:
        """The action of the run's last finished node (None: no node finished)."""
        return self._read(queries.last_action, _key(run_id))

    # ── checkpoints ─────────────────────────────────────────────────────────

    def save_checkpoint(
        self, run_id: str, step: int, node_name: str, store: Store | Mapping[str, Any]
    ) -> None:
        """Write a full snapshot of *store* as the checkpoint of *step* (replacing one
        written before, as in 0.2)."""
        if not rows.is_count(step):
            raise TypeError(f"save_checkpoint: step must be an int from 0, got {step!r}.")
        if not isinstance(node_name, str):
            raise TypeError(f"save_checkpoint: node_name must be text, got {node_name!r}.")
        if not isinstance(store, Mapping):
            raise TypeError(
                f"save_checkpoint: store must be a Store or a dict, got {type(store).__name__}."
            )
        transient = store.transient if isinstance(store, Store) else ()
        encoded = self.tracker().full(store, transient)
        self._write(
            queries.upsert_checkpoint,
            rows.checkpoint_row(
                _key(run_id),
                step,
                node_name,
                "full",
                encoded.store_json,
                encoded.excluded,
                rows.now_iso(),
            ),
        )

    def get_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        """A run's checkpoints by step, each ``store_json`` the full store."""
        found = self._read(queries.get_checkpoint_rows, _key(run_id))
        out: list[dict[str, Any]] = []
        state: dict[str, Any] = {}
        for row in found:
            state = apply_row(state, row)
            out.append({**row, "store_json": dumps(state)})
        return out

    def checkpoint_steps(self, run_id: str) -> list[dict[str, Any]]:
        """A run's checkpoints without their stores: step, node_name, kind, created_at,
        next_node (cheap, for a step slider)."""
        return self._read(queries.checkpoint_steps, _key(run_id))

    def get_checkpoint_json(self, run_id: str, step: int) -> dict[str, Any]:
        """The store after *step* as stored: JSON values, with the codec's tagged objects
        (``{"__pf__": ...}``) left as they are. Nothing is decoded, so nothing a
        database holds is imported or run: safe to show from any database."""
        return rebuild_json(self.checkpoint_rows(run_id, step))

    def load_checkpoint(self, run_id: str, step: int) -> Store:
        """The Store as it was after *step*; ``KeyError`` if there is no such checkpoint."""
        found = self.checkpoint_rows(run_id, step)
        return Store(
            rebuild(found, allow_pickle=self.allow_pickle),
            name=f"{run_id}@step{step}",
            transient=rows.excluded_keys(found[-1]),
        )

    def checkpoint_rows(self, run_id: str, step: int | None = None) -> list[dict[str, Any]]:
        """The rows that rebuild *step* (default: the last step), from a full snapshot on."""
        if step is not None:
            rows.check_step(step, run_id)
        key = _key(run_id)

        def read(conn: Any) -> list[dict[str, Any]]:
            at = step if step is not None else queries.last_checkpoint_step(conn, key)
            if not rows.is_count(at):  # (None, or a step no column holds: no query)
                return []
            return queries.get_checkpoint_rows(conn, key, at)

        found = self._read(read)
        if not found or (step is not None and found[-1]["step"] != step):
            where = f"step {step}" if step is not None else "any step"
            raise RunNotFoundError(
                f"No checkpoint for run_id={run_id!r} at {where} in {self.safe_url}. "
                "List them with db.get_checkpoints(run_id)."
            )
        return found

    # ── acting on runs ──────────────────────────────────────────────────────

    def cancel_run(self, run_id: str) -> str:
        """Stop a run from any process: ``"requested"`` for a running run (its process
        sees the request within a second and ends it ``cancelled`` with its checkpoint),
        ``"cancelled"`` for one no process runs (queued, paused, interrupted, or left
        running by pocoflow 0.2 with no owner), or its status if it already ended.
        RunNotFoundError if there is no such run."""
        from pocoflow.persistence.resume import refuse_nested

        run = self.get_run(run_id)
        if run is None:
            raise RunNotFoundError(
                f"No run '{run_id}' in {self.safe_url}; db.list_runs() shows the runs there."
            )
        refuse_nested(self, run, "cancel", ValueError)
        status = run["status"]
        stamp = rows.now_iso()
        if (
            status == "running"
            and run.get("owner")
            and self._write(queries.request_cancel, run["run_id"], stamp)
        ):
            control.stop(run_id)  # at once, if it runs in this very process
            return "requested"
        if status in ("queued", "paused", "interrupted", "running"):  # running: no owner
            # (pocoflow 0.2 left runs so): no process will act on a request
            observed = {**run, "status": "running" if status == "interrupted" else status}
            if self._write(queries.cancel_stopped, observed, stamp):
                return "cancelled"
            return self.cancel_run(run_id)  # it changed meanwhile: look again
        return status

    def resume(self, run_id: str, updates: Mapping[str, Any] | None = None) -> str:
        """Put a paused (or failed, cancelled, interrupted) run back in its queue for the
        workers, with *updates* for its store (a human's answer): a worker writes them
        to the store and goes on at the node the run stopped at; nothing before it runs
        again. Returns the queue. Works from any process; a run that was not queued goes
        to the ``default`` queue. To go on in this process instead: flow.resume(run_id)."""
        from pocoflow.persistence import queue
        from pocoflow.persistence.resume import (
            RESUMABLE,
            check_updates,
            not_resumable,
            refuse_nested,
        )

        check_updates(updates, "resume")
        run = self.get_run(run_id)
        if run is None:
            raise RunNotFoundError(
                f"No run '{run_id}' in {self.safe_url}; db.list_runs() shows the runs there."
            )
        refuse_nested(self, run, "resume")
        if run["status"] not in RESUMABLE:
            raise ResumeError(not_resumable(run))
        text = None
        if updates:
            encoder = self.tracker()
            text = encoder.full(dict(updates), strict=True).store_json
        observed = {**run, "status": "running" if run["status"] == "interrupted" else run["status"]}
        target = run.get("queue") or "default"
        if not self._write(queue.requeue, observed, rows.requeued_run(target, text)):
            if self.get_run(run_id) is None:
                raise RunNotFoundError(
                    f"Run '{run_id}' was deleted (pocoflow runs gc) while it was being "
                    "resumed; nothing was queued."
                )
            raise ResumeError(
                f"Run '{run_id}' changed while it was being resumed; see db.get_run(run_id)."
            )
        return target

    def delete_runs(
        self, older_than: timedelta | datetime | str, *, status: str | None = None, batch: int = 500
    ) -> dict[str, int]:
        """Delete runs that ended (completed, failed or cancelled; or only *status*) before
        *older_than* (an age, or a time), with their nested runs, events, checkpoints and
        inputs, *batch* runs per transaction so writers are never held up long. Returns the
        rows deleted per table. Runs queued, running or paused are never deleted."""
        from pocoflow.persistence import queue

        if status is not None and status not in queue.ENDED:
            raise ValueError(
                f"delete_runs: status must be one of {list(queue.ENDED)} (runs in "
                f"flight are never deleted), got {status!r}."
            )
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"delete_runs: batch must be an int >= 1, got {batch!r}.")
        if isinstance(older_than, timedelta):
            try:
                older_than = datetime.now(timezone.utc) - older_than
            except OverflowError:
                raise ValueError(
                    f"delete_runs: older_than={older_than!r} reaches past the year 1; give "
                    "a shorter age."
                ) from None
        before = rows.stored_time(older_than, "older_than", "delete_runs")
        statuses = (status,) if status is not None else queue.ENDED
        total = {"runs": 0, "events": 0, "checkpoints": 0, "inputs": 0}
        while True:

            def one_batch(conn: Any) -> dict[str, int]:
                found = queue.old_runs(conn, before, statuses, batch)
                return queue.delete_runs(conn, found) if found else {}

            counts = self._write(one_batch)
            if not counts:
                return total
            for key, count in counts.items():
                total[key] += count

    # ── what the worker and Flow.submit use ─────────────────────────────────

    def submit(self, run: dict[str, Any], inputs: dict[str, Any]) -> str:
        """Record a queued run (rows.queued_run) and its input; its id, or the id of the
        run in flight holding its dedup_key."""
        from pocoflow.persistence import queue

        return self._write(queue.submit, run, inputs)

    def claim_queued(
        self,
        queue_name: str,
        limits: Any,
        *,
        max_attempts: int,
        orphans: bool = True,
    ) -> list[dict[str, Any]]:
        """Claim runs of *queue_name* for this process (see persistence.queue.claim); each
        claimed run is heartbeated under the claim's owner token from now on. *orphans*:
        also take runs whose worker stopped heartbeating (False: queued runs only)."""
        from pocoflow.persistence import queue

        database = self.database
        token = database.claim_token()
        now = rows.now_iso()
        rate_since = rows.iso_ago(limits.per_seconds) if limits.rate is not None else now
        taken, _ = self._write(
            queue.claim,
            queue_name,
            limits,
            owner=token,
            now=now,
            stale_before=rows.iso_ago(self.lease_seconds),
            rate_since=rate_since,
            max_attempts=max_attempts,
            orphans=orphans,
        )
        for row in taken:
            database.own(row["run_id"], token, self.lease_seconds)
        return taken

    def hand_back(self, run_id: str, token: str) -> bool:
        """Give a run this process stopped under *token* (a worker shutting down) back to
        its queue."""
        from pocoflow.persistence import queue

        self.database.disown(run_id)
        return 1 == self._write(queue.hand_back, run_id, token, rows.now_iso())

    # ── what the recorder and resume use ────────────────────────────────────

    def commit(self, write: rows.StepWrite) -> None:
        """Commit a step's write (may wait for locks: call it from a worker thread).
        A new run is refused (DatabaseVersionError, nothing written) if another process
        moved the schema to a revision this PocoFlow does not know."""
        database = self.database
        try:
            database.writer.commit(write)
        except SchemaMoved:
            database.recheck()  # refuses a newer schema; brings an older one to head
            database.writer.commit(write)

    def commit_now(self, write: rows.StepWrite) -> bool:
        """Commit on this thread if that cannot block (SQLite); False: nothing written."""
        try:
            return self.database.writer.commit_now(write)
        except SchemaMoved:
            return False  # commit() (in a worker thread) looks at the schema again

    def claim(self, run: Mapping[str, Any]) -> bool:
        """Take a stopped run over for this process if its row is still as *run* was
        read (a compare-and-swap); False if another process got there first. The new
        owner token fences the old owner out: its writes change nothing from now on."""
        observed = {**run, "status": "running" if run["status"] == "interrupted" else run["status"]}
        database = self.database
        database.recheck()  # a schema another process moved since is refused, untouched
        token = database.claim_token()
        if 1 != self._write(
            queries.claim_run, run["run_id"], observed, rows.claimed_run(token, rows.now_iso())
        ):
            return False
        database.own(run["run_id"], token, self.lease_seconds)
        return True


def _filter(
    status: str | None,
    flow_name: str | None,
    parent_run_id: str | None,
    include_nested: bool,
    search: str | None,
    since: datetime | str | None,
    until: datetime | str | None,
) -> queries.RunFilter:
    stored = "running" if status == "interrupted" else status
    return queries.RunFilter(
        stored,
        rows.storable(flow_name),
        _key(parent_run_id),
        not include_nested,
        rows.storable(search) or None,
        None if since is None else rows.stored_time(since, "since", "list_runs"),
        None if until is None else rows.stored_time(until, "until", "list_runs"),
    )


def _key(run_id: Any) -> Any:
    """A run id as stored: :func:`rows.storable` (an id with a lone surrogate or a NUL
    is written escaped, and looked up the same way)."""
    return rows.storable(run_id)


def _check_id(run_id: Any) -> None:
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"A run_id must be a non-empty str, got {run_id!r}.")
