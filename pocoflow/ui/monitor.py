"""PocoFlow Workflow Monitor: a Streamlit page of every recorded run.

Standalone::

    streamlit run pocoflow/ui/monitor.py -- pocoflow.db [--flow myapp.flows:research]
    pocoflow monitor pocoflow.db [--port 8501] [--flow module:attr]

Embedded, in any Streamlit page::

    from pocoflow.ui.monitor import render_workflow_monitor
    render_workflow_monitor("pocoflow.db")  # a path, a SQLAlchemy URL or a WorkflowDB

Requires the ``[ui]`` extra: ``pip install "pocoflow[ui]"``.

What it shows: runs per status, filters (status, interrupted included; flow
name; text in the run id or error; start time) and paging; the runs table
(status badge, run id, flow, start, duration, steps, current node); and for
the run picked, its Timeline (events, latency per node, errors), a Gantt chart
of its node attempts (retries visible), its Graph with the node it stands at
marked, a Store Inspector (the store after any step, the diff with the step
before), its nested flows' runs, and a Resume tab. It can cancel a run (with
a confirmation) and, when given a flow reference (``--flow module:attr``),
resume a stopped run in a background process. It refreshes every 5, 10 or 30 s
if asked (only the monitor's own fragment reruns).

It reads through :class:`pocoflow.db.WorkflowDB` only, stores as stored JSON
(never decoded), and shows every string from the database as text, never as
Markdown or HTML.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a script (streamlit run path/to/monitor.py): use this checkout
    _ROOT = str(Path(__file__).resolve().parents[2])
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)

from pocoflow.ui.text import STATUS_EMOJI

__all__ = ["STATUS_EMOJI", "render_workflow_monitor"]

DB_ENV = "POCOFLOW_MONITOR_DB"
FLOW_ENV = "POCOFLOW_MONITOR_FLOW"
TITLE_ENV = "POCOFLOW_MONITOR_TITLE"
DEFAULT_TITLE = "PocoFlow Monitor"
REFRESH_SECONDS = (5, 10, 30)


def render_workflow_monitor(
    db_path: Any,
    title: str = DEFAULT_TITLE,
    *,
    flow: str | None = None,
    key: str = "pf_monitor",
) -> None:
    """Render the full workflow monitor into the current Streamlit page.

    Parameters
    ----------
    db_path :
        The database: a SQLite file path, a SQLAlchemy URL or a ``WorkflowDB``.
        As in pocoflow 0.2, a missing SQLite file is created; a database of an
        older schema (a pocoflow 0.2 file too) is upgraded on opening.
    title :
        Section heading displayed at the top of the monitor.
    flow :
        ``"module:attr"``: the Flow (or a function returning it) whose stopped
        runs the monitor may resume, in a background ``pocoflow resume`` process.
        Without it, the Resume tab shows a snippet to run yourself.
    key :
        Prefix of the monitor's widget keys (two monitors on one page need two).
    """
    import streamlit as st

    from pocoflow.ui.data import open_db

    if flow is not None:
        _check_flow_ref(flow)
    st.subheader(title)
    try:
        db = open_db(db_path)
    except Exception as exc:  # a bad URL, a newer schema, no server: say it, plainly
        st.error("The database cannot be opened:")
        st.code(str(exc), language=None)
        return
    st.text(f"Database: {db.url}")
    toggle_col, every_col, now_col = st.columns([2, 1, 2])
    auto = toggle_col.toggle("Auto-refresh", key=f"{key}_auto")
    every = every_col.selectbox(
        "Every (s)",
        REFRESH_SECONDS,
        key=f"{key}_every",
        disabled=not auto,
        label_visibility="collapsed",
        format_func=lambda s: f"every {s} s",
    )
    now_col.button("🔄 Refresh now", key=f"{key}_refresh")
    if auto:
        st.caption(f"Auto-refresh every {every} s")
    live = st.fragment(_live, run_every=every if auto else None)
    live(db, _target(db_path, db), flow, key)


def _live(db: Any, target: str, flow: str | None, key: str) -> None:
    """Everything that refreshes: counts, filters, runs, the run picked."""
    import streamlit as st

    from pocoflow.ui.data import MonitorData
    from pocoflow.ui.run_view import Context, render_run
    from pocoflow.ui.runs_view import render_counts, render_filters, render_picker, render_table

    data = MonitorData(db, st.session_state, key)
    shown_db = str(db.db_path) if db.db_path is not None else db.url
    filters, size = render_filters(key)
    render_counts(data, filters)
    runs = render_table(data, filters, size, key)
    run_id = render_picker(runs, key)
    if run_id is not None:
        st.divider()
        render_run(Context(data, key, target, shown_db, flow), run_id)


def _target(given: Any, db: Any) -> str:
    """The database as a path or URL a background process can open (with its password:
    it goes to the process's environment, never to the page)."""
    if isinstance(given, (str, os.PathLike)):
        text = os.fspath(given)
        return text if "://" in text else str(Path(text).expanduser().absolute())
    return db.records.url.render_as_string(hide_password=False)  # type: ignore[no-any-return]


def _check_flow_ref(flow: str) -> None:
    module, _, attr = str(flow).partition(":")
    if not module or not attr:
        raise ValueError(f"flow={flow!r} is not 'module:attr' (e.g. 'myapp.flows:research').")


# ── standalone entry point ──────────────────────────────────────────────────


def script_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The script's arguments: ``DB [--flow module:attr] [--title T]`` after ``--`` of
    ``streamlit run``, else ``$POCOFLOW_MONITOR_DB``/``_FLOW``/``_TITLE``, else
    ``pocoflow.db``. (``sys.argv`` is read only when it is this script's: embedded
    in another program or a test, it belongs to someone else.)"""
    if argv is None:
        argv = sys.argv[1:] if _is_this_script(sys.argv[0] if sys.argv else "") else []
    parser = argparse.ArgumentParser(prog="monitor.py", description="PocoFlow monitor")
    parser.add_argument("db", nargs="?", default=os.environ.get(DB_ENV) or "pocoflow.db")
    parser.add_argument("--flow", default=os.environ.get(FLOW_ENV) or None)
    parser.add_argument("--title", default=os.environ.get(TITLE_ENV) or None)
    return parser.parse_args(argv)


def _is_this_script(path: str) -> bool:
    try:
        return Path(path).resolve() == Path(__file__).resolve()
    except OSError:
        return False


def _main() -> None:
    import streamlit as st

    st.set_page_config(
        page_title="PocoFlow Monitor",
        page_icon="⚡",
        layout="wide",
        initial_sidebar_state="collapsed",
    )
    args = script_arguments()
    render_workflow_monitor(args.db, title=args.title or f"⚡ {DEFAULT_TITLE}", flow=args.flow)


if __name__ == "__main__":
    _main()
