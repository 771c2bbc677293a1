"""The recorder: the event-stream sink that writes a flow's runs to the database.

One transaction per step: the step's events, its checkpoint and the run row
are committed together, and the engine awaits that commit before the next
node starts, so a step is done only once it is durable. A Flow with a
database has one recorder for all its runs; what it knows of a run comes from
the run's events (the graph and node ids arrive with ``FlowStarted``). Nested
flows are recorded as child runs (``parent_run_id``) with their own events
and checkpoint chain, so a resume can go on inside them; their writes to the
shared store also land in the parent's next checkpoint.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from pocoflow.errors import Pause, ResumeError, RunTakenOverError, error_text
from pocoflow.events import (
    Event,
    FlowFinished,
    FlowStarted,
    NodeCancelled,
    NodeFailed,
    NodeFinished,
    NodeRetried,
    NodeStarted,
)
from pocoflow.persistence import rows
from pocoflow.persistence.queue import handed_back_row
from pocoflow.persistence.rows import StepWrite, event_row, iso
from pocoflow.persistence.writer import SchemaMoved, cut_short
from pocoflow.store import Store

if TYPE_CHECKING:
    from pocoflow.persistence.delta import DeltaTracker
    from pocoflow.persistence.records import RunRecords


class _RunState:
    """What the recorder keeps about one run between its events."""

    __slots__ = ("fence", "full_next", "key", "parent", "pending", "tracker")

    def __init__(
        self, key: str, tracker: DeltaTracker, parent: str | None, fence: tuple[str, str]
    ) -> None:
        self.key = key  # the run id as stored (rows.storable): what every row names
        self.tracker = tracker
        self.parent = parent
        self.fence = fence  # (top-level run_id, owner token): every write is fenced by it
        self.full_next = True  # the next checkpoint is a full snapshot
        self.pending: list[dict[str, Any]] = []  # event rows waiting for the step's commit


class _Batch:
    """Writes of one event loop's runs that wait for the same commit."""

    __slots__ = ("done", "errors", "writes")

    def __init__(self) -> None:
        import anyio

        self.writes: list[StepWrite] = []
        self.errors: list[BaseException | None] = []
        self.done = anyio.Event()


async def batched(writer: Any, write: StepWrite) -> None:
    """Commit *write* together with the writes of the other runs of this event loop that
    are ready by then: the first to arrive yields the loop once (so the others' ready
    steps join it) and, if a commit of this loop is still under way (in a worker
    thread), waits for it, gathering all the while; then it commits them all in one
    transaction, on this thread when SQLite lets it without waiting, else in a worker
    thread. One commit at a time per loop, so the busier the loop, the bigger each
    commit. Each step is still durable before its run's next node starts; a cancel
    never cuts a commit short: a run cancelled while its write waits still waits for
    the commit, then stops (the cancel is raised only if the write landed; if it
    failed, its error is).
    """
    import anyio
    import anyio.lowlevel
    import anyio.to_thread

    batches: dict[int, _Batch] = writer.batches
    committing: dict[int, _Batch] = writer.committing
    loop = threading.get_ident()  # a thread runs one event loop at a time
    batch = batches.get(loop)
    if batch is not None:  # a run of this loop is gathering: join it
        index = len(batch.writes)
        batch.writes.append(write)
        try:
            await batch.done.wait()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await batch.done.wait()
            if batch.errors[index] is None:
                raise  # the write landed: the cancel goes on (a failed write raises below)
    else:
        batch = batches[loop] = _Batch()
        index = 0
        batch.writes.append(write)
        try:
            with anyio.CancelScope(shield=True):  # it carries the others' writes too
                await anyio.lowlevel.checkpoint()
                while (under_way := committing.get(loop)) is not None:
                    await under_way.done.wait()
        finally:
            del batches[loop]
        committing[loop] = batch
        try:
            errors = writer.commit_all_now(batch.writes)
            if errors is None:
                with anyio.CancelScope(shield=True):
                    errors = await anyio.to_thread.run_sync(writer.commit_all, batch.writes)
        except BaseException as exc:  # raised here; each other run gets its own error
            errors = [exc, *(cut_short(write, exc) for write in batch.writes[1:])]
        finally:
            del committing[loop]
        batch.errors = errors
        batch.done.set()
    error = batch.errors[index]
    if error is not None:
        raise error


class Recorder:
    """Records every run of one Flow (and the runs of flows nested in it)."""

    sees_nested = True
    critical = True  # its failure fails the step: a step is done only once durable

    def __init__(self, records: RunRecords) -> None:
        self._records = records
        self._runs: dict[str, _RunState] = {}  # by the engine's run id
        self._engine_ids: dict[str, str] = {}  # stored run id -> engine's, where they differ
        self._graph_json: tuple[Any, str | None] = (None, None)  # last graph, as JSON

    def handle(self, event: Event) -> Awaitable[None] | None:
        if isinstance(event, FlowStarted):
            return self._flow_started(event)
        state = self._runs.get(event.run_id)
        if state is None:  # a run whose start was never recorded (it was refused)
            return None
        if isinstance(event, NodeStarted):
            self._add(state, event, "node_start", step=event.step, node_name=event.node_name)
            return None
        if isinstance(event, NodeFinished):
            return self._node_finished(state, event)
        if isinstance(event, NodeRetried):
            self._add(
                state,
                event,
                "node_retry",
                step=event.step,
                node_name=event.node_name,
                error_msg=error_text(event.error),
                detail=rows.detail(
                    attempt=event.attempt, delay_s=event.delay_s, type=type(event.error).__name__
                ),
            )
            return None
        if isinstance(event, NodeFailed):
            self._add(
                state,
                event,
                "node_error",
                step=event.step,
                node_name=event.node_name,
                error_msg=error_text(event.error),
                detail=rows.detail(type=type(event.error).__name__),
            )
            return None
        if isinstance(event, NodeCancelled):
            self._add(
                state,
                event,
                "node_cancel",
                step=event.step,
                node_name=event.node_name,
                elapsed_ms=event.elapsed_s * 1000,
            )
            return None
        if isinstance(event, FlowFinished):
            return self._flow_finished(state, event)
        return None

    @staticmethod
    def _add(state: _RunState, event: Event, kind: str, **fields: Any) -> None:
        state.pending.append(event_row(state.key, kind, iso(event.ts), **fields))

    @staticmethod
    def _take(state: _RunState) -> list[dict[str, Any]]:
        taken, state.pending = state.pending, []
        return taken

    def _commit(self, write: StepWrite, *, gather: bool = False) -> Awaitable[None] | None:
        """Commit on this thread when that cannot block (SQLite, no contention), else in
        a worker thread; either way the step is durable before the engine goes on. When
        this process runs several runs of the database at once, the writes ready in one
        turn of the event loop share one transaction (see :func:`batched`); so do the
        starts of runs begun together (*gather*: a task group starting many runs). A run
        taken over by another process is forgotten: it writes nothing more."""
        database = self._records.database
        if gather or database.runs_in_flight > 1:
            return self._batched(database.writer, write)
        try:
            if self._records.commit_now(write):
                return None
        except RunTakenOverError:
            self._forget_stored(write.top_run)
            raise
        return self._commit_in_thread(write)

    async def _batched(self, writer: Any, write: StepWrite) -> None:
        try:
            await batched(writer, write)
        except SchemaMoved:  # nothing written: the one-write path looks at the schema again
            await self._commit_in_thread(write)
        except RunTakenOverError:
            self._forget_stored(write.top_run)
            raise

    async def _commit_in_thread(self, write: StepWrite) -> None:
        import anyio.to_thread

        try:
            await anyio.to_thread.run_sync(functools.partial(self._records.commit, write))
        except RunTakenOverError:
            self._forget_stored(write.top_run)
            raise

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
        database = records.database
        run_id = event.run_id
        key = rows.storable(run_id)
        stamp = iso(event.ts)
        parent = self._runs.get(event.parent_run_id) if event.parent_run_id else None
        claimed = database.token_of(key) if parent is None else None
        store_json = None
        input_excluded: list[str] = []
        tracker = records.tracker()
        if parent is None and claimed is None:  # a nested flow's input is its parent's,
            # a queued run's was written when it was submitted; encoded before anything is
            # kept of the run: a store checkpoints cannot hold fails it with nothing written
            encoded = tracker.full(*_contents(event.store))
            store_json, input_excluded = encoded.store_json, encoded.excluded
        if parent is not None:  # a nested flow's run: fenced by the top-level run's owner
            fence = parent.fence
        elif claimed is not None:  # a resume or a worker claimed the existing row for us
            fence = (key, claimed)
        elif event.resumed:
            raise ResumeError(
                f"Run '{key}' was not claimed by this process; resume it with flow.resume(run_id)."
            )
        else:
            fence = (key, database.claim_token())
        state = _RunState(key, tracker, event.parent_run_id, fence)  # (its first step
        # is a full snapshot: see _RunState.full_next)
        self._runs[run_id] = state
        if parent is None:
            database.run_begins()
        if key is not run_id:
            self._engine_ids[key] = run_id
        write = StepWrite(key, fence=fence)
        if claimed is not None:
            write.run_update = rows.resumed_run(
                stamp, fence[1], event.start_node, event.start_node_id
            )
            write.lazy = True  # its claim was committed: this start need not wait the disk
        else:
            write.run_insert = rows.started_run(
                key,
                event.flow_name,
                stamp,
                fence[1],
                event.start_node,
                event.start_node_id,
                parent.key if parent is not None else None,
            )
            if event.forked_from is not None:
                origin, step = event.forked_from
                write.run_insert["forked_from"] = rows.storable(origin)
                write.run_insert["forked_at_step"] = step
            write.new_run = parent is None
            write.rerun = parent is not None and event.resumed
        if event.resumed:
            self._add(
                state,
                event,
                "flow_resume",
                step=event.step,
                node_name=event.start_node,
                detail=rows.detail(from_step=event.step - 1, updated_keys=sorted(event.written)),
            )
        else:
            if claimed is None:  # a queued run's input was written when it was submitted
                write.run_input = rows.run_input(self._json_of(event.graph), store_json)
            self._add(
                state,
                event,
                "flow_start",
                node_name=event.start_node,
                # keys the input left out stay transient if the run goes on from it
                detail=rows.detail(excluded=input_excluded) if input_excluded else None,
            )
        write.event_rows = self._take(state)
        try:
            pending = self._commit(write, gather=parent is None)
        except BaseException:
            self._forget(run_id, ended=False)
            raise
        owner = (run_id, fence[1], records.lease_seconds, parent is None)
        if pending is None:
            self._own(*owner)
            return None
        return self._own_when_done(pending, *owner)

    def _json_of(self, graph: dict[str, Any] | None) -> str | None:
        """*graph* as JSON, encoded once for the runs that share it (see graph_data)."""
        if graph is None:
            return None
        last, text = self._graph_json
        if last is not graph:
            text = json.dumps(graph)
            self._graph_json = (graph, text)
        return text

    def _own(self, run_id: str, token: str, lease: float, top_level: bool) -> None:
        """Heartbeat the run from now on (once its row exists, so the watcher never
        mistakes a row not yet written for a run taken over)."""
        state = self._runs.get(run_id)
        if state is not None:
            self._records.database.own(
                state.key, token, lease, top_level=top_level, control_id=run_id
            )

    async def _own_when_done(
        self, pending: Awaitable[None], run_id: str, token: str, lease: float, top_level: bool
    ) -> None:
        import anyio

        try:
            await pending
        except anyio.get_cancelled_exc_class():
            # a cancel raised once the start's commit landed (see batched): the run is
            # recorded, so it is owned, and the end the engine emits next is recorded
            self._own(run_id, token, lease, top_level)
            raise
        except BaseException:
            self._forget(run_id, ended=False)
            raise
        self._own(run_id, token, lease, top_level)

    def _flow_finished(self, state: _RunState, event: FlowFinished) -> Awaitable[None] | None:
        try:
            pending = self._commit(self._end_write(state, event))
        except BaseException:  # not written: the run reads as interrupted, resumable
            self._forget(event.run_id, ended=False)
            raise
        if pending is None:
            self._forget(event.run_id)
            return None
        return self._forget_when_done(event.run_id, pending)

    def _end_write(self, state: _RunState, event: FlowFinished) -> StepWrite:
        """The write of a run's end: its flow_end event and its run row."""
        error = event.error
        detail = None
        if event.status == "paused" and error is not None:
            reason = error.reason if isinstance(error, Pause) else error_text(error)
            detail = rows.detail(reason=reason, data=getattr(error, "data", {}))
        elif error is not None:
            detail = rows.detail(type=type(error).__name__)
        elif event.unmatched_action is not None:
            detail = rows.detail(unmatched_action=event.unmatched_action)
        failed = event.status == "failed"
        error_msg = error_text(error) if failed and error is not None else None
        self._add(
            state,
            event,
            "flow_end",
            step=event.steps,
            action=event.last_action,
            error_msg=error_msg,
            detail=detail,
        )
        update, ended = (
            rows.run_ended(event.status, event.steps, iso(event.ts), error_msg),
            state.parent is None,
        )
        back = (
            handed_back_row(state.key, event.steps, iso(event.ts))
            if ended and event.status == "cancelled"
            else None
        )
        if back is not None:  # a stopping worker hands the run back: queued, not ended
            update, ended = back, False
        return StepWrite(
            state.key,
            event_rows=self._take(state),
            run_update=update,
            fence=state.fence,
            ended=ended,
        )

    async def _forget_when_done(self, run_id: str, pending: Awaitable[None]) -> None:
        import anyio

        try:
            await pending
        except anyio.get_cancelled_exc_class():  # raised once the end's commit landed
            self._forget(run_id)
            raise
        except BaseException:
            self._forget(run_id, ended=False)
            raise
        self._forget(run_id)

    def _forget(self, run_id: str, *, ended: bool = True) -> None:
        """Stop recording (and heartbeating) a run, by the engine's run id. A run whose
        end could not be written (``ended=False``: the database failed) is marked
        abandoned, so this process can resume it without waiting out its lease."""
        state = self._runs.pop(run_id, None)
        key = state.key if state is not None else rows.storable(run_id)
        self._engine_ids.pop(key, None)
        database = self._records.database
        if not ended and state is not None:
            database.abandon(state.fence[1])
        database.disown(key)
        if state is not None and state.parent is None:
            database.run_begins(-1)

    def _forget_stored(self, key: str) -> None:
        """:meth:`_forget` by the run id as stored."""
        self._forget(self._engine_ids.get(key, key))

    # ── steps ───────────────────────────────────────────────────────────────

    def _node_finished(self, state: _RunState, event: NodeFinished) -> Awaitable[None] | None:
        run_id = state.key
        changes = event.changes
        ancestor: _RunState | None = state
        while ancestor is not None:  # a nested step's changes are its parents' changes too
            ancestor.tracker.note(changes)
            ancestor = self._runs.get(ancestor.parent) if ancestor.parent else None
        tracker = state.tracker
        data, transient = _contents(event.store)
        if state.full_next:
            encoded = tracker.full(data, transient)
            state.full_next = False
        else:
            if event.next_node is None:  # the run's last step: look at every key once
                tracker.compare_everything()
            encoded = tracker.step(data, transient)
        stamp = iso(event.ts)
        found = self._take(state)
        found.append(
            event_row(
                run_id,
                "node_end",
                stamp,
                step=event.step,
                node_name=event.node_name,
                action=event.action,
                elapsed_ms=event.elapsed_s * 1000,
            )
        )
        write = StepWrite(
            run_id,
            event_rows=found,
            run_update=rows.step_done(
                event.step + 1, stamp, event.next_node or event.node_name, event.next_node_id
            ),
            checkpoint=rows.checkpoint_row(
                run_id,
                event.step,
                event.node_name,
                encoded.kind,
                encoded.store_json,
                encoded.excluded,
                stamp,
                event.next_node_id,
            ),
            fence=state.fence,
        )
        return self._commit(write)


def _contents(store: Any) -> tuple[Any, frozenset[str]]:
    """A store's data as checkpoints read it (without counting as reads) and its
    transient keys."""
    if isinstance(store, Store):
        return store.untracked(), store.transient
    return store, frozenset()
