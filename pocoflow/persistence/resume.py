"""Resume: where a stopped run goes on, read from its last checkpoint.

The checkpoint names the node to run next (by its id in the flow's graph),
so the caller never has to. :func:`prepare_resume` turns that into a
:class:`~pocoflow.graph.Start` and the store to start from; the engine then
runs it like any other run. Claiming the run is a compare-and-swap on its
row, so two processes resuming one run cannot both go on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pocoflow.errors import CheckpointEncodeError, FlowConfigError, ResumeError, RunNotFoundError
from pocoflow.graph import Start, find_node, nested_start, validate_graph
from pocoflow.persistence.codec import decode_state, parse_stored
from pocoflow.persistence.database import describe_owner
from pocoflow.persistence.delta import rebuild_json
from pocoflow.persistence.rows import check_step, excluded_keys
from pocoflow.store import Store

if TYPE_CHECKING:
    from pocoflow.flow import Flow
    from pocoflow.node import Wired
    from pocoflow.persistence.records import RunRecords

RESUMABLE = ("failed", "cancelled", "paused", "interrupted")
#: Levels of nested flows looked through to name a nested run's top-level run.
MAX_NESTING = 100


async def prepare_resume(
    flow: Flow,
    run_id: str,
    updates: Mapping[str, Any] | None,
) -> tuple[Start, Store]:
    """Check that *run_id* can go on with *flow*, claim it, and say where it starts."""
    import anyio.to_thread

    if flow.db is None:
        raise FlowConfigError(
            f"Flow '{flow.flow_name}' has no database, so it has no runs to resume. Build it "
            "with Flow(..., db_path='pocoflow.db') (or db_url=/db=), the one the run used."
        )
    check_updates(updates, "resume")  # refused before the claim, as db.resume refuses it
    records = flow.db.records
    return await anyio.to_thread.run_sync(_prepare, flow, records, run_id, updates)


def _prepare(
    flow: Flow, records: RunRecords, run_id: str, updates: Mapping[str, Any] | None
) -> tuple[Start, Store]:
    point = resume_point(records, run_id)
    # everything that can refuse the resume is checked before the run is taken over
    start, store = _going_on(flow, records, point, updates)
    if not records.claim(point.run):
        raise ResumeError(
            f"Run '{run_id}' was taken over by another process while this one "
            "was resuming it; see db.get_run(run_id)."
        )
    return start, store


def _going_on(
    flow: Flow, records: RunRecords, point: StoppedRun, updates: Mapping[str, Any] | None
) -> tuple[Start, Store]:
    """Where *point*'s run goes on with *flow*, and the store it goes on with."""
    run_id = point.run["run_id"]
    if point.next_id is None:  # every step was done: only the run's end is missing
        start, innermost = (
            Start(
                step=point.step + 1,
                resumed=True,
                done=True,
                last_action=records.last_action(run_id),
            ),
            point,
        )
    else:
        node = find_node(flow.start, point.next_id)
        if node is None:
            raise ResumeError(
                f"Run '{run_id}' stopped before node '{point.next_id}', which this flow "
                f"'{flow.flow_name}' does not have. Resume it with the flow that started it."
            )
        inner, innermost = descend(records, run_id, point.step + 1, node)
        start = Start(node=node, step=point.step + 1, resumed=True, inner=inner)
    validate_graph(flow.start)
    return start, _store(flow, innermost or point, updates, records.allow_pickle)


def prepare_claimed(
    flow: Flow,
    records: RunRecords,
    claimed: Mapping[str, Any],
) -> tuple[Start, Store]:
    """Where a run a worker claimed goes on (from its last checkpoint, or its input if it
    never ran a step), with the updates a ``db.resume`` left for it."""
    run_id = claimed["run_id"]
    if claimed.get("input_json") and not claimed.get("attempts"):  # a first start: the
        # claim read its input already, and it has no checkpoint yet
        point: StoppedRun | None = from_input(dict(claimed), claimed["input_json"])
    else:
        point = stopped_at(records, run_id, records.get_run(run_id) or {"run_id": run_id})
    if point is None:
        raise ResumeError(
            f"Run '{run_id}' has neither a checkpoint nor an input to start "
            "from; it was not submitted by flow.submit()."
        )
    updates = None
    if claimed.get("resume_updates"):
        stored = parse_stored(claimed["resume_updates"], f"The updates left for run '{run_id}'")
        updates = decode_state(stored, allow_pickle=records.allow_pickle)
    start, store = _going_on(flow, records, point, updates)
    if point.step < 0 and not updates and not claimed.get("attempts"):  # its first start
        start = Start(node=start.node, step=start.step, inner=start.inner)
    return start, store


def check_updates(updates: Any, doing: str) -> None:
    """Updates for a store: a mapping with str keys (what a checkpoint holds)."""
    if updates is not None and not isinstance(updates, Mapping):
        raise TypeError(
            f"{doing}(updates=...) takes a mapping of store keys to values, got "
            f"{type(updates).__name__}."
        )
    for key in updates or ():
        if not isinstance(key, str):
            raise CheckpointEncodeError(
                f"{doing}(updates=...): store key {key!r} is a {type(key).__name__}; "
                "checkpoints need str keys. Use a string key."
            )


def prepare_fork(
    flow: Flow, records: RunRecords, run_id: str, step: int, updates: Mapping[str, Any] | None
) -> tuple[Start, Store]:
    """A new run from *run_id*'s checkpoint at *step*: it starts at the node that
    checkpoint names next, with its store (and *updates*), numbered on from *step*."""
    check_step(step, run_id)  # (before anything is read: None is not "the last step")
    check_updates(updates, "fork")
    run = records.get_run(run_id)
    if run is not None:  # (none: checkpoint_rows says there is no such run)
        refuse_nested(records, run, "fork")
    found = records.checkpoint_rows(run_id, step)
    last = found[-1]
    point = StoppedRun(
        {"run_id": run_id}, rebuild_json(found), step, last.get("next_node"), excluded_keys(last)
    )
    if point.next_id is None:
        raise ResumeError(
            f"Run '{run_id}' names no node after step {step} (it ended there, "
            "or pocoflow 0.2 recorded it); fork it from an earlier step."
        )
    node = find_node(flow.start, point.next_id)
    if node is None:
        raise ResumeError(
            f"Run '{run_id}' goes on at node '{point.next_id}' after step "
            f"{step}, which flow '{flow.flow_name}' does not have."
        )
    validate_graph(flow.start)
    store = _store(flow, point, updates, records.allow_pickle)
    return Start(node=node, step=step + 1, forked_from=(run_id, step)), store


def descend(
    records: RunRecords,
    run_id: str,
    step: int,
    node: Wired,
) -> tuple[Start | None, StoppedRun | None]:
    """Where the nested flow *node* (run as step *step* of *run_id*) goes on, if the run
    stopped inside it; and the innermost stopped run (whose store is the newest)."""
    inner_start = nested_start(node)
    if inner_start is None:
        return None, None
    child_id = f"{run_id}.{step}"
    child = stopped_at(records, child_id)
    if child is None:  # the nested flow had no step done: it starts over
        return Start(resumed=True), None
    if child.next_id is None:  # it had finished; the outer run never recorded that
        return Start(
            step=child.step + 1, resumed=True, done=True, last_action=records.last_action(child_id)
        ), child
    inner = find_node(inner_start, child.next_id)
    if inner is None:
        raise ResumeError(
            f"Run '{child_id}' (inside '{run_id}') stopped before node '{child.next_id}', "
            f"which nested flow '{node.name}' does not have."
        )
    deeper, innermost = descend(records, child_id, child.step + 1, inner)
    return Start(node=inner, step=child.step + 1, resumed=True, inner=deeper), innermost or child


@dataclass(frozen=True)
class StoppedRun:
    """Where a stopped run stands: its row, last checkpointed store and next node."""

    run: dict[str, Any]
    state: dict[str, Any]  # parsed checkpoint JSON, tags kept
    step: int  # the last checkpointed step (-1: the run's input)
    next_id: str | None  # None: every step was done
    excluded: list[str]


def _store(
    flow: Flow, point: StoppedRun, updates: Mapping[str, Any] | None, allow_pickle: bool
) -> Store:
    store = Store(
        decode_state(point.state, allow_pickle=allow_pickle),
        name=flow.flow_name,
        transient=point.excluded,
    )
    if updates:
        store.update(updates)
    return store


def resume_point(records: RunRecords, run_id: str) -> StoppedRun:
    """Read where *run_id* stopped; ResumeError if it cannot be resumed."""
    run = records.get_run(run_id)
    if run is None:
        raise RunNotFoundError(
            f"No run '{run_id}' in {records.safe_url}; db.list_runs() shows the runs there."
        )
    refuse_nested(records, run, "resume")
    if run["status"] not in RESUMABLE:
        raise ResumeError(not_resumable(run))
    point = stopped_at(records, run_id, run)
    # a run PocoFlow recorded (it has an owner) whose last step ran, but its end was never
    # written (killed, or cancelled after its last node); 0.2's checkpoints name no next node
    finished = (
        point is not None
        and point.step >= 0
        and point.next_id is None
        and run.get("owner") is not None
    )
    if point is None or (point.next_id is None and not finished):
        raise ResumeError(
            f"Run '{run_id}' has no checkpoint that says which node runs next (it was "
            "recorded by pocoflow 0.2, or ended). Load its store with "
            "db.load_checkpoint(run_id, step) and use flow.run(store, resume_from=node)."
        )
    return point


def stopped_at(
    records: RunRecords,
    run_id: str,
    run: dict[str, Any] | None = None,
) -> StoppedRun | None:
    """The last checkpoint of *run_id*, or (for a top-level run) its input; None if
    neither exists."""
    try:
        found = records.checkpoint_rows(run_id)
    except RunNotFoundError:
        found = []
    if found:
        last = found[-1]
        return StoppedRun(
            run or {"run_id": run_id},
            rebuild_json(found),
            last["step"],
            last.get("next_node"),
            excluded_keys(last),
        )
    if run is None:
        return None
    started = records.get_run_input(run_id) or {}
    if not started.get("input_json"):
        return None
    return from_input(run, started["input_json"], records.input_excluded(run_id))


def from_input(run: dict[str, Any], input_json: str, excluded: Sequence[str] = ()) -> StoppedRun:
    """Where a run that has no checkpoint goes on: its input, before its first step (a
    fork's first step is numbered on from the step it was forked at), the keys the
    input left out (*excluded*) transient again."""
    forked_at = run.get("forked_at_step")
    step = -1 if forked_at is None else forked_at
    state = parse_stored(input_json, f"The stored input of run {run.get('run_id', '?')!r}")
    return StoppedRun(run, state, step, run.get("next_node"), list(excluded))


def refuse_nested(
    records: RunRecords,
    run: dict[str, Any],
    doing: str,
    error: type[Exception] = ResumeError,
) -> None:
    """A nested flow's run is acted on through the top-level run it belongs to: it goes
    on, or stops, with it (alone, a worker would never take it up, and its parent would
    not follow). *error* (ResumeError) naming that run."""
    top = run.get("parent_run_id")
    if top is None:
        return
    for _ in range(MAX_NESTING):
        above = records.get_run(top)
        if above is None or above.get("parent_run_id") is None:
            break
        top = above["parent_run_id"]
    raise error(
        f"Run '{run['run_id']}' is a nested flow's run, inside run '{top}': {doing} run "
        f"'{top}' instead (its nested flows go on, or stop, with it)."
    )


def not_resumable(run: dict[str, Any]) -> str:
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
