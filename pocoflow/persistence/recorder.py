"""The recorder: the event-stream sink that writes a run to the database.

One transaction per step: the step's events, its checkpoint and the run row
are committed together, and the engine awaits that commit before the next
node starts, so a step is done only once it is durable. Nested flows are
recorded as child runs (``parent_run_id``) with their own events and
checkpoint chain, so a resume can go on inside them; their writes to the
shared store also land in the parent's next checkpoint.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pocoflow.events import (
    Event,
    FlowFinished,
    FlowStarted,
    NodeFailed,
    NodeFinished,
    NodeRetried,
    NodeStarted,
)
from pocoflow.graph import describe, node_ids
from pocoflow.persistence.sql import StepWrite, event_row, now_iso
from pocoflow.persistence.sql import iso as _iso
from pocoflow.store import Store

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from pocoflow.persistence.db import RunRecords
    from pocoflow.persistence.delta import DeltaTracker


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run picks up: its last checkpoint, as encoded text per key."""

    step: int  # the last checkpointed step (-1: none, the run's input)
    texts: dict[str, str]
    updated: tuple[str, ...] = ()


class Recorder:
    """Records one top-level run (and the runs of flows nested in it)."""

    sees_nested = True

    def __init__(self, records: RunRecords,
                 resume: Mapping[str, ResumePoint] | None = None) -> None:
        self._records = records
        self._resume = dict(resume or {})  # run_id -> where that (resumed) run picks up
        self._trackers: dict[str, DeltaTracker] = {}  # one checkpoint chain per run
        self._parents: dict[str, str | None] = {}
        self._full_next: set[str] = set()  # runs whose next checkpoint is a full one
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._ids: dict[str, dict[int, str]] = {}  # run_id -> node ids of its flow

    def handle(self, event: Event) -> Awaitable[None] | None:
        if isinstance(event, NodeStarted):
            self._add(event, "node_start", step=event.step, node_name=event.node_name)
            return None
        if isinstance(event, NodeFinished):
            return self._node_finished(event)
        if isinstance(event, NodeRetried):
            self._add(event, "node_retry", step=event.step, node_name=event.node_name,
                      error_msg=str(event.error),
                      detail=json.dumps({"attempt": event.attempt, "delay_s": event.delay_s,
                                         "type": type(event.error).__name__}))
            return None
        if isinstance(event, NodeFailed):
            self._add(event, "node_error", step=event.step, node_name=event.node_name,
                      error_msg=str(event.error),
                      detail=json.dumps({"type": type(event.error).__name__}))
            return None
        if isinstance(event, FlowStarted):
            return self._flow_started(event)
        if isinstance(event, FlowFinished):
            return self._flow_finished(event)
        return None

    def _add(self, event: Event, kind: str, **fields: Any) -> None:
        self._pending.setdefault(event.run_id, []).append(
            event_row(event.run_id, kind, _iso(event.ts), **fields))

    def _take(self, run_id: str) -> list[dict[str, Any]]:
        return self._pending.pop(run_id, [])

    def _commit(self, write: StepWrite) -> Awaitable[None] | None:
        """Commit on this thread when that cannot block (SQLite, no contention), else in
        a worker thread; either way the step is durable before the engine goes on."""
        if self._records.database.writer.commit_now(write):
            return None
        return self._commit_in_thread(write)

    async def _commit_in_thread(self, write: StepWrite) -> None:
        import anyio.to_thread

        await anyio.to_thread.run_sync(functools.partial(self._records.commit, write))

    # ── run start and end ───────────────────────────────────────────────────

    def _flow_started(self, event: FlowStarted) -> Awaitable[None] | None:
        if not self._records.is_open:
            return self._open_then_start(event)
        return self._start(event)

    async def _open_then_start(self, event: FlowStarted) -> None:
        """Open (and migrate) the database in a worker thread, off the event loop."""
        import anyio.to_thread

        await anyio.to_thread.run_sync(self._records.open)
        pending = self._start(event)
        if pending is not None:
            await pending

    def _start(self, event: FlowStarted) -> Awaitable[None] | None:
        records = self._records
        flow = event.flow_ref
        ids = node_ids(flow.start) if flow is not None else {}
        self._ids[event.run_id] = ids
        start_id = ids.get(id(event.start_ref), event.start_node)
        run_id = event.run_id
        self._parents[run_id] = event.parent_run_id
        tracker = self._trackers[run_id] = records.tracker()
        resume = self._resume.pop(run_id, None)
        if resume is not None:
            tracker.load(resume.texts)
        if resume is None or resume.step < 0:
            self._full_next.add(run_id)
        database = records.database
        database.own(event.run_id, records.lease_seconds)
        stamp = _iso(event.ts)
        values: dict[str, Any] = {
            "status": "running", "owner": database.owner, "heartbeat_at": stamp,
            "completed_at": None, "error_msg": None, "current_node": event.start_node,
            "next_node": start_id,
        }
        write = StepWrite(event.run_id)
        if resume is not None:
            write.run_update = values
            self._add(event, "flow_resume", step=event.step, node_name=event.start_node,
                      detail=json.dumps({"from_step": resume.step,
                                         "updated_keys": list(resume.updated)}))
        else:
            values.update(run_id=event.run_id, flow_name=event.flow_name, started_at=stamp,
                          parent_run_id=event.parent_run_id)
            graph = json.dumps(describe(flow)) if flow is not None else None
            store_json = None
            if event.parent_run_id is None:  # a nested flow's input is its parent's store
                store = event.store
                transient = store.transient if isinstance(store, Store) else ()
                store_json = tracker.full(store, transient).store_json
            write.run_input = {"graph_json": graph, "input_json": store_json}
            write.run_insert = values
            self._add(event, "flow_start", node_name=event.start_node)
        write.event_rows = self._take(event.run_id)
        return self._commit(write)

    def _flow_finished(self, event: FlowFinished) -> Awaitable[None] | None:
        error = event.error
        detail = None
        if event.status == "paused" and error is not None:
            detail = json.dumps({"reason": getattr(error, "reason", str(error)),
                                 "data": getattr(error, "data", {})}, default=repr)
        elif error is not None:
            detail = json.dumps({"type": type(error).__name__})
        failed = event.status == "failed"
        self._add(event, "flow_end", step=event.steps, action=event.last_action,
                  error_msg=str(error) if failed and error is not None else None, detail=detail)
        write = StepWrite(event.run_id, event_rows=self._take(event.run_id), run_update={
            "status": event.status, "total_steps": event.steps,
            "completed_at": None if event.status == "paused" else _iso(event.ts),
            "error_msg": str(error) if failed and error is not None else None,
            "heartbeat_at": now_iso(),
        })
        self._trackers.pop(event.run_id, None)
        return self._finish(event.run_id, write)

    def _finish(self, run_id: str, write: StepWrite) -> Awaitable[None] | None:
        try:
            pending = self._commit(write)
        except BaseException:
            self._records.database.disown(run_id)
            raise
        if pending is None:
            self._records.database.disown(run_id)
            return None
        return self._finish_later(run_id, pending)

    async def _finish_later(self, run_id: str, pending: Awaitable[None]) -> None:
        try:
            await pending
        finally:
            self._records.database.disown(run_id)

    # ── steps ───────────────────────────────────────────────────────────────

    def _node_finished(self, event: NodeFinished) -> Awaitable[None] | None:
        run_id = event.run_id
        written = event.changes.written
        ancestor: str | None = run_id
        while ancestor is not None:  # a nested step's writes are its parents' writes too
            if ancestor in self._trackers:
                self._trackers[ancestor].mark_written(written)
            ancestor = self._parents.get(ancestor)
        tracker = self._trackers[run_id]
        following = event.next_ref
        next_id = None
        if following is not None:
            next_id = self._ids.get(run_id, {}).get(id(following), event.next_node)
        store = event.store
        transient = store.transient if isinstance(store, Store) else ()
        try:
            if run_id in self._full_next:
                encoded = tracker.full(store, transient)
                self._full_next.discard(run_id)
            else:
                encoded = tracker.step(store, transient)
        except Exception as exc:  # recorded as this node's error; the run fails on it
            self._add(event, "node_error", step=event.step, node_name=event.node_name,
                      error_msg=str(exc), detail=json.dumps({"type": type(exc).__name__}))
            raise
        stamp = _iso(event.ts)
        rows = self._take(event.run_id)
        rows.append(event_row(event.run_id, "node_end", stamp, step=event.step,
                              node_name=event.node_name, action=event.action,
                              elapsed_ms=event.elapsed_s * 1000))
        write = StepWrite(event.run_id, event_rows=rows, run_update={
            "total_steps": event.step + 1, "heartbeat_at": stamp,
            "current_node": event.next_node or event.node_name, "next_node": next_id,
        })
        write.checkpoint = {
            "run_id": event.run_id, "step": event.step, "node_name": event.node_name,
            "store_json": encoded.store_json, "created_at": stamp,
            "kind": encoded.kind, "next_node": next_id,
            "excluded": json.dumps(encoded.excluded) if encoded.excluded else None,
        }
        return self._commit(write)
