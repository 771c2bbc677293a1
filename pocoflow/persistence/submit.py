"""Submitting: what ``flow.submit`` records for the workers, checked before anything is."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from pocoflow.flow import checked_run_id
from pocoflow.graph import describe, node_ids
from pocoflow.persistence import rows
from pocoflow.store import Store, as_store

if TYPE_CHECKING:
    from pocoflow.flow import Flow
    from pocoflow.persistence.records import RunRecords


def submission(
    flow: Flow,
    records: RunRecords,
    store: Store | dict[str, Any] | None,
    *,
    queue: str,
    run_id: str | None,
    priority: int,
    dedup_key: str | None,
    not_before: datetime | timedelta | str | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run row and the input row of a queued run of *flow* (see RunRecords.submit).

    ``not_before`` is a time (a datetime, naive meaning UTC, or ISO-8601 text) or a
    delay from now (a timedelta)."""
    if not isinstance(queue, str) or not queue or rows.storable(queue) != queue:
        raise ValueError(
            f"submit: queue must be a non-empty str without NUL or lone surrogates (a "
            f"worker names it too), got {queue!r}."
        )
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"submit: priority must be an int (higher runs first), got {priority!r}.")
    if not -rows.MAX_INTEGER <= priority <= rows.MAX_INTEGER:  # what INTEGER holds
        raise ValueError(
            f"submit: priority must be between -2**31 + 1 and 2**31 - 1, got {priority!r}."
        )
    if dedup_key is not None and (not isinstance(dedup_key, str) or not dedup_key):
        raise ValueError(f"submit: dedup_key must be a non-empty str or None, got {dedup_key!r}.")
    checked_run_id(run_id, f"Flow '{flow.flow_name}'.submit")
    from pocoflow.engine import new_run_id
    from pocoflow.graph import validate_graph

    start_after = _start_after(not_before)
    validate_graph(flow.start)
    data = as_store(store)
    encoded = records.tracker().full(data.untracked(), data.transient, strict=True)
    start_id = node_ids(flow.start)[id(flow.start)]
    row = rows.queued_run(
        rows.storable(run_id or new_run_id(flow)),  # looked up the way it is stored
        flow.flow_name,
        rows.now_iso(),
        queue,
        priority,
        dedup_key,
        start_after,
        start_id,
    )
    inputs = rows.run_input(json.dumps(describe(flow)), encoded.store_json)
    return row, inputs


def _start_after(not_before: datetime | timedelta | str | None) -> str | None:
    """``not_before`` as stored (UTC ISO-8601 text), or None."""
    if isinstance(not_before, timedelta):
        not_before = datetime.now(timezone.utc) + not_before
    if not_before is None:
        return None
    if not isinstance(not_before, (datetime, str)):
        raise TypeError(
            f"submit: not_before must be a datetime, a timedelta (a delay) or "
            f"ISO-8601 text, got {type(not_before).__name__}."
        )
    return rows.stored_time(not_before, "not_before", "submit")
