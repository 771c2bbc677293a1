"""Rows: every dict keyed by column name that PocoFlow writes, built in one place.

Callers (the recorder, the database API, resume) say what happened; these
functions say which columns that touches. Timestamps are ISO-8601 UTC text
with microseconds, as pocoflow 0.2 wrote them, so they sort as text.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

#: 0.2's column sets: what the 0.2 methods return.
RUN_COLUMNS = (
    "run_id",
    "flow_name",
    "status",
    "started_at",
    "completed_at",
    "total_steps",
    "current_node",
    "error_msg",
)
UPDATABLE = frozenset(RUN_COLUMNS[1:]) | {
    "next_node",
    "owner",
    "heartbeat_at",
    "parent_run_id",
    "cancel_requested_at",
}
EVENT_COLUMNS = (
    "run_id",
    "event",
    "ts",
    "step",
    "node_name",
    "action",
    "elapsed_ms",
    "error_msg",
    "detail",
)
#: The optional fields of an event row (0.2's, plus ``detail``).
EVENT_FIELDS = EVENT_COLUMNS[3:]
CHECKPOINT_COLUMNS = (
    "run_id",
    "step",
    "node_name",
    "store_json",
    "created_at",
    "kind",
    "next_node",
    "excluded",
)

_second: tuple[int, str] = (-1, "")

# ── text every database can store ──────────────────────────────────────────

#: What no database column takes: NUL (PostgreSQL text) and lone surrogates (not UTF-8;
#: os.fsdecode makes them from undecodable file names).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


#: The largest number an INTEGER column holds on every database (steps, counts, limits).
MAX_INTEGER = 2**31 - 1


def is_count(value: Any) -> bool:
    """An int from 0 that an INTEGER column holds (a bool is no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INTEGER


def check_step(step: Any, run_id: str) -> None:
    """TypeError unless *step* names a step of a run: an int from 0."""
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(
            f"step is the number of a step of run '{run_id}' (an int from 0; "
            f"db.checkpoint_steps(run_id) lists them), got {step!r}."
        )


def run_fields(caller: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Run-row fields a caller sets (``db.update_run``), as stored: counts must be ints,
    times datetimes or text, the rest text (or None). TypeError naming the field, before
    anything is written: a count of "abc" would break every later resume of the run."""
    stored: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            stored[name] = None
        elif name == "total_steps":
            if not is_count(value):
                raise TypeError(f"{caller}: total_steps must be an int from 0, got {value!r}.")
            stored[name] = value
        elif name.endswith("_at") and isinstance(value, datetime):
            stored[name] = stored_time(value, name, caller)
        elif isinstance(value, str):
            stored[name] = storable(value)
        else:
            kind = "a datetime or ISO-8601 text" if name.endswith("_at") else "text"
            raise TypeError(f"{caller}: {name} must be {kind} (or None), got {value!r}.")
    return stored


def storable(text: Any) -> Any:
    """*text* as every database can store it: NUL and lone surrogates written as the
    escapes Python's repr shows (``\\x00``, ``\\udcff``); anything else, and non-str
    values, unchanged. Applied to every text column PocoFlow writes (names, actions,
    error messages, run ids), so a message about a badly named file cannot fail the
    write that records it. The same text always maps to the same stored text, so a
    run id is looked up the way it was written."""
    if not isinstance(text, str):
        return text
    if text.isascii():
        if "\x00" not in text:
            return text
    elif _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(_escaped, text)


def iso(ts: float) -> str:
    """UNIX time as UTC ISO-8601 with microseconds (so stored timestamps sort as text).

    The date part is cached per second: this runs several times per step.
    """
    global _second
    whole, micro = divmod(round(ts * 1_000_000), 1_000_000)
    cached = _second
    if cached[0] != whole:
        cached = _second = (
            whole,
            datetime.fromtimestamp(whole, timezone.utc).replace(tzinfo=None).isoformat(),
        )  # (isoformat, not strftime: its years have 4 digits, so they sort as text)
    return f"{cached[1]}.{micro:06d}+00:00"


def stored_time(value: datetime | str, name: str, caller: str) -> str:
    """A time a caller gives (a datetime, naive meaning UTC, or ISO-8601 text) as stored:
    the text :func:`iso` writes, so comparing it with stored times as text is right."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{caller}: {name}={value!r} is not an ISO-8601 time; give a datetime or "
                "text like '2026-11-29T10:00:00+00:00'."
            ) from None
    if not isinstance(value, datetime):
        raise TypeError(
            f"{caller}: {name} must be a datetime or ISO-8601 text, got {type(value).__name__}."
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    except OverflowError:
        raise ValueError(
            f"{caller}: {name}={value!r} is out of range in UTC; give a time between the "
            "years 1 and 9999."
        ) from None


def now_iso() -> str:
    return iso(time.time())


def iso_ago(seconds: float) -> str:
    return iso(time.time() - seconds)


@dataclass
class StepWrite:
    """What one step of one run writes, committed in one transaction.

    ``fence`` is ``(run_id, owner)`` of the top-level run this write belongs to:
    every row is written only if that run is still owned by ``owner`` (a process
    that stalled past its lease and lost the run to another writes nothing).
    A new top-level run (``run_insert`` and ``new_run``) is inserted unfenced,
    and fails if its run_id exists; so does a nested flow's run, fenced, unless it
    is started again after a resume (``rerun``), which resets its own row only.
    """

    run_id: str
    run_insert: dict[str, Any] | None = None
    run_input: dict[str, Any] | None = None  # graph_json, input_json: with a new run only
    run_update: dict[str, Any] | None = None
    event_rows: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    fence: tuple[str, str] | None = None
    new_run: bool = False
    #: a nested flow's run started again after a resume: its row may exist, and is reset
    #: (a first start inserts it, and fails if another run has that id)
    rerun: bool = False
    ended: bool = False  # a top-level run's end: waiters elsewhere are told (PostgreSQL)
    #: commit without waiting for the disk (PostgreSQL): for a claimed run's start, whose
    #: loss in a server crash loses no step (the run's first step commit, which waits,
    #: makes it durable before any node's work counts as done)
    lazy: bool = False

    @property
    def top_run(self) -> str:
        """The top-level run this write belongs to: the one a takeover or an error names."""
        return self.fence[0] if self.fence is not None else self.run_id


# Row builders take run ids already made storable (callers look runs up by them too).

# ── pf_events ───────────────────────────────────────────────────────────────


def event_row(
    run_id: str,
    event: str,
    ts: str,
    *,
    step: int | None = None,
    node_name: str | None = None,
    action: str | None = None,
    elapsed_ms: float | None = None,
    error_msg: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """A pf_events row with every column present (unset fields are NULL), its text made
    :func:`storable` (*run_id* and *event* are given that way already). Runs several
    times a step, so it builds the row in one expression."""
    return {
        "run_id": run_id,
        "event": event,
        "ts": ts,
        "step": step,
        "node_name": None if node_name is None else storable(node_name),
        "action": None if action is None else storable(action),
        "elapsed_ms": elapsed_ms,
        "error_msg": None if error_msg is None else storable(error_msg),
        "detail": None if detail is None else storable(detail),
    }


def check_event_fields(fields: Any) -> None:
    """TypeError naming the fields of *fields* that are no pf_events column."""
    unknown = fields.keys() - EVENT_FIELDS
    if unknown:
        raise TypeError(
            f"Unknown event field(s) {sorted(unknown)}; the fields are "
            f"{sorted({*EVENT_FIELDS, 'ts'})}."
        )


def detail(**fields: Any) -> str:
    """The JSON ``detail`` of an event (pause data, retry attempt, error type). A field
    JSON cannot hold (a circular or too deeply nested value in a Pause's data, or one
    whose repr() raises) is stored as a note saying why, never failing the write: the
    event records the run's end."""
    try:
        return json.dumps(fields, default=repr)
    except Exception:  # (a RecursionError too; or a repr() that raises)
        kept: dict[str, Any] = {}
        for name, value in fields.items():
            try:
                json.dumps(value, default=repr)
                kept[name] = value
            except Exception as exc:
                kept[name] = f"(not stored: {type(exc).__name__}: {exc})"
        return json.dumps(kept, default=repr)


# ── pf_checkpoints ──────────────────────────────────────────────────────────


def checkpoint_row(
    run_id: str,
    step: int,
    node_name: str,
    kind: str,
    store_json: str,
    excluded: list[str],
    created_at: str,
    next_node: str | None = None,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "step": step,
        "node_name": storable(node_name),
        "store_json": store_json,
        "created_at": created_at,
        "kind": kind,
        "next_node": None if next_node is None else storable(next_node),
        "excluded": json.dumps(excluded) if excluded else None,
    }


def excluded_keys(row: dict[str, Any]) -> list[str]:
    """The transient keys a checkpoint row left out on purpose."""
    return stored_keys(row.get("excluded"))


def stored_keys(text: str | None, field: str | None = None) -> list[str]:
    """The store keys a stored JSON list names (under *field* of a JSON object, if
    given); read as untrusted text: what is not a list of str (not JSON, nested too
    deep, another type) names none of them."""
    try:
        value = json.loads(text) if text else None
        if field is not None:
            value = value.get(field) if isinstance(value, dict) else None
    except (ValueError, TypeError, RecursionError):
        return []
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


# ── pf_runs ─────────────────────────────────────────────────────────────────


def created_run(run_id: str, flow_name: str, started_at: str) -> dict[str, Any]:
    """A run as 0.2's ``create_run`` made it (status ``running``, no owner)."""
    return {"run_id": run_id, "flow_name": storable(flow_name), "started_at": started_at}


def started_run(
    run_id: str,
    flow_name: str,
    at: str,
    owner: str,
    node_name: str,
    next_node: str | None,
    parent_run_id: str | None,
) -> dict[str, Any]:
    """A run this process starts and owns."""
    return {
        "run_id": run_id,
        "flow_name": storable(flow_name),
        "started_at": at,
        "parent_run_id": parent_run_id,
        **resumed_run(at, owner, node_name, next_node),
    }


def owned_run(owner: str, at: str) -> dict[str, Any]:
    """A run this process now runs: running, owned by *owner*, its end unset."""
    return {
        "status": "running",
        "owner": owner,
        "heartbeat_at": at,
        "completed_at": None,
        "error_msg": None,
    }


def resumed_run(at: str, owner: str, node_name: str, next_node: str | None) -> dict[str, Any]:
    """A run this process takes up again (a resume): owned, and where it stands."""
    return {
        **owned_run(owner, at),
        "current_node": storable(node_name),
        "next_node": storable(next_node),
    }


def claimed_run(owner: str, at: str) -> dict[str, Any]:
    """A stopped run taken over by a new owner (a resume, a worker's claim): owned, no
    cancel pending."""
    return {**owned_run(owner, at), "cancel_requested_at": None}


def step_done(steps: int, at: str, current_node: str, next_node: str | None) -> dict[str, Any]:
    """The run row after a step: steps so far, where it stands, a fresh heartbeat."""
    return {
        "total_steps": steps,
        "heartbeat_at": at,
        "current_node": storable(current_node),
        "next_node": None if next_node is None else storable(next_node),
    }


def run_ended(status: str, steps: int, at: str, error_msg: str | None) -> dict[str, Any]:
    """The run row at its end (a paused run has no completion time yet; a cancelled one
    has error_msg "cancelled", 0.2's documented way to tell a cancel from a failure)."""
    return {
        "status": status,
        "total_steps": steps,
        "completed_at": None if status == "paused" else at,
        "error_msg": "cancelled" if status == "cancelled" else storable(error_msg),
        "heartbeat_at": at,
    }


def queued_run(
    run_id: str,
    flow_name: str,
    at: str,
    queue: str,
    priority: int,
    dedup_key: str | None,
    not_before: str | None,
    start_node: str,
) -> dict[str, Any]:
    """A run submitted for the workers: queued, no owner; ``started_at`` is when it was
    queued until a worker starts it."""
    return {
        "run_id": run_id,
        "flow_name": storable(flow_name),
        "status": "queued",
        "started_at": at,
        "queue": queue,
        "priority": priority,
        "dedup_key": storable(dedup_key),
        "not_before": not_before,
        "current_node": storable(start_node),
        "next_node": storable(start_node),
        "attempts": 0,
    }


def requeued_run(queue: str, updates_json: str | None) -> dict[str, Any]:
    """A stopped run put back for the workers, with a human's updates for the next one."""
    return {
        "status": "queued",
        "queue": queue,
        "owner": None,
        "completed_at": None,
        "error_msg": None,
        "cancel_requested_at": None,
        "not_before": None,
        "resume_updates": updates_json,
    }


def run_input(graph_json: str | None, input_json: str | None) -> dict[str, Any]:
    return {"graph_json": graph_json, "input_json": input_json}
