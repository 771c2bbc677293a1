"""The Timeline and Gantt tabs: a run's events, each node's latency, its attempts.

The rows are derived from the recorded events alone (``pf_events``), so a run
written by pocoflow 0.2 shows the same way. A node's attempt runs from its
``node_start`` (or the end of the retry delay) to its ``node_end``,
``node_retry``, ``node_error`` or ``node_cancel``; an attempt the run stopped
in (a pause, a kill) ends with the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pocoflow.ui.text import parse_ts, truncate

EVENT_MARKS = {
    "flow_start": "● flow_start",
    "flow_resume": "◐ flow_resume",
    "flow_end": "◉ flow_end",
    "node_start": "▶ node_start",
    "node_end": "✔ node_end",
    "node_retry": "↻ node_retry",
    "node_error": "✖ node_error",
    "node_cancel": "■ node_cancel",
}
#: outcome of an attempt -> bar colour in the Gantt chart
OUTCOME_COLORS = {
    "ok": "#2e7d32",
    "retry": "#f9a825",
    "error": "#c62828",
    "cancelled": "#616161",
    "paused": "#ef6c00",
    "running": "#1565c0",
    "interrupted": "#6a1b9a",
}
#: attempts drawn at most (the newest), so a long loop keeps the chart readable
GANTT_ROWS = 400


def detail_of(event: dict[str, Any]) -> dict[str, Any]:
    """An event's JSON ``detail`` (pause data, retry attempt), ``{}`` if none or unreadable."""
    text = event.get("detail")
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _ms_between(start: str | None, end: str | None) -> float | None:
    began, ended = parse_ts(start), parse_ts(end)
    return None if began is None or ended is None else (ended - began).total_seconds() * 1000


def timeline_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per event: when (and ms since the run began), step, node, event, action,
    the node's latency in ms (recorded, or measured from its start), attempt, error."""
    began = events[0]["ts"] if events else None
    opened: dict[Any, str] = {}  # step -> ts its current attempt began
    rows = []
    for event in events:
        kind, step, ts = event["event"], event.get("step"), event.get("ts")
        ms = event.get("elapsed_ms")
        if kind == "node_start":
            opened[step] = ts
        elif kind in ("node_end", "node_error", "node_cancel", "node_retry") and ms is None:
            ms = _ms_between(opened.get(step), ts)
        if kind == "node_retry":
            opened[step] = ts
        detail = detail_of(event)
        since = _ms_between(began, ts)
        rows.append(
            {
                "#": event["id"],
                "time (UTC)": (parse_ts(ts) or datetime.min).strftime("%H:%M:%S.%f")[:-3]
                if ts
                else "—",
                "+ms": round(since, 1) if since is not None else None,
                "step": step,
                "node": event.get("node_name") or "",
                "event": EVENT_MARKS.get(kind, kind),
                "action": event.get("action") or "",
                "ms": round(ms, 2) if ms is not None else None,
                "attempt": detail.get("attempt") if kind == "node_retry" else None,
                "error": truncate(event.get("error_msg")),
                "detail": truncate(event.get("detail"), 80),
            }
        )
    return rows


def latency_rows(
    events: list[dict[str, Any]],
    rows: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Per node: steps it ran, finished, retries, errors, cancels; total/mean/max ms of
    its finished steps (*rows*: the events' :func:`timeline_rows`, if at hand)."""
    table: dict[str, dict[str, Any]] = {}
    durations: dict[str, list[float]] = {}
    for row, event in zip(rows or timeline_rows(events), events, strict=True):
        name = event.get("node_name")
        kind = event["event"]
        if not name or not kind.startswith("node_"):
            continue
        entry = table.setdefault(
            name,
            {"node": name, "runs": 0, "finished": 0, "retries": 0, "errors": 0, "cancelled": 0},
        )
        key = {
            "node_start": "runs",
            "node_end": "finished",
            "node_retry": "retries",
            "node_error": "errors",
            "node_cancel": "cancelled",
        }.get(kind)
        if key:
            entry[key] += 1
        if kind == "node_end" and row["ms"] is not None:
            durations.setdefault(name, []).append(row["ms"])
    for name, entry in table.items():
        spent = durations.get(name, [])
        entry["total ms"] = round(sum(spent), 2) if spent else None
        entry["mean ms"] = round(sum(spent) / len(spent), 2) if spent else None
        entry["max ms"] = round(max(spent), 2) if spent else None
    return list(table.values())


@dataclass
class Attempt:
    """One attempt of one node: a bar of the Gantt chart (ms since the run began)."""

    step: Any
    node: str
    attempt: int
    start_ms: float
    end_ms: float
    outcome: str
    error: str = ""

    def row(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "node": self.node,
            "attempt": self.attempt,
            "lane": f"{self.step} · {self.node}",
            "start ms": round(self.start_ms, 2),
            "end ms": round(self.end_ms, 2),
            "ms": round(self.end_ms - self.start_ms, 2),
            "outcome": self.outcome,
            "error": truncate(self.error),
        }


def attempts(
    events: list[dict[str, Any]], run: dict[str, Any] | None = None, now: datetime | None = None
) -> list[Attempt]:
    """Every node attempt of a run, in order, with its outcome: ok, retry, error,
    cancelled, paused, and for one still open, running or interrupted."""
    if not events:
        return []
    began = parse_ts(events[0]["ts"])
    if began is None:
        return []

    def at(ts: str | None) -> float:
        moment = parse_ts(ts)
        return (moment - began).total_seconds() * 1000 if moment else 0.0  # type: ignore[operator]

    done: list[Attempt] = []
    current: Attempt | None = None

    def close(end: float, outcome: str, error: str | None = None) -> None:
        nonlocal current
        if current is not None:
            current.end_ms, current.outcome = max(end, current.start_ms), outcome
            current.error = error or ""
            done.append(current)
            current = None

    last = 0.0
    for event in events:
        kind, moment = event["event"], at(event.get("ts"))
        last = max(last, moment)
        if kind == "node_start":
            close(moment, "interrupted")
            current = Attempt(
                event.get("step"), event.get("node_name") or "", 1, moment, moment, "running"
            )
        elif current is None:
            continue
        elif kind == "node_retry":
            number, node, step = current.attempt, current.node, current.step
            close(moment, "retry", event.get("error_msg"))
            delay = detail_of(event).get("delay_s")
            delay_ms = float(delay) * 1000 if isinstance(delay, (int, float)) else 0.0
            current = Attempt(
                step, node, number + 1, moment + delay_ms, moment + delay_ms, "running"
            )
        elif kind in ("node_end", "node_error", "node_cancel"):
            outcome = {"node_end": "ok", "node_error": "error", "node_cancel": "cancelled"}
            close(moment, outcome[kind], event.get("error_msg"))
        elif kind == "flow_end":
            status = (run or {}).get("status")
            close(
                moment,
                "paused"
                if status == "paused"
                else "cancelled"
                if status == "cancelled"
                else "interrupted",
            )
        elif kind in ("flow_start", "flow_resume"):
            close(moment, "interrupted")
    status = (run or {}).get("status")
    if current is None and status in ("running", "interrupted") and (run or {}).get("current_node"):
        # a step's events are written when it ends: the node running now (or when the
        # process died) has none yet; the run row names it
        current = Attempt(
            run.get("total_steps"),
            run["current_node"],
            1,  # type: ignore[union-attr]
            last,
            last,
            "running",
        )
    if current is not None:
        if status == "running":
            close(at((now or datetime.now(timezone.utc)).isoformat()), "running")
        else:
            close(max(last, at((run or {}).get("heartbeat_at"))), "interrupted")
    return done


def running_node(events: list[dict[str, Any]], run: dict[str, Any]) -> str | None:
    """What a running run is doing now, which its events do not show yet."""
    if run.get("status") != "running" or not run.get("current_node"):
        return None
    if events and events[-1]["event"] in ("node_start", "node_retry"):
        return None
    began = events[-1]["ts"] if events else run.get("started_at")
    moment = parse_ts(began)
    since = moment.strftime("%H:%M:%S") if moment else "?"
    return (
        f"Now running: step {run.get('total_steps')}, node {run['current_node']} "
        f"(since {since} UTC; a step's events are recorded when it ends)"
    )


# ── views ───────────────────────────────────────────────────────────────────


def render_timeline(events: list[dict[str, Any]], run: dict[str, Any]) -> None:
    """The Timeline tab: every event, each node's latency, the errors in full."""
    import pandas as pd
    import streamlit as st

    now = running_node(events, run)
    if now:
        st.text(now)
    if not events:
        st.info("No events recorded for this run.")
        return
    rows = timeline_rows(events)
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={"ms": st.column_config.NumberColumn("ms", format="%.2f")},
    )
    st.caption("Latency per node (finished steps)")
    st.dataframe(pd.DataFrame(latency_rows(events, rows)), hide_index=True)
    errors = [e for e in events if e.get("error_msg")]
    if errors:
        st.caption(f"Errors ({len(errors)})")
        for event in errors[-20:]:
            st.text(
                f"#{event['id']} {event['event']} step {event.get('step')} "
                f"{event.get('node_name') or ''}"
            )
            st.code(event["error_msg"], language=None)


def render_gantt(events: list[dict[str, Any]], run: dict[str, Any]) -> None:
    """The Gantt tab: one bar per node attempt (retries as their own bars)."""
    import altair as alt
    import pandas as pd
    import streamlit as st

    found = attempts(events, run)
    if not found:
        st.info("No node ran in this run yet.")
        return
    if len(found) > GANTT_ROWS:
        st.caption(f"The last {GANTT_ROWS} of {len(found)} attempts.")
        found = found[-GANTT_ROWS:]
    frame = pd.DataFrame([a.row() for a in found])
    zero = float(frame["start ms"].min())  # from the first node's start (not the run's)
    frame["start ms"] = (frame["start ms"] - zero).round(2)
    frame["end ms"] = (frame["end ms"] - zero).round(2)
    lanes = list(dict.fromkeys(frame["lane"]))
    span = max(float(frame["end ms"].max()), 1.0)
    # a bar is drawn at least 0.4% of the run wide, so sub-millisecond steps stay visible
    frame["drawn end"] = (
        frame[["end ms", "start ms"]].max(axis=1).clip(lower=frame["start ms"] + span * 0.004)
    )
    # the chart gets no error text: stored strings stay in text elements (the table below)
    chart = (
        alt.Chart(frame.drop(columns=["error"]))
        .mark_bar()
        .encode(
            x=alt.X("start ms:Q", title="ms since its first node started"),
            x2="drawn end:Q",
            y=alt.Y("lane:N", sort=lanes, title=None),
            color=alt.Color(
                "outcome:N",
                scale=alt.Scale(domain=list(OUTCOME_COLORS), range=list(OUTCOME_COLORS.values())),
            ),
            tooltip=["node:N", "step:N", "attempt:Q", "ms:Q", "outcome:N"],
        )
        .properties(height=min(30 * len(lanes) + 60, 2400))
    )
    st.altair_chart(chart)
    st.dataframe(frame.drop(columns=["lane", "drawn end"]), hide_index=True)
