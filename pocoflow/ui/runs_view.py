"""The top of the monitor: counts per status, filters, the runs table, paging, the pick.

Each page of runs is one ``list_runs`` call with a limit and an offset, and
the counts one ``count_runs``: both read an index in the listing's order, so
the page stays fast however many runs the database holds.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import streamlit as st

from pocoflow.ui.data import TIME_RANGES, MonitorData, RunFilters, time_bounds
from pocoflow.ui.text import STATUSES, badge, fmt_seconds, run_seconds, short_ts, truncate

PAGE_SIZES = (25, 50, 100, 200)
ALL = "all"


def run_row(run: dict[str, Any]) -> dict[str, Any]:
    """A run as a row of the runs table."""
    return {
        "status": badge(run.get("status")),
        "run id": run["run_id"],
        "flow": run.get("flow_name") or "—",
        "started (UTC)": short_ts(run.get("started_at")),
        "duration": fmt_seconds(run_seconds(run)),
        "steps": run.get("total_steps"),
        "node": run.get("current_node") or "—",
        "error": truncate(run.get("error_msg"), 80),
    }


def render_filters(key: str) -> tuple[RunFilters, int]:
    """The filter widgets; the filters they set, and the page size."""
    page_key = f"{key}_page"

    def first_page() -> None:
        st.session_state[page_key] = 1

    status_col, flow_col, search_col, time_col, size_col = st.columns([2, 2, 3, 2, 1])
    status = status_col.selectbox(
        "Status",
        [ALL, *STATUSES],
        key=f"{key}_status",
        format_func=lambda s: s if s == ALL else badge(s),
        on_change=first_page,
    )
    flow_name = flow_col.text_input(
        "Flow name", key=f"{key}_flow", on_change=first_page, placeholder="exact name"
    )
    search = search_col.text_input(
        "Search",
        key=f"{key}_search",
        on_change=first_page,
        placeholder="text in the run id or the error",
    )
    preset = time_col.selectbox(
        "Started", [*TIME_RANGES, "custom"], key=f"{key}_time", on_change=first_page
    )
    size = size_col.selectbox(
        "Per page", PAGE_SIZES, index=1, key=f"{key}_size", on_change=first_page
    )
    since_day = until_day = None
    if preset == "custom":
        since_col, until_col, _ = st.columns([2, 2, 6])
        today = date.today()
        since_day = since_col.date_input(
            "From (UTC)", value=today - timedelta(days=7), key=f"{key}_since", on_change=first_page
        )
        until_day = until_col.date_input(
            "To (UTC, included)", value=today, key=f"{key}_until", on_change=first_page
        )
    nested = st.checkbox("Show nested flows' runs too", key=f"{key}_nested", on_change=first_page)
    since, until = time_bounds(preset, since_day, until_day)
    filters = RunFilters(
        status=None if status == ALL else status,
        flow_name=flow_name.strip() or None,
        search=search.strip() or None,
        since=since,
        until=until,
        include_nested=nested,
    )
    return filters, size


def render_counts(data: MonitorData, filters: RunFilters) -> None:
    """Runs per status (under every filter but the status one)."""
    counts = data.counts(filters)
    columns = st.columns(len(STATUSES) + 1)
    columns[0].metric("all runs", f"{sum(counts.values()):,}")
    for column, status in zip(columns[1:], STATUSES, strict=True):
        column.metric(badge(status), f"{counts.get(status, 0):,}")


def render_table(
    data: MonitorData,
    filters: RunFilters,
    size: int,
    key: str,
) -> list[dict[str, Any]]:
    """The page of runs, with paging; returns the runs shown."""
    import pandas as pd

    page_key, select_key = f"{key}_page", f"{key}_run"
    total = data.total(filters)
    pages = max(1, -(-total // size))
    page = min(max(1, int(st.session_state.get(page_key, 1))), pages)
    st.session_state[page_key] = page
    runs = data.page(filters, page, size)
    if not runs:
        st.info(
            "No runs match these filters."
            if total or filters != RunFilters()
            else "No workflow runs recorded yet. Give a Flow this database (db_path=..., "
            "db_url=... or db=...) and run it."
        )
        return []
    shown_ids = [r["run_id"] for r in runs]
    st.session_state[f"{key}_shown"] = shown_ids

    def picked() -> None:
        state = st.session_state.get(f"{key}_table")
        rows = state.selection.rows if state is not None else []
        ids = st.session_state.get(f"{key}_shown", [])
        if rows and rows[0] < len(ids):
            st.session_state[select_key] = ids[rows[0]]

    st.dataframe(
        pd.DataFrame([run_row(r) for r in runs]),
        hide_index=True,
        key=f"{key}_table",
        on_select=picked,
        selection_mode="single-row",
    )

    def turn(by: int) -> None:
        st.session_state[page_key] = min(max(1, page + by), pages)

    back, where, forward = st.columns([1, 4, 1])
    back.button("◀ Newer", key=f"{key}_prev", disabled=page <= 1, on_click=turn, args=(-1,))
    first = (page - 1) * size + 1
    where.text(f"Page {page} of {pages} · runs {first:,} to {first + len(runs) - 1:,} of {total:,}")
    forward.button("Older ▶", key=f"{key}_next", disabled=page >= pages, on_click=turn, args=(1,))
    return runs


def render_picker(runs: list[dict[str, Any]], key: str) -> str | None:
    """The run to inspect: one of the page (or one opened from elsewhere, e.g. a child)."""
    select_key, pick_key = f"{key}_run", f"{key}_pick"
    ids = [r["run_id"] for r in runs]
    selected = st.session_state.get(select_key)
    if not ids and selected is None:
        return None
    if selected is None:
        selected = st.session_state[select_key] = ids[0]
    options = ids if selected in ids else [selected, *ids]
    labels = {r["run_id"]: f"{badge(r.get('status'))} · {r['run_id']}" for r in runs}
    st.session_state[pick_key] = selected

    def pick() -> None:
        st.session_state[select_key] = st.session_state[pick_key]

    return st.selectbox(
        "Run to inspect",
        options,
        key=pick_key,
        on_change=pick,
        format_func=lambda rid: labels.get(rid, rid),
    )
