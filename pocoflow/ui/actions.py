"""Acting on a run: cancel it (with a confirmation), resume it in a background process,
or copy a snippet that resumes it.

Cancelling goes through ``db.cancel_run``: a running run's own process sees the
request within a second and stops it, cancelled, with its checkpoints. Resuming
needs the flow's code, so the buttons appear only when the monitor was given a
flow reference (``--flow module:attr``); the run then goes on in a new process
(:mod:`pocoflow.ui.resume_runner`, i.e. ``pocoflow resume``), which outlives the
page. Every snippet quotes the stored strings it names with ``repr``, so a run id
or node name can never turn into code in what the user pastes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocoflow.ui.resume_runner import DB_ENV

RESUMABLE = ("failed", "cancelled", "paused", "interrupted")
CANCELLABLE = ("running", "queued", "paused", "interrupted")
LOG_TAIL = 4000


def can_resume(run: dict[str, Any]) -> bool:
    """A run ``flow.resume(run_id)`` can continue: stopped, top-level (a nested flow's
    run goes on with its parent's), and recorded by a PocoFlow that names the next node
    (pocoflow 0.2 runs have no owner and no next node)."""
    return (
        run.get("status") in RESUMABLE
        and bool(run.get("owner"))
        and run.get("parent_run_id") is None
    )


def parse_updates(text: str) -> dict[str, Any]:
    """The updates typed for a paused run: a JSON object; ValueError says what is wrong."""
    text = text.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(
            f'The updates are not valid JSON: {exc}. Write an object such as {{"approved": true}}.'
        ) from None
    if not isinstance(value, dict):
        raise ValueError(
            f"The updates must be a JSON object of store keys to values, such as "
            f'{{"approved": true}}, not a {type(value).__name__}.'
        )
    bad = [k for k in value if not k or "=" in k]
    if bad:
        raise ValueError(f"Store keys must be non-empty and without '=': {bad!r}.")
    return value


def resume_command(flow_ref: str, run_id: str, updates: dict[str, Any]) -> list[str]:
    command = [sys.executable, "-m", "pocoflow.ui.resume_runner", flow_ref, run_id]
    for key, value in updates.items():
        # one token each: a key that starts with '-' stays the option's value
        command.append(f"--set={key}={json.dumps(value, ensure_ascii=False)}")
    return command


@dataclass
class Job:
    """A resume running in a background process, and where its output goes."""

    run_id: str
    process: subprocess.Popen[bytes]
    log_path: str
    started: float = field(default_factory=time.time)

    def state(self) -> str:
        code = self.process.poll()
        return f"running (pid {self.process.pid})" if code is None else f"exited ({code})"

    def output(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-LOG_TAIL:]
        except OSError:
            return ""


def launch_resume(target: str, flow_ref: str, run_id: str, updates: dict[str, Any]) -> Job:
    """Start ``pocoflow resume`` for *run_id* in a new process (its own session, so it
    goes on if the monitor stops); its output goes to a temporary log file."""
    handle, log_path = tempfile.mkstemp(prefix="pocoflow-resume-", suffix=".log")
    env = {**os.environ, DB_ENV: target}
    root = str(Path(__file__).resolve().parents[2])  # this pocoflow, even from a checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with os.fdopen(handle, "wb") as log:
        process = subprocess.Popen(
            resume_command(flow_ref, run_id, updates),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Job(run_id, process, log_path)


# ── snippets ────────────────────────────────────────────────────────────────


def resume_snippet(run: dict[str, Any], database: str, pause: dict[str, Any] | None) -> str:
    """``flow.resume(run_id)`` for a run PocoFlow can resume."""
    run_id = run["run_id"]
    updates = ""
    if run.get("status") == "paused":
        keys = sorted((pause or {}).get("data", {}) or {})
        example = ", ".join(f"{k!r}: ..." for k in keys[:5]) or "'answer': ..."
        updates = f", updates={{{example}}}"
    return (
        "from pocoflow.db import WorkflowDB\n\n"
        "flow = build_my_flow()  # the Flow that started this run (same nodes)\n"
        f"flow.db = WorkflowDB({database!r})\n"
        f"store = flow.resume({run_id!r}{updates})\n"
        f"# goes on at node {run.get('next_node')!r}, from the run's last checkpoint\n"
    )


def recipe_snippet(run: dict[str, Any], database: str, step: dict[str, Any]) -> str:
    """pocoflow 0.2's recipe: load a checkpoint's store, run the flow from a node."""
    after = step.get("next_node")
    where = (
        f"the node after step {step['step']}: {after!r}"
        if after
        else f"the node that ran after {step['node_name']!r}"
    )
    return (
        "from pocoflow.db import WorkflowDB\n\n"
        f"db = WorkflowDB({database!r})  # decodes stored values: a database you trust\n"
        f"store = db.load_checkpoint({run['run_id']!r}, step={step['step']})\n"
        "flow = build_my_flow()  # the Flow that started this run\n"
        f"flow.run(store, resume_from=node)  # node: {where}\n"
    )


# ── views ───────────────────────────────────────────────────────────────────


def render_cancel(db: Any, run: dict[str, Any], key: str) -> None:
    """A cancel button for a run that can be stopped, asking for confirmation first."""
    import streamlit as st

    run_id, status = run["run_id"], run.get("status")
    done = f"{key}_cancel_result_{run_id}"
    if st.session_state.get(done):
        st.text(st.session_state[done])
    if status not in CANCELLABLE:
        return
    if run.get("parent_run_id") is not None:
        st.caption(
            "A nested flow's run stops with the run it belongs to: open its parent "
            "(above) to cancel it."
        )
        return
    if status == "running" and not run.get("owner"):
        st.caption(
            "Marked running by pocoflow 0.2, with no owner process: PocoFlow cannot "
            "tell whether anything still runs it, so it offers no cancel."
        )
        return
    asking = f"{key}_cancel_ask_{run_id}"

    def ask(value: bool) -> None:
        st.session_state[asking] = value

    def confirm() -> None:
        st.session_state[asking] = False
        try:
            result = db.cancel_run(run_id)
        except Exception as exc:
            st.session_state[done] = f"Cancel failed: {exc}"
            return
        st.session_state[done] = {
            "requested": "🚫 Cancel requested: the process running it sees it within a "
            "second and stops as soon as the node running now lets it (a sync exec "
            "finishes first); its checkpoints are kept.",
            "cancelled": "🚫 Cancelled: no process was running it; its checkpoints are kept.",
        }.get(result, f"Nothing to cancel: the run is {result}.")

    if not st.session_state.get(asking):
        st.button("🚫 Cancel run…", key=f"{key}_cancel_{run_id}", on_click=ask, args=(True,))
        return
    st.warning(
        "Cancel this run? A running node is stopped where it waits (a sync node "
        "finishes its attempt first), and no further node runs."
    )
    yes, no = st.columns(2)
    yes.button("Yes, cancel it", key=f"{key}_cancel_yes_{run_id}", type="primary", on_click=confirm)
    no.button("No, keep it running", key=f"{key}_cancel_no_{run_id}", on_click=ask, args=(False,))


def render_resume_button(run: dict[str, Any], target: str, flow_ref: str, key: str) -> None:
    """With a flow reference: resume a stopped run in the background (updates for a
    paused run, as a JSON object)."""
    import streamlit as st

    run_id = run["run_id"]
    jobs: list[Job] = st.session_state.setdefault(f"{key}_jobs", [])
    if can_resume(run):
        updates_key = f"{key}_updates_{run_id}"
        if run.get("status") == "paused":
            st.text_area(
                "Updates for the paused run (a JSON object of store keys)",
                value="{}",
                key=updates_key,
            )
        error_key = f"{key}_resume_error_{run_id}"

        def start() -> None:
            try:
                updates = parse_updates(st.session_state.get(updates_key) or "{}")
            except ValueError as exc:
                st.session_state[error_key] = str(exc)
                return
            st.session_state[error_key] = ""
            jobs.append(launch_resume(target, flow_ref, run_id, updates))

        st.button(
            "⏩ Resume in the background",
            key=f"{key}_resume_{run_id}",
            on_click=start,
            help="Runs `pocoflow resume` with the flow given to the monitor.",
        )
        if st.session_state.get(error_key):
            st.error("These updates cannot be used:")
            st.code(st.session_state[error_key], language=None)
    for job in [j for j in jobs if j.run_id == run_id]:
        began = time.strftime("%H:%M:%S", time.localtime(job.started))
        st.text(f"Background resume started at {began}: {job.state()}")
        output = job.output()
        if output:
            st.code(output, language=None)
