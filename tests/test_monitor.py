"""The Streamlit monitor, headless (``streamlit.testing.v1.AppTest``), on databases filled
by real flow runs: completed (with a retry), failed, paused, cancelled, running in
another process, interrupted (its process killed), nested; and pocoflow 0.2.1's file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pocoflow import Flow, WorkflowDB
from pocoflow.ui.monitor import DB_ENV, FLOW_ENV, STATUS_EMOJI

IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
try:
    from streamlit.testing.v1 import AppTest
except ImportError:  # the [ui] extra; CI installs it (.ci/run), so there it is a failure
    if IN_CI:
        raise
    pytest.skip("the monitor needs streamlit: pip install 'pocoflow[ui]'",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
MONITOR = ROOT / "pocoflow" / "ui" / "monitor.py"
DB_021 = Path(__file__).resolve().parent / "data" / "pocoflow-0.2.1.db"
KEY = "pf_monitor"
WAIT = 30.0
XSS = "<script>alert(1)</script>"
XSS_FLOW = "<img src=x onerror=alert(2)>"
XSS_ERROR = "flaky <b>boom</b> **bold**"

FLOWS = textwrap.dedent('''
    """Flows the monitor tests record (also resumed by the monitor, as monitor_flows:...)."""
    import os, sys
    import anyio
    from pocoflow import AsyncNode, Flow, Node, Pause

    XSS = "<script>alert(1)</script>"

    class Load(Node):
        def post(self, store, prep_res, exec_res):
            store["doc"] = "hello " * 1000
            store["html"] = XSS
            store["count"] = 1

    class Think(Node):
        """Fails its first attempt (of each run), then succeeds: a retry in the Gantt."""
        max_retries = 2
        seen = set()

        def prep(self, store):
            return store["count"]

        def exec(self, count):
            if "think" not in Think.seen:
                Think.seen.add("think")
                raise RuntimeError("first attempt fails")
            return count + 1

        def post(self, store, prep_res, exec_res):
            store["count"] = exec_res

    class Save(Node):
        def post(self, store, prep_res, exec_res):
            store["saved"] = True
            store.pop("doc", None)

    class Flaky(Node):
        max_retries = 2

        def exec(self, prep_res):
            if not os.path.exists(os.environ.get("MONITOR_FLAKY_OK", "/nonexistent")):
                raise ValueError("flaky <b>boom</b> **bold**")
            return "fine"

        def post(self, store, prep_res, exec_res):
            store["flaky"] = exec_res

    class Ask(Node):
        def prep(self, store):
            return store.get("answer")

        def exec(self, answer):
            if answer is None:
                raise Pause("Approve the summary?", draft="<i>draft</i>")
            return answer

        def post(self, store, prep_res, exec_res):
            store["approved"] = exec_res

    class First(Node):
        def post(self, store, prep_res, exec_res):
            store["first"] = "done"

    class Wait(AsyncNode):
        async def exec_async(self, prep_res):
            if os.path.exists(os.environ.get("MONITOR_WAIT_OK", "/nonexistent")):
                return "released"
            print("waiting", flush=True)
            await anyio.sleep(3600)

    def chain(*nodes):
        for a, b in zip(nodes, nodes[1:]):
            a.then("default", b)
        return nodes[0]

    def pipeline():
        return Flow(chain(Load(), Think(), Save()), flow_name="pipeline")

    def flaky():
        return Flow(chain(Load(), Flaky(), Save()), flow_name="''' + XSS_FLOW + '''")

    def approval():
        return Flow(chain(Load(), Ask(), Save()), flow_name="approval")

    def waiting():
        return Flow(chain(First(), Wait(), Node(name="Never")), flow_name="waiting")

    def nested():
        inner = Flow(chain(First(), Think()), flow_name="inner")
        return Flow(chain(Load(), inner, Save()), flow_name="outer")

    if __name__ == "__main__":  # python monitor_flows.py DB RUN_ID: run `waiting`
        flow = waiting()
        flow.db = sys.argv[1]
        flow.run_id = sys.argv[2]
        flow.run({})
''')


@dataclass
class Recorded:
    """A database of real runs, and where the flows that made them live."""

    db: Path
    flows_dir: Path

    def env(self) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(self.flows_dir), str(ROOT),
                                           os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path}


def write_flows(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "monitor_flows.py").write_text(FLOWS)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    sys.modules.pop("monitor_flows", None)
    return folder


def start_waiting(recorded: Recorded, run_id: str) -> subprocess.Popen[str]:
    """A process running the `waiting` flow, returned once its node waits."""
    child = subprocess.Popen([sys.executable, str(recorded.flows_dir / "monitor_flows.py"),
                              str(recorded.db), run_id], env=recorded.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = child.stdout.readline()  # type: ignore[union-attr]
    if line != "waiting\n":
        child.kill()
        raise AssertionError(f"the waiting flow did not start: {line}{child.stdout.read()}")  # type: ignore[union-attr]
    return child


def stop(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.kill()
    child.communicate()


def record_runs(recorded: Recorded) -> None:
    """Completed, failed, paused, cancelled, interrupted and nested runs, for real."""
    import monitor_flows as flows  # type: ignore[import-not-found]

    db = str(recorded.db)
    for build, run_id in ((flows.pipeline, "mon-done"), (flows.approval, "mon-paused"),
                          (flows.nested, "mon-nested")):
        flows.Think.seen.clear()
        flow = build()
        flow.db, flow.run_id = db, run_id
        flow.run({})
    flow = flows.flaky()
    flow.db, flow.run_id = db, "mon-failed"
    with pytest.raises(ValueError, match="flaky"):
        flow.run({})
    cancel_waiting(recorded, "mon-cancelled")
    kill_waiting(recorded, "mon-killed")


def cancel_waiting(recorded: Recorded, run_id: str) -> None:
    """A `waiting` run cancelled in its waiting node, after its first step."""
    import monitor_flows as flows  # type: ignore[import-not-found]

    flow = flows.waiting()
    flow.db, flow.run_id = str(recorded.db), run_id
    handle = flow.run_background({})
    deadline = time.monotonic() + WAIT
    while handle.status != "running" or not WorkflowDB(recorded.db).checkpoint_steps(run_id):
        assert time.monotonic() < deadline, "the run to cancel never got going"
        time.sleep(0.05)
    handle.cancel()
    handle.wait(WAIT)


def kill_waiting(recorded: Recorded, run_id: str) -> None:
    """A `waiting` run whose process is killed in its waiting node (interrupted)."""
    child = start_waiting(recorded, run_id)
    child.send_signal(signal.SIGKILL)
    stop(child)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    folder = tmp_path_factory.mktemp("monitor")
    found = Recorded(folder / "monitor.db", write_flows(folder / "flows"))
    record_runs(found)
    yield found
    sys.path.remove(str(found.flows_dir))


_live_runs = iter(range(1_000_000))


@pytest.fixture
def live(recorded: Recorded) -> Iterator[subprocess.Popen[str]]:
    """A run in progress in another process (its node waits an hour); cancelled after
    the test, so it does not linger as an interrupted run."""
    run_id = f"mon-live-{next(_live_runs)}"
    child = start_waiting(recorded, run_id)
    child.run_id = run_id  # type: ignore[attr-defined]
    yield child
    if child.poll() is None:
        WorkflowDB(recorded.db).cancel_run(run_id)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(WAIT)
    stop(child)
    if WorkflowDB(recorded.db).get_run(run_id)["status"] == "interrupted":  # type: ignore[index]
        WorkflowDB(recorded.db).cancel_run(run_id)


def monitor(monkeypatch: pytest.MonkeyPatch, db: Path | str, flow: str | None = None,
            ) -> AppTest:
    """The monitor script, run headless on *db*."""
    monkeypatch.setenv(DB_ENV, str(db))
    if flow:
        monkeypatch.setenv(FLOW_ENV, flow)
    else:
        monkeypatch.delenv(FLOW_ENV, raising=False)
    at = AppTest.from_file(str(MONITOR), default_timeout=WAIT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def pick(at: AppTest, run_id: str) -> AppTest:
    at.selectbox(key=f"{KEY}_pick").set_value(run_id).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table(at: AppTest, index: int = 0) -> Any:
    return at.dataframe[index].value


def texts(at: Any) -> list[str]:
    return [e.value for e in at.text]


def codes(at: Any) -> list[str]:
    return [e.value for e in at.code]


def tab(at: AppTest, label: str) -> Any:
    return next(t for t in at.tabs if label in t.label)


def heading(at: AppTest) -> str:
    return next(t for t in texts(at) if "·   flow" in t)


# ── the runs table, counts, filters, paging ─────────────────────────────────


def test_the_runs_table_shows_every_kind_of_run_with_its_badge(
        recorded: Recorded, live: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every top-level run is listed, newest first, with its status badge (interrupted
    for the killed process's run), flow, steps and current node; nested runs are not."""
    at = monitor(monkeypatch, recorded.db)
    runs = table(at)
    statuses = dict(zip(runs["run id"], runs["status"], strict=True))

    assert f"{STATUS_EMOJI['completed']} completed" == statuses["mon-done"]
    assert f"{STATUS_EMOJI['failed']} failed" == statuses["mon-failed"]
    assert f"{STATUS_EMOJI['paused']} paused" == statuses["mon-paused"]
    assert f"{STATUS_EMOJI['cancelled']} cancelled" == statuses["mon-cancelled"]
    assert f"{STATUS_EMOJI['interrupted']} interrupted" == statuses["mon-killed"]
    assert f"{STATUS_EMOJI['running']} running" == statuses[live.run_id]  # type: ignore[attr-defined]
    assert "mon-nested.1" not in statuses
    assert live.run_id == runs["run id"][0]  # type: ignore[attr-defined]
    done = runs[runs["run id"] == "mon-done"].iloc[0]
    assert ("pipeline", 3, "Save") == (done["flow"], done["steps"], done["node"])
    assert "flaky <b>boom</b> **bold**" == runs[runs["run id"] == "mon-failed"].iloc[0]["error"]


def test_counts_per_status_are_shown_at_the_top(
        recorded: Recorded, live: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One count per status (interrupted apart from running) and the total."""
    at = monitor(monkeypatch, recorded.db)
    counts = {m.label: m.value for m in at.metric}
    expected = WorkflowDB(recorded.db).count_runs()

    assert str(sum(expected.values())) == counts["all runs"]
    for status in ("completed", "failed", "paused", "cancelled", "interrupted", "running"):
        assert str(expected.get(status, 0)) == counts[f"{STATUS_EMOJI[status]} {status}"]
    assert "1" == counts[f"{STATUS_EMOJI['interrupted']} interrupted"]
    assert "0" == counts[f"{STATUS_EMOJI['queued']} queued"]


@pytest.mark.parametrize(("status", "expected"), [
    ("failed", {"mon-failed"}), ("interrupted", {"mon-killed"}), ("paused", {"mon-paused"}),
    ("cancelled", {"mon-cancelled"}), ("queued", set())])
def test_the_status_filter_keeps_runs_of_that_status(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch, status: str,
        expected: set[str]) -> None:
    """Filtering by a status (interrupted too) lists only the runs that show it."""
    at = monitor(monkeypatch, recorded.db)
    at.selectbox(key=f"{KEY}_status").set_value(status).run()

    if expected:
        assert expected <= set(table(at)["run id"])
        assert {f"{STATUS_EMOJI[status]} {status}"} == set(table(at)["status"])
    else:
        assert ["No runs match these filters."] == [i.value for i in at.info]


def test_the_flow_name_and_search_filters_narrow_the_table(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flow name is an exact match; search finds text in a run id or in an error."""
    at = monitor(monkeypatch, recorded.db)
    at.text_input(key=f"{KEY}_flow").input("approval").run()
    assert ["mon-paused"] == list(table(at)["run id"])

    at.text_input(key=f"{KEY}_flow").input("").run()
    at.text_input(key=f"{KEY}_search").input("<b>boom").run()
    assert ["mon-failed"] == list(table(at)["run id"])

    at.text_input(key=f"{KEY}_search").input("mon-nes").run()
    assert ["mon-nested"] == list(table(at)["run id"])


def test_the_time_range_filter_uses_the_start_time(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs started in the last hour are all here; a custom range in the past has none."""
    import datetime as dt

    at = monitor(monkeypatch, recorded.db)
    at.selectbox(key=f"{KEY}_time").set_value("last hour").run()
    assert {"mon-done", "mon-failed", "mon-killed"} <= set(table(at)["run id"])

    at.selectbox(key=f"{KEY}_time").set_value("custom").run()
    past = dt.date(2020, 1, 1)
    at.date_input(key=f"{KEY}_since").set_value(past).run()
    at.date_input(key=f"{KEY}_until").set_value(past + dt.timedelta(days=3)).run()
    assert ["No runs match these filters."] == [i.value for i in at.info]


def test_nested_runs_are_listed_on_request_and_reachable_from_their_parent(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """The nested flow's run is in the table when asked for; from its parent's detail
    it opens with one click, and from there its parent does too."""
    at = monitor(monkeypatch, recorded.db)
    at.checkbox(key=f"{KEY}_nested").check().run()
    assert "mon-nested.1" in set(table(at)["run id"])

    at.checkbox(key=f"{KEY}_nested").uncheck().run()
    pick(at, "mon-nested")
    children = next(d.value for d in at.dataframe if "run id" in d.value
                    and list(d.value["run id"]) == ["mon-nested.1"])
    assert ["inner"] == list(children["flow"])
    at.button(key=f"{KEY}_open_child_mon-nested").click().run()
    assert "mon-nested.1" in heading(at)
    assert "mon-nested" in texts(at)  # its parent, as text, with a button to open it

    at.button(key=f"{KEY}_parent_mon-nested.1").click().run()
    assert "mon-nested   ·" in heading(at)


@pytest.fixture(scope="module")
def many_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 small completed runs."""
    from pocoflow import Node

    db = tmp_path_factory.mktemp("paging") / "many.db"
    flow = Flow(Node(), db_path=db, flow_name="tiny")
    for _ in range(60):
        flow.run({})
    return db


def test_paging_walks_through_the_runs_a_page_at_a_time(
        many_runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """25 runs a page: three pages, Older and Newer move between them, a new page size
    starts again at page 1."""
    at = monitor(monkeypatch, many_runs)
    at.selectbox(key=f"{KEY}_size").set_value(25).run()
    first = list(table(at)["run id"])
    assert 25 == len(first)
    assert "Page 1 of 3 · runs 1 to 25 of 60" in texts(at)
    assert at.button(key=f"{KEY}_prev").disabled

    at.button(key=f"{KEY}_next").click().run()
    second = list(table(at)["run id"])
    assert "Page 2 of 3 · runs 26 to 50 of 60" in texts(at)
    assert not set(first) & set(second)
    at.button(key=f"{KEY}_next").click().run()
    assert 10 == len(table(at))
    assert at.button(key=f"{KEY}_next").disabled

    at.button(key=f"{KEY}_prev").click().run()
    assert second == list(table(at)["run id"])
    at.selectbox(key=f"{KEY}_size").set_value(50).run()
    assert "Page 1 of 2 · runs 1 to 50 of 60" in texts(at)
    listed = [r["run_id"] for r in WorkflowDB(many_runs).list_runs(25)]
    assert listed == first


def test_auto_refresh_reruns_only_the_live_part_and_never_blocks(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Turning auto-refresh on returns at once (no sleeping loop, unlike 0.2.1) and the
    interval can be 5, 10 or 30 s."""
    at = monitor(monkeypatch, recorded.db)
    began = time.monotonic()
    at.toggle(key=f"{KEY}_auto").set_value(True).run()
    assert time.monotonic() - began < 5
    assert "Auto-refresh every 5 s" in [c.value for c in at.caption]
    assert ["every 5 s", "every 10 s", "every 30 s"] == list(
        at.selectbox(key=f"{KEY}_every").options)
    at.selectbox(key=f"{KEY}_every").set_value(30).run()
    assert "Auto-refresh every 30 s" in [c.value for c in at.caption]
    at.button(key=f"{KEY}_refresh").click().run()
    assert not at.exception


# ── one run: Timeline, Gantt, Graph, Store Inspector, Resume ────────────────


def test_the_timeline_lists_events_latency_and_errors(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """The failed run's events in order (its retries among them), each node's latency,
    and its error in full, as code."""
    at = pick(monitor(monkeypatch, recorded.db), "mon-failed")
    timeline = tab(at, "Timeline")
    events = timeline.dataframe[0].value
    recorded_events = WorkflowDB(recorded.db).get_events("mon-failed")

    assert [e["id"] for e in recorded_events] == list(events["#"])
    assert ["● flow_start", "▶ node_start", "✔ node_end", "▶ node_start", "↻ node_retry",
            "✖ node_error", "◉ flow_end"] == list(events["event"])
    assert 1 == events[events["event"] == "↻ node_retry"].iloc[0]["attempt"]
    latency = timeline.dataframe[1].value.set_index("node")
    assert (1, 1, 0) == tuple(latency.loc["Load", ["runs", "finished", "errors"]])
    assert (1, 0, 1, 1) == tuple(latency.loc["Flaky", ["runs", "finished", "retries",
                                                      "errors"]])
    assert latency.loc["Load", "mean ms"] > 0
    assert XSS_ERROR in codes(timeline)


def test_the_gantt_chart_draws_every_attempt_with_retries_visible(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """The completed run's Think node has two attempts: a retry, then ok; a chart is
    drawn, with the attempts also listed as a table."""
    at = pick(monitor(monkeypatch, recorded.db), "mon-done")
    gantt = tab(at, "Gantt")
    bars = gantt.dataframe[0].value

    assert [("Load", 1, "ok"), ("Think", 1, "retry"), ("Think", 2, "ok"), ("Save", 1, "ok")] \
        == list(zip(bars["node"], bars["attempt"], bars["outcome"], strict=True))
    assert "first attempt fails" == bars.iloc[1]["error"]
    assert all(bars["end ms"] >= bars["start ms"])
    assert [] != gantt.get("vega_lite_chart")


def test_the_gantt_chart_of_a_live_run_has_a_running_bar(
        recorded: Recorded, live: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The node a live run waits in is a bar still growing (outcome running); the
    killed run's node is interrupted."""
    at = pick(monitor(monkeypatch, recorded.db), live.run_id)  # type: ignore[attr-defined]
    bars = tab(at, "Gantt").dataframe[0].value
    assert [("First", "ok"), ("Wait", "running")] == list(
        zip(bars["node"], bars["outcome"], strict=True))

    pick(at, "mon-killed")
    bars = tab(at, "Gantt").dataframe[0].value
    assert [("First", "ok"), ("Wait", "interrupted")] == list(
        zip(bars["node"], bars["outcome"], strict=True))


def graph_texts(at: AppTest) -> tuple[str, str]:
    graph = tab(at, "Graph")
    mermaid, dot = (c for c in codes(graph) if c.startswith(("flowchart", "digraph")))
    assert [] != graph.get("graphviz_chart")
    return mermaid, dot


@pytest.mark.parametrize(("run_id", "node", "mark"), [
    ("mon-failed", "Flaky", "failed"), ("mon-paused", "Ask", "paused"),
    ("mon-killed", "Wait", "interrupted"), ("mon-cancelled", "Wait", "cancelled")])
def test_the_graph_marks_the_node_a_stopped_run_stands_at(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch, run_id: str, node: str,
        mark: str) -> None:
    """The recorded graph is drawn (Graphviz, and its Mermaid text) with the node the run
    stopped at marked by its state, and the nodes it finished marked completed."""
    from pocoflow.visualize import MARK_STYLES

    at = pick(monitor(monkeypatch, recorded.db), run_id)
    mermaid, dot = graph_texts(at)

    fill = MARK_STYLES[mark].split(",")[0].split(":")[1]
    assert f'label="{node}", fillcolor="{fill}"' in dot
    done = MARK_STYLES["completed"].split(",")[0].split(":")[1]
    assert f'fillcolor="{done}"' in dot
    assert f"classDef {mark} " in mermaid


def test_the_graph_of_a_live_run_marks_its_current_node(
        recorded: Recorded, live: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = pick(monitor(monkeypatch, recorded.db), live.run_id)  # type: ignore[attr-defined]
    _, dot = graph_texts(at)
    assert 'label="Wait", fillcolor="#fff59d"' in dot


def test_the_graph_of_a_nested_flow_is_drawn_as_a_cluster(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """The nested flow is a cluster; its own nodes are marked from its child run."""
    at = pick(monitor(monkeypatch, recorded.db), "mon-nested")
    mermaid, dot = graph_texts(at)
    assert "subgraph cluster_" in dot
    assert 'label="inner"' in dot
    for inner in ("First", "Think"):
        assert f'label="{inner}", fillcolor="#c8e6c9"' in dot
    assert "subgraph" in mermaid


def test_the_store_inspector_shows_each_step_its_changes_and_whole_values(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """The slider covers the input and every checkpoint; the table shows the store after
    the step chosen; the diff shows what that step added, changed and removed; a long
    value is shortened in the table and shown whole on request; the raw JSON too."""
    at = pick(monitor(monkeypatch, recorded.db), "mon-done")
    slider = at.select_slider(key=f"{KEY}_step_mon-done")
    assert ["input", "step 0", "step 1", "step 2"] == list(slider.options)
    store = tab(at, "Store").dataframe[0].value.set_index("key")
    assert {"html", "count", "saved"} == set(store.index)  # after the last step
    diff = tab(at, "Store").dataframe[1].value.set_index("key")
    assert {"saved": "added", "doc": "removed"} == dict(diff["change"])

    slider.set_value(0).run()
    store = tab(at, "Store").dataframe[0].value.set_index("key")
    assert "str" == store.loc["doc", "type"]
    assert 6000 == store.loc["doc", "chars"]
    assert store.loc["doc", "value"].endswith("… (6,000 chars)")
    diff = tab(at, "Store").dataframe[1].value.set_index("key")
    assert {"doc": "added", "html": "added", "count": "added"} == dict(diff["change"])

    slider.set_value(1).run()
    diff = tab(at, "Store").dataframe[1].value.set_index("key")
    assert ("changed", "1", "2") == tuple(diff.loc["count", ["change", "before", "after"]])

    at.selectbox(key=f"{KEY}_whole_mon-done").set_value("doc").run()
    assert "hello " * 1000 in codes(tab(at, "Store"))
    raw = json.loads(next(c for c in codes(tab(at, "Store")) if c.startswith("{")))
    assert WorkflowDB(recorded.db).get_checkpoint_json("mon-done", 1) == raw


def test_stored_html_and_markdown_are_shown_as_text_only(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store value `<script>...`, a flow named `<img onerror=...>` and an error with
    HTML and Markdown appear in text, code and dataframe elements, never in a
    Markdown, HTML, heading, alert or metric element (all tabs, every run)."""
    at = monitor(monkeypatch, recorded.db)
    seen: dict[str, set[str]] = {XSS: set(), XSS_FLOW: set(), XSS_ERROR: set()}
    for run_id in ("mon-done", "mon-failed"):
        pick(at, run_id)
        at.select_slider(key=f"{KEY}_step_{run_id}").set_value(0).run()
        at.selectbox(key=f"{KEY}_whole_{run_id}").set_value("html").run()
        for element_type, text in elements(at):
            for needle in seen:
                if needle in text:
                    seen[needle].add(element_type)
    safe = {"text", "code", "dataframe", "selectbox", "graphviz_chart"}
    assert {"code", "dataframe"} <= seen[XSS], seen
    assert {"dataframe", "text"} <= seen[XSS_FLOW], seen
    assert {"code", "dataframe"} <= seen[XSS_ERROR], seen
    for needle, types in seen.items():
        assert types <= safe, (needle, types - safe)


def elements(at: AppTest) -> Iterator[tuple[str, str]]:
    """(element type, its whole protobuf as text) of every element on the page."""
    def walk(node: Any) -> Iterator[Any]:
        children = getattr(node, "children", None)
        if children is None:
            yield node
            return
        if getattr(node, "proto", None) is not None:  # a block's own label (tab, expander)
            yield node
        for child in children.values():
            yield from walk(child)

    for node in walk(at._tree):
        proto = getattr(node, "proto", None)
        if proto is not None:
            text = str(proto)
            with contextlib.suppress(AttributeError):
                text += proto.SerializeToString().decode("utf-8", "replace")
            yield str(getattr(node, "type", type(node).__name__)), text


def test_the_resume_tab_gives_a_snippet_for_each_kind_of_run(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumable run gets `flow.resume(run_id)` (with updates when paused) and every run
    with checkpoints the 0.2 recipe for the checkpoint chosen; run ids are quoted."""
    at = pick(monitor(monkeypatch, recorded.db), "mon-failed")
    snippets = codes(tab(at, "Resume"))
    assert any("store = flow.resume('mon-failed')" in s for s in snippets)
    assert any("db.load_checkpoint('mon-failed', step=0)" in s for s in snippets)

    pick(at, "mon-paused")
    assert any("flow.resume('mon-paused', updates={'draft': ...})" in s
               for s in codes(tab(at, "Resume")))
    assert [] == [b for b in at.button if b.key == f"{KEY}_resume_mon-paused"]

    pick(at, "mon-done")
    snippets = codes(tab(at, "Resume"))
    assert not any("flow.resume(" in s for s in snippets)
    at.selectbox(key=f"{KEY}_recipe_mon-done").set_value(1).run()
    assert any("db.load_checkpoint('mon-done', step=1)" in s and "'Save'" in s
               for s in codes(tab(at, "Resume")))


# ── acting: cancel, resume ──────────────────────────────────────────────────


def test_cancel_asks_first_then_stops_the_run_in_the_other_process(
        recorded: Recorded, live: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancel asks for confirmation (No keeps the run going); Yes calls cancel_run, the
    owner process ends within seconds and the run shows cancelled."""
    run_id: str = live.run_id  # type: ignore[attr-defined]
    at = pick(monitor(monkeypatch, recorded.db), run_id)
    at.button(key=f"{KEY}_cancel_{run_id}").click().run()
    assert 1 == len(at.warning)
    at.button(key=f"{KEY}_cancel_no_{run_id}").click().run()
    assert 0 == len(at.warning)
    assert "running" == WorkflowDB(recorded.db).get_run(run_id)["status"]  # type: ignore[index]

    at.button(key=f"{KEY}_cancel_{run_id}").click().run()
    asked = time.monotonic()
    at.button(key=f"{KEY}_cancel_yes_{run_id}").click().run()
    assert any(t.startswith("🚫 Cancel requested") for t in texts(at))
    live.wait(WAIT)
    assert time.monotonic() - asked < 10
    assert 0 == live.returncode

    at.run()
    assert "cancelled" == WorkflowDB(recorded.db).get_run(run_id)["status"]  # type: ignore[index]
    assert heading(at).startswith(f"{STATUS_EMOJI['cancelled']} cancelled")
    assert [] == [b for b in at.button if b.key == f"{KEY}_cancel_{run_id}"]


def test_cancel_of_a_paused_run_marks_it_cancelled_at_once(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    import monitor_flows as flows  # type: ignore[import-not-found]

    flow = flows.approval()
    flow.db, flow.run_id = str(recorded.db), "mon-paused-to-cancel"
    flow.run({})
    at = pick(monitor(monkeypatch, recorded.db), "mon-paused-to-cancel")
    at.button(key=f"{KEY}_cancel_mon-paused-to-cancel").click().run()
    at.button(key=f"{KEY}_cancel_yes_mon-paused-to-cancel").click().run()
    assert any(t.startswith("🚫 Cancelled") for t in texts(at))
    assert heading(at).startswith(f"{STATUS_EMOJI['cancelled']} cancelled")


def wait_for_status(db: Path, run_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        run = WorkflowDB(db).get_run(run_id)
        if run is not None and run["status"] == status:
            return run
        assert time.monotonic() < deadline, f"{run_id} is {run and run['status']}, not {status}"
        time.sleep(0.1)


def test_with_a_flow_reference_a_failed_run_resumes_in_the_background(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Given --flow, the failed run gets a resume button; it starts `pocoflow resume` in
    another process, which completes the run; its output shows on the page."""
    import monitor_flows as flows  # type: ignore[import-not-found]

    flow = flows.flaky()
    flow.db, flow.run_id = str(recorded.db), "mon-failed-resumed"
    with pytest.raises(ValueError, match="flaky"):
        flow.run({})
    marker = tmp_path / "ok"
    monkeypatch.setenv("MONITOR_FLAKY_OK", str(marker))
    monkeypatch.setenv("PYTHONPATH", recorded.env()["PYTHONPATH"])
    at = pick(monitor(monkeypatch, recorded.db, flow="monitor_flows:flaky"),
              "mon-failed-resumed")
    marker.write_text("ok")
    at.button(key=f"{KEY}_resume_mon-failed-resumed").click().run()

    run = wait_for_status(recorded.db, "mon-failed-resumed", "completed")
    last = WorkflowDB(recorded.db).checkpoint_steps("mon-failed-resumed")[-1]["step"]
    assert 3 == run["total_steps"]
    assert "fine" == WorkflowDB(recorded.db).get_checkpoint_json("mon-failed-resumed",
                                                                 last)["flaky"]
    deadline = time.monotonic() + WAIT
    while not any("exited (0)" in t for t in texts(at.run())):
        assert time.monotonic() < deadline, texts(at)
        time.sleep(0.2)
    assert any("mon-failed-resumed: completed" in c for c in codes(at))
    for job in at.session_state[f"{KEY}_jobs"]:
        job.process.wait(WAIT)


@pytest.mark.parametrize("kind", ["cancelled", "interrupted"])
def test_with_a_flow_reference_a_stopped_run_resumes_in_the_background(
        kind: str, recorded: Recorded, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A run cancelled mid-node, or whose process was killed (interrupted), gets a
    resume button too; the run goes on in another process from its last checkpoint, at
    the node it stopped in, and completes."""

    run_id = f"mon-{kind}-resumed"
    (cancel_waiting if kind == "cancelled" else kill_waiting)(recorded, run_id)
    assert kind == WorkflowDB(recorded.db).get_run(run_id)["status"]  # type: ignore[index]
    marker = tmp_path / "ok"
    marker.write_text("ok")
    monkeypatch.setenv("MONITOR_WAIT_OK", str(marker))
    monkeypatch.setenv("PYTHONPATH", recorded.env()["PYTHONPATH"])
    at = pick(monitor(monkeypatch, recorded.db, flow="monitor_flows:waiting"), run_id)

    at.button(key=f"{KEY}_resume_{run_id}").click().run()

    run = wait_for_status(recorded.db, run_id, "completed")
    assert 3 == run["total_steps"]  # First, Wait (again, from its checkpoint), Never
    nodes = [s["node_name"] for s in WorkflowDB(recorded.db).checkpoint_steps(run_id)]
    assert ["First", "Wait", "Never"] == nodes
    for job in at.session_state[f"{KEY}_jobs"]:
        job.process.wait(WAIT)


def test_a_paused_run_resumes_with_updates_checked_as_json(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Updates that are not a JSON object are refused with a message (no process
    starts); a JSON object is written to the store and the run completes."""
    import monitor_flows as flows  # type: ignore[import-not-found]

    flow = flows.approval()
    flow.db, flow.run_id = str(recorded.db), "mon-paused-resumed"
    flow.run({})
    monkeypatch.setenv("PYTHONPATH", recorded.env()["PYTHONPATH"])
    at = pick(monitor(monkeypatch, recorded.db, flow="monitor_flows:approval"),
              "mon-paused-resumed")
    updates = at.text_area(key=f"{KEY}_updates_mon-paused-resumed")
    for bad, message in (("{nope", "not valid JSON"), ("[1, 2]", "must be a JSON object"),
                         ('{"a=b": 1}', "without '='")):
        updates.input(bad).run()
        at.button(key=f"{KEY}_resume_mon-paused-resumed").click().run()
        assert any(message in c for c in codes(at)), codes(at)
        assert [] == at.session_state[f"{KEY}_jobs"]

    updates.input('{"answer": "yes, <b>ship</b> it"}').run()
    at.button(key=f"{KEY}_resume_mon-paused-resumed").click().run()
    wait_for_status(recorded.db, "mon-paused-resumed", "completed")
    for job in at.session_state[f"{KEY}_jobs"]:
        job.process.wait(WAIT)
    steps = WorkflowDB(recorded.db).checkpoint_steps("mon-paused-resumed")
    store = WorkflowDB(recorded.db).get_checkpoint_json("mon-paused-resumed", steps[-1]["step"])
    assert "yes, <b>ship</b> it" == store["approved"]


def test_without_a_flow_reference_there_is_no_resume_button(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    at = pick(monitor(monkeypatch, recorded.db), "mon-failed")
    assert [] == [b for b in at.button if (b.key or "").startswith(f"{KEY}_resume_")]
    assert any("--flow" in c.value for c in at.caption)


# ── pocoflow 0.2.1's database, embedding, arguments ─────────────────────────


def test_a_database_written_by_pocoflow_021_shows_fine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """0.2.1's five runs are listed (its stuck run as running, with no cancel offered);
    their timelines, stores and the path they took (no graph was recorded) show; the
    Resume tab gives 0.2's recipe."""
    db = tmp_path / "old.db"
    shutil.copy(DB_021, db)
    at = monitor(monkeypatch, db)
    statuses = dict(zip(table(at)["run id"], table(at)["status"], strict=True))
    assert {"greet-completed": "✅ completed", "greet-failed": "❌ failed",
            "loop-completed": "✅ completed", "nonjson": "✅ completed",
            "stuck-running": "🔄 running"} == statuses

    pick(at, "greet-failed")
    assert "boom at step 1" in codes(at)
    events = tab(at, "Timeline").dataframe[0].value
    assert ["● flow_start", "▶ node_start", "✔ node_end", "▶ node_start", "✖ node_error"] \
        == list(events["event"])
    _, dot = graph_texts(at)
    assert 'label="Load"' in dot
    assert any("No graph was recorded" in c.value for c in tab(at, "Graph").caption)
    assert any("db.load_checkpoint('greet-failed', step=0)" in c
               for c in codes(tab(at, "Resume")))

    pick(at, "loop-completed")
    store = tab(at, "Store").dataframe[0].value.set_index("key")
    assert {"i", "trail"} == set(store.index)
    assert [f"step {n}" for n in range(6)] == list(
        at.select_slider(key=f"{KEY}_step_loop-completed").options)

    pick(at, "stuck-running")
    assert [] == [b for b in at.button if b.key == f"{KEY}_cancel_stuck-running"]
    assert any("no owner process" in c.value for c in at.caption)

    pick(at, "nonjson")
    assert not at.exception


def embedded(db, title):  # type: ignore[no-untyped-def]  # AppTest runs its source alone
    from pocoflow.ui.monitor import render_workflow_monitor

    render_workflow_monitor(db, title=title)


def test_render_workflow_monitor_embeds_in_any_page_with_a_workflowdb(
        recorded: Recorded) -> None:
    """render_workflow_monitor(db, title=...) takes a WorkflowDB (or a path or URL) and
    draws under the caller's title; 0.2.1's names are kept."""
    from pocoflow.ui import monitor as module

    at = AppTest.from_function(embedded, args=(WorkflowDB(recorded.db), "My runs"),
                               default_timeout=WAIT).run()
    assert not at.exception
    assert ["My runs"] == [h.value for h in at.subheader]
    assert "mon-done" in set(table(at)["run id"])
    assert {"queued", "running", "paused", "completed", "failed", "cancelled",
            "interrupted"} == set(module.STATUS_EMOJI)
    assert callable(module.render_workflow_monitor)


def test_a_database_that_cannot_be_opened_is_reported_on_the_page(
        tmp_path: Path) -> None:
    at = AppTest.from_function(embedded, args=("nosuchdriver://x/y", "Runs"),
                               default_timeout=WAIT).run()
    assert not at.exception
    assert 1 == len(at.error)
    assert any("nosuchdriver" in c for c in codes(at))


def test_the_script_reads_its_database_and_flow_from_argv_or_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pocoflow.ui.monitor import script_arguments

    args = script_arguments(["runs.db", "--flow", "app.flows:main", "--title", "T"])
    assert ("runs.db", "app.flows:main", "T") == (args.db, args.flow, args.title)
    monkeypatch.setenv(DB_ENV, "env.db")
    monkeypatch.setenv(FLOW_ENV, "m:f")
    args = script_arguments([])
    assert ("env.db", "m:f") == (args.db, args.flow)
    monkeypatch.delenv(DB_ENV)
    monkeypatch.delenv(FLOW_ENV)
    assert ("pocoflow.db", None) == (script_arguments([]).db, script_arguments([]).flow)
    assert "pocoflow.db" == script_arguments().db  # pytest's argv is not the monitor's


def test_a_bad_flow_reference_is_refused_with_its_form(recorded: Recorded) -> None:
    from pocoflow.ui.monitor import render_workflow_monitor

    with pytest.raises(ValueError, match="is not 'module:attr'"):
        render_workflow_monitor(recorded.db, flow="no_colon")


def test_a_damaged_database_shows_what_it_can_and_says_what_it_cannot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph that is not JSON, a store nested deeper than Python's stack, an event
    detail that is not JSON, a graph that is JSON but not a graph: the page still draws,
    says what it cannot show, and imports or runs nothing."""
    import sqlite3

    from pocoflow import Node

    db = tmp_path / "damaged.db"
    first, second = Node(name="First"), Node(name="Second")
    first.then("default", second)
    for run_id in ("bad-graph", "odd-graph"):
        Flow(first, db_path=db, run_id=run_id).run({"a": 1})
    raw = sqlite3.connect(db)
    raw.execute("UPDATE pf_run_inputs SET graph_json = '{not json' WHERE run_id = 'bad-graph'")
    raw.execute("UPDATE pf_run_inputs SET graph_json = '{\"start\": \"x\"}' "
                "WHERE run_id = 'odd-graph'")
    raw.execute("UPDATE pf_checkpoints SET store_json = ? WHERE run_id = 'bad-graph' "
                "AND step = 1", ('{"deep": ' + "[" * 50_000 + "]" * 50_000 + "}",))
    raw.execute("UPDATE pf_events SET detail = '{oops' WHERE run_id = 'bad-graph'")
    raw.commit()
    raw.close()

    at = pick(monitor(monkeypatch, db), "bad-graph")
    assert any("not readable JSON" in t for t in texts(tab(at, "Graph")))
    assert [] != tab(at, "Graph").get("graphviz_chart")  # drawn from the events instead
    assert any("cannot" in t for t in texts(tab(at, "Store")))
    pick(at, "odd-graph")
    assert any("cannot be drawn" in t for t in texts(tab(at, "Graph")))


def test_the_monitor_reads_sqlite_and_postgresql_alike(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On either backend (a URL this time): the runs, a failed run's timeline, store and
    graph, and a cancel of a paused run."""
    flows = write_flows(tmp_path / "flows")
    try:
        import monitor_flows  # type: ignore[import-not-found]

        for build, run_id in ((monitor_flows.pipeline, "pg-done"),
                              (monitor_flows.approval, "pg-paused")):
            monitor_flows.Think.seen.clear()
            flow = build()
            flow.db, flow.run_id = db_url, run_id
            flow.run({})
        flow = monitor_flows.flaky()
        flow.db, flow.run_id = db_url, "pg-failed"
        with pytest.raises(ValueError, match="flaky"):
            flow.run({})
    finally:
        sys.path.remove(str(flows))
        sys.modules.pop("monitor_flows", None)

    at = monitor(monkeypatch, db_url)
    assert {"pg-done": "✅ completed", "pg-paused": "⏸️ paused", "pg-failed": "❌ failed"} \
        == dict(zip(table(at)["run id"], table(at)["status"], strict=True))
    pick(at, "pg-failed")
    assert XSS_ERROR in codes(tab(at, "Timeline"))
    assert {"doc", "html", "count"} == set(tab(at, "Store").dataframe[0].value["key"])
    graph_texts(at)
    pick(at, "pg-paused")
    at.button(key=f"{KEY}_cancel_pg-paused").click().run()
    at.button(key=f"{KEY}_cancel_yes_pg-paused").click().run()
    assert heading(at).startswith(f"{STATUS_EMOJI['cancelled']} cancelled")
