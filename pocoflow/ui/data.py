"""What the monitor reads, through the public database API only, once per refresh.

:class:`MonitorData` wraps a :class:`pocoflow.db.WorkflowDB` for one render of the
page: each question (a page of runs, a run, its events...) is asked once however
many views show the answer. A run's events are also kept between refreshes
(in the Streamlit session) and only the new ones are read (``after_id``).
Stores are read with ``get_checkpoint_json``, which decodes nothing: a
database opened in the monitor never gets to import or run anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from pocoflow.db import WorkflowDB

T = TypeVar("T")

#: Runs whose events are kept between refreshes (the newest looked at).
EVENT_CACHE_RUNS = 8
#: The step of the run's input store in the Store Inspector (before step 0).
INPUT_STEP = -1
TIME_RANGES: dict[str, timedelta | None] = {
    "any time": None,
    "last hour": timedelta(hours=1),
    "last 24 hours": timedelta(days=1),
    "last 7 days": timedelta(days=7),
    "last 30 days": timedelta(days=30),
}


@dataclass(frozen=True)
class RunFilters:
    """What the runs table shows: ``status`` (``interrupted`` too), exact ``flow_name``,
    ``search`` (in the run id or error), start time in ``[since, until)``, nested runs."""

    status: str | None = None
    flow_name: str | None = None
    search: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    include_nested: bool = False

    def listing(self) -> dict[str, Any]:
        """Keyword arguments of ``list_runs`` (and, status aside, ``count_runs``)."""
        return {
            "status": self.status,
            "flow_name": self.flow_name,
            "search": self.search,
            "since": self.since,
            "until": self.until,
            "include_nested": self.include_nested,
        }

    def counting(self) -> dict[str, Any]:
        kwargs = self.listing()
        del kwargs["status"]
        return kwargs


def time_bounds(
    preset: str, since_day: Any = None, until_day: Any = None, now: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    """``(since, until)`` of a time-range choice: a preset of :data:`TIME_RANGES`, or
    ``"custom"`` with two dates (the until day included)."""
    if preset == "custom":
        since = (
            datetime(since_day.year, since_day.month, since_day.day, tzinfo=timezone.utc)
            if since_day
            else None
        )
        until = (
            datetime(until_day.year, until_day.month, until_day.day, tzinfo=timezone.utc)
            + timedelta(days=1)
            if until_day
            else None
        )
        return since, until
    span = TIME_RANGES.get(preset)
    if span is None:
        return None, None
    return (now or datetime.now(timezone.utc)) - span, None


def open_db(db: WorkflowDB | str | os.PathLike[str]) -> WorkflowDB:
    """A WorkflowDB for a path, URL or WorkflowDB (opening it brings its schema to head:
    a pocoflow 0.2 file is upgraded, as every PocoFlow program does)."""
    if isinstance(db, WorkflowDB):
        return db
    if not isinstance(db, (str, os.PathLike)):
        raise TypeError(
            f"render_workflow_monitor takes a path, a URL or a WorkflowDB, got {type(db).__name__}."
        )
    return WorkflowDB(db)


class MonitorData:
    """One refresh's view of the database: every read asked once, remembered."""

    def __init__(
        self, db: WorkflowDB, session: MutableMapping[str, Any] | None = None, key: str = "pf"
    ) -> None:
        self.db = db
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._session: MutableMapping[str, Any] = session if session is not None else {}
        self._events_key = f"{key}_events:{db.url}"

    def _once(self, key: tuple[Any, ...], read: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = read()
        return self._memo[key]  # type: ignore[no-any-return]

    # ── runs ────────────────────────────────────────────────────────────────

    def counts(self, filters: RunFilters) -> dict[str, int]:
        """Runs per status among those the filters cover (their status aside)."""
        return self._once(("counts", filters), lambda: self.db.count_runs(**filters.counting()))

    def total(self, filters: RunFilters) -> int:
        """How many runs the filters cover (for paging)."""
        counts = self.counts(filters)
        return counts.get(filters.status, 0) if filters.status else sum(counts.values())

    def page(self, filters: RunFilters, page: int, size: int) -> list[dict[str, Any]]:
        """Runs of page *page* (from 1), newest first."""
        return self._once(
            ("page", filters, page, size),
            lambda: self.db.list_runs(size, offset=(page - 1) * size, **filters.listing()),
        )

    def run(self, run_id: str) -> dict[str, Any] | None:
        return self._once(("run", run_id), lambda: self.db.get_run(run_id))

    def children(self, run_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """The runs of flows nested in *run_id* (newest first)."""
        return self._once(
            ("children", run_id), lambda: self.db.list_runs(limit, parent_run_id=run_id)
        )

    # ── what a run holds ────────────────────────────────────────────────────

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """A run's events in order; between refreshes only the new ones are read."""
        return self._once(("events", run_id), lambda: self._follow(run_id))

    def _follow(self, run_id: str) -> list[dict[str, Any]]:
        cache: dict[str, list[dict[str, Any]]] = self._session.setdefault(self._events_key, {})
        known = cache.pop(run_id, [])
        after = known[-1]["id"] if known else 0
        fresh = self.db.get_events(run_id, after_id=after)
        events = known + fresh if fresh else known
        cache[run_id] = events  # re-inserted: the dict keeps the newest looked at last
        while len(cache) > EVENT_CACHE_RUNS:
            del cache[next(iter(cache))]
        return events

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        """The run's checkpoints without their stores (step, node_name, next_node...)."""
        return self._once(("steps", run_id), lambda: self.db.checkpoint_steps(run_id))

    def run_input(self, run_id: str) -> dict[str, Any]:
        return self._once(("input", run_id), lambda: self.db.get_run_input(run_id) or {})

    def graph(self, run_id: str) -> dict[str, Any] | None:
        """The recorded graph description (None: none recorded, as in pocoflow 0.2)."""
        text = self.run_input(run_id).get("graph_json")
        return json.loads(text) if text else None

    def store(self, run_id: str, step: int) -> dict[str, Any]:
        """The store after *step* as stored (JSON, codec tags kept; nothing decoded);
        :data:`INPUT_STEP`: the store the run started with."""
        if step == INPUT_STEP:
            text = self.run_input(run_id).get("input_json")
            return json.loads(text) if text else {}
        return self._once(
            ("store", run_id, step), lambda: self.db.get_checkpoint_json(run_id, step)
        )
