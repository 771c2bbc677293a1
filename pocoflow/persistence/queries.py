"""Queries: every read, and the single-row writes of the database API (SQLAlchemy Core).

Each function takes an open Connection and returns plain dicts; ORM objects
never leave this package. The step writes, which run on every step, are
compiled once in :mod:`pocoflow.persistence.writer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Connection

from pocoflow.persistence.models import checkpoints, events, run_inputs, runs
from pocoflow.persistence.rows import now_iso, stored_keys

# ── writes ──────────────────────────────────────────────────────────────────


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
    conn.execute(
        checkpoints.delete().where(
            and_(checkpoints.c.run_id == row["run_id"], checkpoints.c.step == row["step"])
        )
    )
    conn.execute(checkpoints.insert(), row)


def heartbeat(conn: Connection, owned: dict[str, str]) -> list[str]:
    """Refresh the heartbeat of each running run still owned by its token; return the
    runs another owner took over (a run that just ended under its token is not lost).

    Rows locked at this moment (a commit of this process writing that run's step, or a
    takeover in progress) are skipped until the next beat: the heartbeat never waits on
    a row, so it cannot deadlock with the commits it runs beside (PostgreSQL; SQLite's
    single writer lock already orders them)."""
    stamp = now_iso()
    lost: list[str] = []
    ids = sorted(owned)
    for at in range(0, len(ids), _IN_LIST):
        found = conn.execute(
            select(runs.c.run_id, runs.c.owner, runs.c.status)
            .where(runs.c.run_id.in_(ids[at : at + _IN_LIST]))
            .with_for_update(skip_locked=True)
        ).all()
        beating = [r.run_id for r in found if r.owner == owned[r.run_id] and r.status == "running"]
        lost += [r.run_id for r in found if r.owner != owned[r.run_id]]
        if beating:
            conn.execute(update(runs).where(runs.c.run_id.in_(beating)).values(heartbeat_at=stamp))
    return lost


#: Ids per IN list (SQLite allows 32,766 parameters; PostgreSQL 65,535).
_IN_LIST = 1000


def cancel_requested(conn: Connection, run_ids: list[str]) -> list[str]:
    """Which of *run_ids* someone asked to cancel (and are still running)."""
    if not run_ids:
        return []
    query = select(runs.c.run_id).where(
        runs.c.run_id.in_(run_ids),
        runs.c.cancel_requested_at.is_not(None),
        runs.c.status == "running",
    )
    return list(conn.execute(query).scalars())


def claim_run(
    conn: Connection, run_id: str, observed: dict[str, Any], values: dict[str, Any]
) -> int:
    """Write *values* to a run if its status, owner and heartbeat are still as
    *observed* (a compare-and-swap); 1 if it was taken."""

    def same(column: Any, value: Any) -> Any:
        return column.is_(None) if value is None else column == value

    return conn.execute(
        update(runs)
        .where(
            runs.c.run_id == run_id,
            runs.c.status == observed["status"],
            same(runs.c.owner, observed.get("owner")),
            same(runs.c.heartbeat_at, observed.get("heartbeat_at")),
        )
        .values(values)
    ).rowcount


# ── reads ───────────────────────────────────────────────────────────────────


def get_run(conn: Connection, run_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
    return dict(row) if row is not None else None


def run_exists(conn: Connection, run_id: str) -> bool:
    return conn.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first() is not None


@dataclass(frozen=True)
class RunFilter:
    """Which runs a listing or a count covers (None: any)."""

    status: str | None = None  # the stored status
    flow_name: str | None = None
    parent_run_id: str | None = None
    top_level: bool = True  # without parent_run_id: leave nested flows' runs out
    search: str | None = None  # a substring of the run_id or the error message
    since: str | None = None  # started at or after (ISO-8601 UTC)
    until: str | None = None  # started before


def _like(text: str) -> str:
    """*text* as a LIKE pattern that matches it anywhere, its wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filtered(query: Any, where: RunFilter, *, with_status: bool = True) -> Any:
    if with_status and where.status is not None:
        query = query.where(runs.c.status == where.status)
    if where.flow_name is not None:
        query = query.where(runs.c.flow_name == where.flow_name)
    if where.parent_run_id is not None:
        query = query.where(runs.c.parent_run_id == where.parent_run_id)
    elif where.top_level:
        query = query.where(runs.c.parent_run_id.is_(None))
    if where.since is not None:
        query = query.where(runs.c.started_at >= where.since)
    if where.until is not None:
        query = query.where(runs.c.started_at < where.until)
    if where.search:
        pattern = _like(where.search)
        query = query.where(
            or_(
                runs.c.run_id.like(pattern, escape="\\"),
                runs.c.error_msg.like(pattern, escape="\\"),
            )
        )
    return query


def list_runs(
    conn: Connection, where: RunFilter, *, limit: int | None, offset: int
) -> list[dict[str, Any]]:
    """Newest first (an index in this order serves each filter), paged."""
    query = _filtered(select(runs), where)
    query = query.order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
    query = query.limit(limit).offset(offset)
    return [dict(r) for r in conn.execute(query).mappings()]


def count_runs(conn: Connection, where: RunFilter) -> dict[str, int]:
    """Runs per stored status among those *where* covers (its status aside)."""
    query = _filtered(select(runs.c.status, func.count()), where, with_status=False)
    return {status: n for status, n in conn.execute(query.group_by(runs.c.status))}


def get_run_input(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """A run's graph and input store (JSON texts), or None."""
    query = select(run_inputs).where(run_inputs.c.run_id == run_id)
    row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def input_excluded(conn: Connection, run_id: str) -> list[str]:
    """The keys a run's input left out (transient, or not encodable), as its
    ``flow_start`` event lists them; read back as untrusted text."""
    query = (
        select(events.c.detail)
        .where(events.c.run_id == run_id, events.c.event == "flow_start")
        .order_by(events.c.id)
        .limit(1)
    )
    return stored_keys(conn.execute(query).scalar(), "excluded")


def get_events(
    conn: Connection, run_id: str | None, *, after_id: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """Events in the order they were written: of one run, or (run_id None) of every run;
    only those after event id *after_id* (to follow a log as it grows)."""
    query = select(events).where(events.c.id > after_id)
    if run_id is not None:
        query = query.where(events.c.run_id == run_id)
    query = query.order_by(events.c.id).limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]


def checkpoint_steps(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """A run's checkpoints without their payload: step, node, kind, time, next node."""
    query = (
        select(
            checkpoints.c.step,
            checkpoints.c.node_name,
            checkpoints.c.kind,
            checkpoints.c.created_at,
            checkpoints.c.next_node,
        )
        .where(checkpoints.c.run_id == run_id)
        .order_by(checkpoints.c.step)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def request_cancel(conn: Connection, run_id: str, at: str) -> int:
    """Ask the owner of a running run to cancel it (1: asked)."""
    return conn.execute(
        update(runs)
        .where(runs.c.run_id == run_id, runs.c.status == "running")
        .values(cancel_requested_at=at)
    ).rowcount


def cancel_stopped(conn: Connection, run: dict[str, Any], at: str) -> int:
    """Mark a run that no process is running (queued, paused, or interrupted) cancelled,
    if its row is still as read; its owner, if alive but stalled, is fenced out."""
    return claim_run(
        conn,
        run["run_id"],
        run,
        {
            "status": "cancelled",
            "owner": None,
            "completed_at": at,
            "heartbeat_at": at,
            "cancel_requested_at": at,
            "error_msg": "cancelled",
        },
    )


def get_checkpoint_rows(
    conn: Connection,
    run_id: str,
    up_to: int | None = None,
) -> list[dict[str, Any]]:
    """Checkpoint rows of a run by step; with *up_to*, only those a rebuild of that
    step needs (from the last full snapshot at or before it)."""
    query = select(checkpoints).where(checkpoints.c.run_id == run_id)
    if up_to is not None:
        last_full = (
            select(func.max(checkpoints.c.step))
            .where(
                checkpoints.c.run_id == run_id,
                checkpoints.c.step <= up_to,
                checkpoints.c.kind == "full",
            )
            .scalar_subquery()
        )
        query = query.where(
            checkpoints.c.step <= up_to, checkpoints.c.step >= func.coalesce(last_full, up_to)
        )
    query = query.order_by(checkpoints.c.step)
    return [dict(r) for r in conn.execute(query).mappings()]


def last_action(conn: Connection, run_id: str) -> str | None:
    query = (
        select(events.c.action)
        .where(events.c.run_id == run_id, events.c.event == "node_end")
        .order_by(events.c.id.desc())
        .limit(1)
    )
    return conn.execute(query).scalar()


def last_checkpoint_step(conn: Connection, run_id: str) -> int | None:
    query = select(func.max(checkpoints.c.step)).where(checkpoints.c.run_id == run_id)
    return conn.execute(query).scalar()
