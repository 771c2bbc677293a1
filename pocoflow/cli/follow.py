"""``pocoflow runs tail``: print a database's events as they are recorded."""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from pocoflow.cli.base import (
    OK,
    CLIError,
    clip,
    emit_json_line,
    one_line,
    short_time,
    width,
)
from pocoflow.cli.databases import Context
from pocoflow.cli.runs import STOPPED, event_cells, existing_run

if TYPE_CHECKING:
    from pocoflow.db import WorkflowDB


#: Event ids looked at again on each poll: on PostgreSQL a transaction may commit its
#: events after a later one committed, so ids do not always land in order.
LOOK_BACK = 200
BATCH = 1000


def tail_events(args: argparse.Namespace, ctx: Context) -> int:
    db = ctx.open_existing(args.database, command="pocoflow runs tail")
    try:
        return _follow(db, args, ctx)
    except KeyboardInterrupt:  # Ctrl-C is how a tail ends
        return OK


def _follow(db: WorkflowDB, args: argparse.Namespace, ctx: Context) -> int:
    run_id = args.run_id
    followed: set[str] = set()
    if run_id is not None:
        existing_run(db, run_id, args.database, ctx)
        followed = _family(db, run_id)
    cursor = last_event_id(db)
    if run_id is None:
        history = db.get_events(None, after_id=max(0, cursor - args.lines))
    else:
        history = sorted((e for r in followed for e in db.get_events(r)), key=lambda e: e["id"])
    history = history[-args.lines :] if args.lines else []
    seen = _Seen()
    strangers: set[str] = set()
    # what is already there is history: the look-back below must not print it again
    before = db.get_events(None, after_id=max(0, cursor - LOOK_BACK), limit=LOOK_BACK)
    for event in [*(e for e in before if e["id"] <= cursor), *history]:
        seen.add(event["id"])
    _print_events(history, args.json)
    cursor = max([cursor, *(e["id"] for e in history)])
    while True:
        status = None if run_id is None else _status(db, run_id, ctx)
        while True:
            batch = db.get_events(None, after_id=max(0, cursor - LOOK_BACK), limit=BATCH)
            fresh = [e for e in batch if not seen.has(e["id"])]
            for event in fresh:
                seen.add(event["id"])
            if run_id is not None:
                fresh = [e for e in fresh if _belongs(db, e["run_id"], followed, strangers)]
            _print_events(fresh, args.json)
            if batch:
                cursor = max(cursor, batch[-1]["id"])
            if len(batch) < BATCH:
                break
        if status in STOPPED:
            if not args.json:
                print(f"{one_line(run_id)}: {status}")
            return OK
        sys.stdout.flush()
        time.sleep(args.interval)


def _status(db: WorkflowDB, run_id: str, ctx: Context) -> str:
    run = db.get_run(run_id)
    if run is None:
        shown = ctx.target.shown if ctx.target else db.url
        raise CLIError(f"Run {run_id!r} is gone from {shown} (deleted while followed).")
    return str(run["status"])


def _print_events(events: list[dict[str, Any]], as_json: bool) -> None:
    for event in events:
        if as_json:
            emit_json_line(event)
            continue
        cells = event_cells(event, None)
        step = "" if event["step"] is None else f"step {event['step']}"
        took = f"({cells[5]})" if cells[5] else ""
        line = " ".join(
            str(c)
            for c in (
                short_time(event["ts"]) + event["ts"][19:23],
                event["run_id"],
                f"{event['event']:<11}",
                step,
                cells[3],
                cells[4],
                took,
                cells[6],
            )
            if c != ""
        )
        print(clip(line, max(width(), 80)))


class _Seen:
    """The event ids printed lately (bounded: older ones are past the look-back)."""

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._order: deque[int] = deque()

    def add(self, event_id: int) -> None:
        self._ids.add(event_id)
        self._order.append(event_id)
        while len(self._order) > 4 * (LOOK_BACK + BATCH):
            self._ids.discard(self._order.popleft())

    def has(self, event_id: int) -> bool:
        return event_id in self._ids


def _family(db: WorkflowDB, run_id: str) -> set[str]:
    """A run and the runs of its nested flows, at any depth."""
    found, todo = {run_id}, [run_id]
    while todo:
        for child in db.list_runs(10_000, parent_run_id=todo.pop()):
            if child["run_id"] not in found:
                found.add(child["run_id"])
                todo.append(child["run_id"])
    return found


def _belongs(db: WorkflowDB, run_id: str, followed: set[str], strangers: set[str]) -> bool:
    """Is *run_id* a followed run, or nested in one (learnt as its events appear)?"""
    if run_id in followed:
        return True
    if run_id in strangers:
        return False
    run = db.get_run(run_id)
    parent = run.get("parent_run_id") if run else None
    if parent is not None and _belongs(db, parent, followed, strangers):
        followed.add(run_id)
        return True
    strangers.add(run_id)
    return False


def last_event_id(db: WorkflowDB) -> int:
    """The newest event's id, found with ``get_events(after_id=...)`` probes (doubling,
    then halving), so no whole log is read."""

    def any_after(event_id: int) -> bool:
        return bool(db.get_events(None, after_id=event_id, limit=1))

    if not any_after(0):
        return 0
    low, high = 0, 1  # any_after(low) holds
    while any_after(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if any_after(middle):
            low = middle
        else:
            high = middle
    return high
