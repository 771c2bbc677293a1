"""Submitting: what ``flow.submit`` records for the workers, checked before anything is."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pocoflow.graph import describe, node_ids
from pocoflow.persistence import rows
from pocoflow.store import Store, as_store

if TYPE_CHECKING:
    from pocoflow.flow import Flow
    from pocoflow.persistence.records import RunRecords


def submission(flow: Flow, records: RunRecords, store: Store | dict[str, Any] | None, *,
               queue: str, run_id: str | None, priority: int, dedup_key: str | None,
               not_before: datetime | str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run row and the input row of a queued run of *flow* (see RunRecords.submit)."""
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"submit: queue must be a non-empty str, got {queue!r}.")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"submit: priority must be an int (higher runs first), got "
                        f"{priority!r}.")
    if dedup_key is not None and (not isinstance(dedup_key, str) or not dedup_key):
        raise ValueError(f"submit: dedup_key must be a non-empty str or None, got "
                         f"{dedup_key!r}.")
    if run_id is not None and (not isinstance(run_id, str) or not run_id):
        raise ValueError(f"submit: run_id must be a non-empty str or None, got {run_id!r}.")
    from pocoflow.engine import new_run_id
    from pocoflow.graph import validate_graph
    from pocoflow.persistence.records import _moment

    validate_graph(flow.start)
    data = as_store(store)
    encoded = records.tracker().full(data.untracked(), data.transient, strict=True)
    start_id = node_ids(flow.start)[id(flow.start)]
    row = rows.queued_run(run_id or new_run_id(flow), flow.flow_name, rows.now_iso(), queue,
                          priority, dedup_key, _moment(not_before, "not_before"), start_id)
    inputs = rows.run_input(json.dumps(describe(flow)), encoded.store_json)
    return row, inputs

