"""Resume: continue a stopped run from its last checkpoint, under its own run_id.

The checkpoint names the node to run next (by its id in the flow's graph),
so the caller never has to. Claiming the run is a compare-and-swap on its
row, so two processes resuming one run cannot both go on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pocoflow.errors import FlowConfigError, ResumeError, RunNotFoundError
from pocoflow.graph import find_node
from pocoflow.persistence import sql
from pocoflow.persistence.codec import decode_object
from pocoflow.persistence.database import describe_owner
from pocoflow.persistence.delta import rebuild_json, texts_of
from pocoflow.persistence.recorder import Recorder, ResumePoint
from pocoflow.store import Store

if TYPE_CHECKING:
    from pocoflow.engine import NestedResume
    from pocoflow.flow import Flow
    from pocoflow.node import Wired
    from pocoflow.persistence.db import RunRecords

RESUMABLE = ("failed", "cancelled", "paused", "interrupted")


async def resume_run(flow: Flow, run_id: str, updates: Mapping[str, Any] | None) -> Store:
    import anyio.to_thread

    from pocoflow.engine import RunControl, execute, validate_graph

    if flow.db is None:
        raise FlowConfigError(
            f"Flow '{flow.flow_name}' has no database, so it has no runs to resume. Build it "
            "with Flow(..., db_path='pocoflow.db') (or db_url=/db=), the one the run used."
        )
    if updates is not None and not isinstance(updates, Mapping):
        raise TypeError(f"resume(updates=...) takes a mapping of store keys to values, got "
                        f"{type(updates).__name__}.")
    records = flow.db.records
    point = await anyio.to_thread.run_sync(resume_point, records, run_id)
    # everything that can refuse the resume is checked before the run is taken over
    node, nested, inner = None, {}, point
    if point.next_id is not None:
        node = find_node(flow.start, point.next_id)
        if node is None:
            raise ResumeError(
                f"Run '{run_id}' stopped before node '{point.next_id}', which this flow "
                f"'{flow.flow_name}' does not have. Resume it with the flow that started it."
            )
        validate_graph(flow.start)
        nested, inner = await anyio.to_thread.run_sync(descend, records, point, node)
    store = _store(flow, inner, updates, records.allow_pickle)
    await anyio.to_thread.run_sync(take_over, records, point)
    if node is None:  # every step was done: only the run's end is missing
        await anyio.to_thread.run_sync(finish, records, run_id, point.step)
        return store
    control = RunControl(run_id)
    points = {run_id: ResumePoint(point.step, texts_of(point.state), tuple(updates or ()))}
    for child_id, (resume_at, stopped) in nested.items():
        control.nested_resume[child_id] = resume_at
        if resume_at.node is not None:
            points[child_id] = ResumePoint(stopped.step, texts_of(stopped.state))
    return await execute(flow, store, resume_from=node, control=control,
                         first_step=point.step + 1, recorder=Recorder(records, points))


def descend(records: RunRecords, point: StoppedRun, node: Wired,
            ) -> tuple[dict[str, tuple[NestedResume, StoppedRun]], StoppedRun]:
    """Follow a run that stopped inside nested flows down to where it really stopped.

    Returns, per nested child run to re-enter, where it goes on, and the innermost
    stopped run (whose store is the newest).
    """
    from pocoflow.engine import NestedResume
    from pocoflow.flow import Flow

    nested: dict[str, tuple[NestedResume, StoppedRun]] = {}
    run_id, step, innermost = point.run["run_id"], point.step + 1, point
    while isinstance(node, Flow):
        child_id = f"{run_id}.{step}"
        child = stopped_at(records, child_id)
        if child is None:  # the nested flow had no step done: it starts over
            break
        innermost = child
        if child.next_id is None:  # it had finished; the outer run never recorded that
            action = records.last_action(child_id)
            nested[child_id] = (NestedResume(None, child.step + 1, action), child)
            break
        inner = find_node(node.start, child.next_id)
        if inner is None:
            raise ResumeError(
                f"Run '{child_id}' (inside '{point.run['run_id']}') stopped before node "
                f"'{child.next_id}', which nested flow '{node.flow_name}' does not have."
            )
        nested[child_id] = (NestedResume(inner, child.step + 1), child)
        run_id, step, node = child_id, child.step + 1, inner
    return nested, innermost


@dataclass(frozen=True)
class StoppedRun:
    """Where a stopped run stands: its row, last checkpointed store and next node."""

    run: dict[str, Any]
    state: dict[str, Any]  # parsed checkpoint JSON, tags kept
    step: int  # the last checkpointed step (-1: the run's input)
    next_id: str | None  # None: every step was done
    excluded: list[str]


def _store(flow: Flow, point: StoppedRun, updates: Mapping[str, Any] | None,
           allow_pickle: bool) -> Store:
    store = Store({k: decode_object(v, allow_pickle=allow_pickle)
                   for k, v in point.state.items()},
                  name=flow.flow_name, transient=point.excluded)
    if updates:
        store.update(updates)
    return store


def finish(records: RunRecords, run_id: str, last_step: int) -> None:
    """Record the end of a run whose last step was committed before its process died."""
    stamp = sql.now_iso()
    records.commit(sql.StepWrite(
        run_id,
        event_rows=[
            sql.event_row(run_id, "flow_resume", stamp, step=last_step + 1,
                          detail=json.dumps({"from_step": last_step, "updated_keys": []})),
            sql.event_row(run_id, "flow_end", stamp, step=last_step + 1, detail=json.dumps(
                {"note": "every step was done before the process died"})),
        ],
        run_update={"status": "completed", "completed_at": stamp, "total_steps": last_step + 1,
                    "heartbeat_at": stamp}))


def resume_point(records: RunRecords, run_id: str) -> StoppedRun:
    """Read where *run_id* stopped; ResumeError if it cannot be resumed."""
    run = records.get_run(run_id)
    if run is None:
        raise RunNotFoundError(f"No run '{run_id}' in {records.database.safe_url}; "
                               "db.list_runs() shows the runs there.")
    if run["status"] not in RESUMABLE:
        raise ResumeError(_not_resumable(run))
    point = stopped_at(records, run_id, run)
    # a run PocoFlow recorded (it has an owner) whose last step ran, but its end was never
    # written (killed, or cancelled after its last node); 0.2's checkpoints name no next node
    finished = point is not None and point.step >= 0 and point.next_id is None \
        and run.get("owner") is not None
    if point is None or (point.next_id is None and not finished):
        raise ResumeError(
            f"Run '{run_id}' has no checkpoint that says which node runs next (it was "
            "recorded by pocoflow 0.2, or ended). Load its store with "
            "db.load_checkpoint(run_id, step) and use flow.run(store, resume_from=node)."
        )
    return point


def stopped_at(records: RunRecords, run_id: str, run: dict[str, Any] | None = None,
               ) -> StoppedRun | None:
    """The last checkpoint of *run_id*, or (for a top-level run) its input; None if
    neither exists."""
    try:
        rows = records.checkpoint_rows(run_id)
    except RunNotFoundError:
        rows = []
    if rows:
        last = rows[-1]
        excluded = json.loads(last["excluded"]) if last.get("excluded") else []
        return StoppedRun(run or {"run_id": run_id}, rebuild_json(rows), last["step"],
                          last.get("next_node"), excluded)
    if run is None:
        return None
    started = records.get_run_input(run_id) or {}
    if not started.get("input_json"):
        return None
    return StoppedRun(run, json.loads(started["input_json"]), -1, run.get("next_node"), [])


def take_over(records: RunRecords, point: StoppedRun) -> None:
    """Claim the run for this process, if its row is still as read (compare-and-swap)."""
    run = point.run
    stored_status = "running" if run["status"] == "interrupted" else run["status"]
    database = records.database
    with sql.write_connection(database.engine) as conn, conn.begin():
        claimed = sql.claim_run(conn, run["run_id"], stored_status, run.get("owner"),
                                run.get("heartbeat_at"), database.owner)
    if claimed != 1:
        raise ResumeError(f"Run '{run['run_id']}' was taken over by another process while "
                          "this one was resuming it; see db.get_run(run_id).")


def _not_resumable(run: dict[str, Any]) -> str:
    run_id, status = run["run_id"], run["status"]
    if status == "completed":
        return f"Run '{run_id}' already completed; there is nothing to resume."
    if status == "running" and not run.get("owner"):
        return (
            f"Run '{run_id}' is marked running but has no owner process (pocoflow 0.2 left "
            "runs so when it stopped). If it is not running, mark it: db.update_run(run_id, "
            "status='failed'), then load its store with db.load_checkpoint(run_id, step) "
            "and use flow.run(store, resume_from=node)."
        )
    if status == "running":
        owner = describe_owner(run.get("owner"))
        return (
            f"Run '{run_id}' is still running (process {owner['pid']} on {owner['host']}, "
            f"heartbeat {run.get('heartbeat_at')}). Cancel it first, or wait: once its "
            "heartbeat is older than the lease it shows as interrupted and can be resumed."
        )
    return f"Run '{run_id}' is {status}; only {', '.join(RESUMABLE)} runs can be resumed."
