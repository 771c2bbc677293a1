"""One run in detail: its fields, error, pause, parent and child runs, actions, and the
tabs Timeline, Gantt, Graph, Store Inspector and Resume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from pocoflow.ui import actions
from pocoflow.ui.data import MonitorData
from pocoflow.ui.graph_view import graph_from_events, render_graph, run_marks
from pocoflow.ui.store_view import render_store_inspector
from pocoflow.ui.text import badge, fmt_seconds, json_text, run_seconds, short_ts, truncate
from pocoflow.ui.timeline import detail_of, render_gantt, render_timeline

FIELDS = (
    "run_id",
    "flow_name",
    "status",
    "started_at",
    "completed_at",
    "total_steps",
    "current_node",
    "next_node",
    "error_msg",
    "parent_run_id",
    "owner",
    "heartbeat_at",
    "cancel_requested_at",
)
TABS = ["📋 Timeline", "📊 Gantt", "🕸 Graph", "🗄 Store Inspector", "⏩ Resume"]


@dataclass
class Context:
    """What every view of one monitor needs."""

    data: MonitorData
    key: str
    target: str  # the database as given (path or URL): for background resumes
    shown_db: str  # the database as shown (no password): for snippets
    flow_ref: str | None = None


def pause_of(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The reason and data of the pause a paused run stopped at (its last flow_end)."""
    for event in reversed(events):
        if event["event"] == "flow_end":
            detail = detail_of(event)
            return detail if "reason" in detail else None
    return None


def render_run(ctx: Context, run_id: str) -> None:
    data, key = ctx.data, ctx.key
    run = data.run(run_id)
    if run is None:
        st.warning("This run is not in the database (any more).")
        st.text(run_id)
        return
    events = data.events(run_id)
    st.text(
        f"{badge(run['status'])}   {run_id}   ·   flow {run.get('flow_name') or '—'}   ·   "
        f"{run.get('total_steps') or 0} step(s)   ·   {fmt_seconds(run_seconds(run))}"
    )
    with st.expander("Run record"):
        rows = [
            {"field": f, "value": "" if run.get(f) is None else str(run.get(f))}
            for f in (*FIELDS, *sorted(set(run) - set(FIELDS)))
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    if run.get("error_msg"):
        st.caption("Error")
        st.code(run["error_msg"], language=None)
    pause = pause_of(events) if run["status"] == "paused" else None
    if pause is not None:
        st.caption("Paused, waiting for")
        st.code(json_text(pause, indent=2), language="json")
    _family(ctx, run)
    actions.render_cancel(data.db, run, key)
    if ctx.flow_ref:
        actions.render_resume_button(run, ctx.target, ctx.flow_ref, key)

    timeline, gantt, graph, store, resume = st.tabs(TABS)
    with timeline:
        render_timeline(events, run)
    with gantt:
        render_gantt(events, run)
    with graph:
        try:
            description = data.graph(run_id)
        except (ValueError, RecursionError) as exc:  # graph_json that is not JSON
            st.text(f"The recorded graph is not readable JSON ({exc}); drawn from events.")
            description = None
        from_events = description is None
        if from_events:
            description = graph_from_events(events)
        marks = {}
        if description is not None and not from_events:
            try:
                marks = run_marks(
                    description, run, data.steps(run_id), data.children(run_id), data.steps
                )
            except (KeyError, TypeError, ValueError):
                marks = {}
        render_graph(description, marks, from_events)
    with store:
        render_store_inspector(data, run_id, key)
    with resume:
        _resume_tab(ctx, run, pause)


def _family(ctx: Context, run: dict[str, Any]) -> None:
    """The parent run (for a nested flow's run) and the child runs, one click away."""
    key, select_key = ctx.key, f"{ctx.key}_run"

    def open_run(run_id: str) -> None:
        st.session_state[select_key] = run_id

    parent = run.get("parent_run_id")
    if parent:
        st.caption("A nested flow's run; its parent run:")
        left, right = st.columns([4, 1])
        left.text(parent)
        right.button(
            "Open parent", key=f"{key}_parent_{run['run_id']}", on_click=open_run, args=(parent,)
        )
    children = ctx.data.children(run["run_id"])
    if children:
        st.caption(f"Runs of nested flows ({len(children)})")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "status": badge(c.get("status")),
                        "run id": c["run_id"],
                        "flow": c.get("flow_name") or "—",
                        "started (UTC)": short_ts(c.get("started_at")),
                        "steps": c.get("total_steps"),
                        "error": truncate(c.get("error_msg"), 80),
                    }
                    for c in children
                ]
            ),
            hide_index=True,
        )
        left, right = st.columns([4, 1])
        chosen = left.selectbox(
            "Child run", [c["run_id"] for c in children], key=f"{key}_child_{run['run_id']}"
        )
        right.button(
            "Open child", key=f"{key}_open_child_{run['run_id']}", on_click=open_run, args=(chosen,)
        )


def _resume_tab(ctx: Context, run: dict[str, Any], pause: dict[str, Any] | None) -> None:
    steps = ctx.data.steps(run["run_id"])
    if actions.can_resume(run):
        st.caption("Resume this run from its last checkpoint (it keeps its run id):")
        st.code(actions.resume_snippet(run, ctx.shown_db, pause), language="python")
        if not ctx.flow_ref:
            st.caption(
                "Start the monitor with a flow (pocoflow monitor DB --flow "
                "module:attr) to resume it from here."
            )
    elif run.get("parent_run_id") is not None:
        st.caption("A nested flow's run goes on with its parent: open the parent to resume it.")
    elif run.get("status") in actions.RESUMABLE:
        st.caption("Recorded without a resume point (pocoflow 0.2): use the recipe below.")
    if not steps:
        st.info("No checkpoint to start from: no node of this run has finished.")
        return
    st.caption("Or start a new run from any checkpoint (pocoflow 0.2's recipe):")
    labels = {s["step"]: f"step {s['step']}" for s in steps}
    chosen = st.selectbox(
        "From checkpoint",
        list(labels),
        index=len(labels) - 1,
        format_func=labels.__getitem__,
        key=f"{ctx.key}_recipe_{run['run_id']}",
    )
    step = next(s for s in steps if s["step"] == chosen)
    st.code(actions.recipe_snippet(run, ctx.shown_db, step), language="python")
