"""The monitor's parts that need no page: formatting, the timeline and Gantt rows, store
diffs, the DOT drawing, snippets and updates, the server function."""

from __future__ import annotations

import ast
import json
import re
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import tests.test_monitor  # noqa: F401  (skips this module without streamlit)
from pocoflow.ui import actions, graph_view, server, store_view, text, timeline
from pocoflow.ui.data import RunFilters, time_bounds

T0 = datetime(2026, 11, 29, 10, 0, 0, tzinfo=timezone.utc)


def ts(ms: float) -> str:
    return (T0 + timedelta(milliseconds=ms)).isoformat()


def ev(i: int, kind: str, ms: float, step: int | None = None, node: str | None = None,
       **fields: Any) -> dict[str, Any]:
    return {"id": i, "event": kind, "ts": ts(ms), "step": step, "node_name": node,
            "action": fields.get("action"), "elapsed_ms": fields.get("elapsed_ms"),
            "error_msg": fields.get("error_msg"), "detail": fields.get("detail")}


# ── text ────────────────────────────────────────────────────────────────────


def test_badges_durations_and_shortened_values() -> None:
    assert "⚠️ interrupted" == text.badge("interrupted")
    assert "❓ odd" == text.badge("odd")
    assert "2026-11-29 10:00:00" == text.short_ts(ts(0))
    assert "—" == text.short_ts(None)
    assert "—" == text.short_ts("not a time")
    assert ("850 ms", "12.3 s", "4.1 min", "2.0 h", "—") == tuple(
        text.fmt_seconds(s) for s in (0.85, 12.3, 246, 7200, None))
    assert "a b c" == text.truncate("a\nb\tc")
    assert "xxxxx… (12 chars)" == text.truncate("x" * 12, 5)
    assert "" == text.truncate(None)


def test_run_duration_runs_to_its_end_its_heartbeat_or_now() -> None:
    run = {"started_at": ts(0), "completed_at": ts(1500), "status": "completed"}
    assert 1.5 == text.run_seconds(run)
    paused = {"started_at": ts(0), "completed_at": None, "heartbeat_at": ts(300),
              "status": "paused"}
    assert 0.3 == pytest.approx(text.run_seconds(paused))
    running = {"started_at": ts(0), "status": "running"}
    assert 60 == text.run_seconds(running, now=T0 + timedelta(minutes=1))
    assert text.run_seconds({"status": "failed", "started_at": None}) is None


def test_value_types_name_the_codec_tag() -> None:
    assert ["str", "int", "float", "bool", "null", "list", "dict", "datetime"] == [
        text.value_type(v) for v in ("a", 1, 1.5, True, None, [1], {"a": 1},
                                     {"__pf__": "datetime", "v": "2026-01-01"})]


def test_time_ranges_and_filters() -> None:
    now = T0
    assert (None, None) == time_bounds("any time", now=now)
    assert (now - timedelta(hours=1), None) == time_bounds("last hour", now=now)
    since, until = time_bounds("custom", T0.date(), T0.date())
    assert (datetime(2026, 11, 29, tzinfo=timezone.utc),
            datetime(2026, 11, 30, tzinfo=timezone.utc)) == (since, until)
    filters = RunFilters(status="failed", search="x")
    assert "status" not in filters.counting()
    assert "failed" == filters.listing()["status"]


# ── timeline and Gantt ──────────────────────────────────────────────────────


RETRIED = [
    ev(1, "flow_start", 0, node="A"),
    ev(2, "node_start", 10, 0, "A"),
    ev(3, "node_retry", 15, 0, "A", error_msg="boom",
       detail=json.dumps({"attempt": 1, "delay_s": 0.01, "type": "ValueError"})),
    ev(4, "node_end", 40, 0, "A", action="default", elapsed_ms=29.0),
    ev(5, "node_start", 41, 1, "B"),
    ev(6, "node_error", 50, 1, "B", error_msg="bad"),
    ev(7, "flow_end", 51, 2, error_msg="bad"),
]


def test_timeline_rows_measure_each_node_and_keep_attempts() -> None:
    rows = timeline.timeline_rows(RETRIED)
    assert [0.0, 10.0, 15.0, 40.0, 41.0, 50.0, 51.0] == [r["+ms"] for r in rows]
    assert [None, None, 5.0, 29.0, None, 9.0, None] == [r["ms"] for r in rows]
    assert 1 == rows[2]["attempt"]
    latency = {r["node"]: r for r in timeline.latency_rows(RETRIED)}
    assert (1, 1, 1, 0) == tuple(latency["A"][k] for k in ("runs", "finished", "retries",
                                                            "errors"))
    assert 29.0 == latency["A"]["mean ms"]
    assert latency["B"]["mean ms"] is None


def test_attempts_follow_retries_with_their_delay_and_each_outcome() -> None:
    found = [(a.node, a.attempt, a.start_ms, a.end_ms, a.outcome)
             for a in timeline.attempts(RETRIED, {"status": "failed"})]
    assert [("A", 1, 10.0, 15.0, "retry"), ("A", 2, 25.0, 40.0, "ok"),
            ("B", 1, 41.0, 50.0, "error")] == found


def test_an_attempt_left_open_is_paused_running_or_interrupted() -> None:
    started = [ev(1, "flow_start", 0, node="A"), ev(2, "node_start", 5, 0, "A")]
    paused = [*started, ev(3, "flow_end", 9, 0)]
    assert "paused" == timeline.attempts(paused, {"status": "paused"})[0].outcome
    live = timeline.attempts(started, {"status": "running"}, now=T0 + timedelta(seconds=1))
    assert ("running", 1000.0) == (live[0].outcome, live[0].end_ms)
    dead = timeline.attempts(started, {"status": "interrupted", "heartbeat_at": ts(700)})
    assert ("interrupted", 700.0) == (dead[0].outcome, dead[0].end_ms)


def test_the_node_running_now_shows_before_its_events_are_written() -> None:
    done = RETRIED[:4]
    run = {"status": "running", "current_node": "B", "total_steps": 1, "started_at": ts(0)}
    found = timeline.attempts(done, run, now=T0 + timedelta(seconds=2))
    assert ("B", "running", 40.0) == (found[-1].node, found[-1].outcome, found[-1].start_ms)
    assert "Now running: step 1, node B" in (timeline.running_node(done, run) or "")
    assert timeline.running_node(done, {**run, "status": "completed"}) is None


def test_a_detail_that_is_not_json_is_ignored() -> None:
    assert {} == timeline.detail_of({"detail": "{not json"})
    assert {} == timeline.detail_of({"detail": "[1]"})
    assert {} == timeline.detail_of({"detail": "[" * 100_000})


# ── stores ──────────────────────────────────────────────────────────────────


def test_store_rows_and_diffs() -> None:
    before = {"a": 1, "b": "x", "gone": [1], "flag": 1, "deep": {"l": [1, 0.5]}}
    after = {"a": 2, "b": "x", "new": {"k": "v"}, "flag": True, "deep": {"l": [True, 0.5]}}
    rows = {r["key"]: r for r in store_view.store_rows(after)}
    assert ("dict", '{"k": "v"}', 10) == (rows["new"]["type"], rows["new"]["value"],
                                         rows["new"]["chars"])
    diff = {r["key"]: (r["change"], r["before"], r["after"])
            for r in store_view.diff_rows(before, after)}
    assert {"a": ("changed", "1", "2"), "new": ("added", "", '{"k": "v"}'),
            "gone": ("removed", "[1]", ""), "flag": ("changed", "1", "true"),
            "deep": ("changed", '{"l": [1, 0.5]}', '{"l": [true, 0.5]}')} == diff
    assert [] == store_view.diff_rows(after, json.loads(json.dumps(after)))


def test_store_text_with_a_lone_surrogate_is_shown_escaped() -> None:
    """A lone surrogate (half of a UTF-16 pair: PocoFlow stores it and gives it back) in
    a store's key or value is shown as its escape, so the table reaches the page (the
    browser's data layer cannot carry it, and the Store Inspector failed), while other
    unicode stays as it is."""
    import pandas as pd
    import pyarrow as pa

    before = {"k\ud800": "old", "ok": "é"}
    after = {"k\ud800": "bad \ud800 half", "ok": "é", "list": ["\udcff"]}
    tables = [store_view.store_rows(after), store_view.diff_rows(before, after)]
    for rows in tables:
        pa.Table.from_pandas(pd.DataFrame(rows))  # what st.dataframe does with them
    shown = {r["key"]: r["value"] for r in tables[0]}
    assert ("bad \\ud800 half", "é", '["\\udcff"]') == (
        shown["k\\ud800"], shown["ok"], shown["list"])


# ── the graph ───────────────────────────────────────────────────────────────

GRAPH = {"start": "A", "nodes": [{"id": "A", "name": "A", "type": "Node"},
                                 {"id": "B", "name": 'say "hi"\\n\n<b>', "type": "Node"}],
         "edges": [{"from": "A", "to": "B", "action": 'go"; evil -> x [label="'}]}


def test_dot_labels_are_quoted_text_whatever_the_names_hold() -> None:
    """Quotes, backslashes and newlines in names and actions stay inside their DOT
    string; ids are generated, so no stored text becomes DOT syntax."""
    dot = graph_view.dot_from_graph(GRAPH)
    assert 'label="say \\"hi\\"\\\\n <b>"' in dot
    assert 'label="go\\"; evil -> x [label=\\""' in dot
    edges = [line for line in dot.splitlines() if re.match(r"\s*n\d+ -> n\d+", line)]
    assert 2 == len(edges)  # start -> A, A -> B (the label's "->" is text)
    assert not [line for line in dot.splitlines() if line.strip().startswith("evil")]


def test_malformed_graphs_are_refused() -> None:
    with pytest.raises(ValueError, match="start"):
        graph_view.dot_from_graph({"nodes": [], "edges": []})
    with pytest.raises(ValueError, match="not the id"):
        graph_view.dot_from_graph({"start": "Z", "nodes": [{"id": "A", "name": "A"}],
                                   "edges": []})


def test_marks_color_the_nodes_and_follow_checkpoints_for_repeated_names() -> None:
    graph = {"start": "N", "nodes": [{"id": "N", "name": "N"}, {"id": "N#2", "name": "N"},
                                     {"id": "C", "name": "C"}],
             "edges": [{"from": "N", "to": "N#2", "action": "default"},
                       {"from": "N#2", "to": "C", "action": "default"}]}
    steps = [{"step": 0, "node_name": "N", "next_node": "N#2"},
             {"step": 1, "node_name": "N", "next_node": "C"}]
    marks = graph_view.run_marks(graph, {"status": "failed", "next_node": "C"}, steps)
    assert {("N",): "completed", ("N#2",): "completed", ("C",): "failed"} == marks
    dot = graph_view.dot_from_graph(graph, marks)
    assert 'label="C", fillcolor="#ffcdd2", color="#c62828", penwidth="3"' in dot
    ghost = graph_view.run_marks(graph, {"status": "failed", "next_node": "gone"}, [])
    assert {} == ghost


def test_a_run_without_a_recorded_graph_is_drawn_from_its_events() -> None:
    graph = graph_view.graph_from_events([
        ev(1, "node_start", 0, 0, "Tick"), ev(2, "node_end", 1, 0, "Tick", action="again"),
        ev(3, "node_start", 2, 1, "Tick"), ev(4, "node_end", 3, 1, "Tick", action="done"),
        ev(5, "node_start", 4, 2, "Stop")])
    assert graph is not None
    assert {("Tick", "Tick", "again"), ("Tick", "Stop", "done")} == {
        (e["from"], e["to"], e["action"]) for e in graph["edges"]}
    graph_view.dot_from_graph(graph)
    assert graph_view.graph_from_events([]) is None


# ── resume: updates, snippets, the background command ───────────────────────


@pytest.mark.parametrize(("typed", "message"), [
    ("{", "not valid JSON"), ("[1]", "must be a JSON object"), ("3", "not a int"),
    ('{"": 1}', "non-empty"), ('{"a=b": 1}', "without '='")])
def test_updates_must_be_a_json_object_of_plain_keys(typed: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        actions.parse_updates(typed)


def test_updates_become_set_arguments() -> None:
    assert {} == actions.parse_updates("  ")
    updates = actions.parse_updates('{"answer": "yes", "n": [1, 2]}')
    command = actions.resume_command("app:flow", "run-1", updates)
    assert [sys.executable, "-m", "pocoflow.ui.resume_runner", "app:flow", "run-1",
            '--set=answer="yes"', "--set=n=[1, 2]"] == command


def test_snippets_quote_stored_strings_so_they_stay_strings() -> None:
    """A run id or node name holding quotes and newlines cannot add code to a snippet."""
    evil = "x')\nimport os; os.system('boom')  # "
    run = {"run_id": evil, "status": "paused", "next_node": evil, "owner": "h:1:t"}
    for snippet in (actions.resume_snippet(run, "/tmp/db's.db", {"data": {evil: 1}}),
                    actions.recipe_snippet(run, "/tmp/x.db",
                                           {"step": 3, "node_name": evil, "next_node": None})):
        tree = ast.parse(snippet)
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import)]
        assert "os.system" not in [getattr(n, "attr", "") for n in ast.walk(tree)]


def test_only_runs_pocoflow_recorded_and_stopped_can_be_resumed() -> None:
    assert actions.can_resume({"status": "failed", "owner": "h:1:t"})
    assert not actions.can_resume({"status": "failed", "owner": None})  # pocoflow 0.2
    assert not actions.can_resume({"status": "completed", "owner": "h:1:t"})
    assert not actions.can_resume(  # a nested flow's run goes on with its parent
        {"status": "paused", "owner": "h:1:t", "parent_run_id": "top"})


def test_the_resume_runner_passes_the_database_through_its_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pocoflow import cli
    from pocoflow.ui import resume_runner

    called: list[list[str]] = []
    monkeypatch.setattr(cli, "main", lambda argv: called.append(list(argv)) or 0)
    monkeypatch.delenv(resume_runner.DB_ENV, raising=False)
    assert 2 == resume_runner.main(["app:flow", "run-1"])
    monkeypatch.setenv(resume_runner.DB_ENV, "postgresql://u:secret@h/db")
    assert 2 == resume_runner.main(["app:flow"])
    assert 0 == resume_runner.main(["app:flow", "run-1", "--set=a=1"])
    assert [["resume", "--db", "postgresql://u:secret@h/db", "--set=a=1", "--",
             "app:flow", "run-1"]] == called


@pytest.mark.parametrize("run_id", ["-h", "--set=ok=false", "--db=/elsewhere.db"])
def test_the_monitor_resumes_a_run_whose_id_looks_like_an_option(
        run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The Resume button's command, run for real: a stored run id that starts with '-'
    (any text is a valid run id) and an update key that does are data, not options:
    the paused run resumes with the update and completes."""
    from pocoflow import WorkflowDB
    from pocoflow.ui import resume_runner

    (tmp_path / "approvals.py").write_text(
        "from pocoflow import Flow, Node, Pause\n"
        "class Gate(Node):\n"
        "    def post(self, store, prep_res, exec_res):\n"
        "        if not store.get('-ok'):\n"
        "            raise Pause('needs -ok')\n"
        "flow = Flow(Gate(), flow_name='gate')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "approvals", raising=False)
    import approvals  # type: ignore[import-not-found]

    database = tmp_path / "runs.db"
    db = WorkflowDB(database)
    approvals.flow.db = db
    approvals.flow.run_id = run_id
    approvals.flow.run({})
    assert "paused" == db.get_run(run_id)["status"]  # type: ignore[index]

    command = actions.resume_command("approvals:flow", run_id, {"-ok": True})
    monkeypatch.setenv(resume_runner.DB_ENV, str(database))
    assert 0 == resume_runner.main(command[3:]), capsys.readouterr()
    assert "completed" == db.get_run(run_id)["status"]  # type: ignore[index]
    last = db.get_checkpoints(run_id)[-1]["step"]
    assert True is db.load_checkpoint(run_id, last)["-ok"]


# ── the server function ─────────────────────────────────────────────────────


def test_the_server_command_is_headless_and_local() -> None:
    command = server.monitor_command(port=8600, host="127.0.0.1")
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(command[4]) == Path(server.__file__).with_name("monitor.py")
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert {"--server.headless": "true", "--server.address": "127.0.0.1",
            "--server.port": "8600", "--browser.gatherUsageStats": "false"}.items() \
        <= options.items()


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"port": 70000}, ValueError, "port must be an int"),
    ({"port": "80"}, ValueError, "port must be an int"),
    ({"host": ""}, ValueError, "host must be"),
    ({"flow": "nocolon"}, ValueError, "module:attr"),
    ({"db": 3}, TypeError, "file path or a SQLAlchemy URL")])
def test_start_monitor_refuses_bad_arguments(kwargs: dict[str, Any], error: type,
                                            message: str) -> None:
    arguments = {"db": "x.db", **kwargs}
    with pytest.raises(error, match=message):
        server.start_monitor(arguments.pop("db"), **arguments)


def test_start_monitor_says_to_install_streamlit_without_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "streamlit" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install \"pocoflow\[ui\]\""):
        server.start_monitor("x.db")


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    """The server cannot listen: start_monitor raises (it does not wait forever)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (tmp_path / "log").open("wb") as log, pytest.raises(RuntimeError, match="exited"):
            server.start_monitor(tmp_path / "x.db", port=port, log=log, wait=60)


def test_serve_monitor_stops_its_server_on_ctrl_c(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real_start = server.start_monitor

    def start(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process = real_start(*args, **{**kwargs, "log": subprocess.DEVNULL})  # type: ignore[arg-type]
        started.append(process)
        return process

    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(server, "start_monitor", start)
    monkeypatch.setattr(server, "wait_until_ready", interrupted)
    assert 0 == server.serve_monitor(tmp_path / "x.db", port=server.free_port())
    assert started[0].poll() is not None


def test_pocoflow_monitor_stops_its_server_on_sigterm(tmp_path: Path) -> None:
    """`kill` (SIGTERM) on `pocoflow monitor` stops its Streamlit server too: the
    command exits 0 and nothing listens on the port any more (the server used to live
    on, orphaned, still serving the database)."""
    import os
    import signal
    import time

    from pocoflow import WorkflowDB

    WorkflowDB(tmp_path / "runs.db").create_run("r1", "f")
    port = server.free_port()
    command = subprocess.Popen(
        [sys.executable, "-m", "pocoflow", "monitor", str(tmp_path / "runs.db"),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        seen = ""
        while "PocoFlow monitor:" not in seen:  # the server's own lines come first
            line = command.stdout.readline()  # type: ignore[union-attr]
            assert line, f"the monitor ended before it served: {seen}"
            seen += line
        assert f"http://127.0.0.1:{port}" in seen, seen
        command.send_signal(signal.SIGTERM)
        assert 0 == command.wait(30)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait(10)
        command.stdout.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                break
        assert time.monotonic() < deadline, f"something still listens on port {port}"
        time.sleep(0.1)


def test_pocoflow_monitor_read_by_head_stops_with_its_process_group(tmp_path: Path) -> None:
    """`pocoflow monitor DB | head -1`, stopped by `timeout` (which signals the whole
    process group): the first line is the URL, and once the reader is gone the command
    still exits and leaves nothing listening. The server used to share the closed
    stdout, its stop handler failed writing "Stopping...", and it lived on, orphaned."""
    import os
    import signal
    import time

    from pocoflow import WorkflowDB

    WorkflowDB(tmp_path / "runs.db").create_run("r1", "f")
    port = server.free_port()
    command = subprocess.Popen(
        [sys.executable, "-m", "pocoflow", "monitor", str(tmp_path / "runs.db"),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        first = command.stdout.readline()  # type: ignore[union-attr]
        command.stdout.close()  # type: ignore[union-attr]  # as head -1 does
        assert f"PocoFlow monitor: http://127.0.0.1:{port}" in first
        os.killpg(command.pid, signal.SIGTERM)
        command.wait(30)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
            command.wait(10)
    deadline = time.monotonic() + 15
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                break
        if time.monotonic() > deadline:
            os.killpg(command.pid, signal.SIGKILL)  # the orphan, so the port is freed
            raise AssertionError(f"something still listens on port {port}")
        time.sleep(0.1)
