"""``pocoflow runs ls|show|cancel|tail`` on recorded runs, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from pocoflow import AsyncNode, Flow, Node, Pause, WorkflowDB
from pocoflow.cli import main

Capture = pytest.CaptureFixture[str]
ROOT = Path(__file__).resolve().parent.parent
LONG_TEXT = "lorem ipsum " * 100


class Load(Node):
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        store["text"] = LONG_TEXT
        store["when"] = datetime(2026, 1, 2, 3, 4, 5)
        store["n"] = 1
        return "default"


class Inner(Node):
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["inner"] = True


class Boom(Node):
    def exec(self, prep_res: Any) -> None:
        raise RuntimeError("boom\nsecond line")


class Ask(Node):
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        if "answer" not in store:
            raise Pause("needs an answer")


class Tick(Node):
    """Loops `ticks` times, `delay` seconds each, then ends."""

    def exec(self, prep_res: Any) -> None:
        time.sleep(0.05)

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        store["ticks"] = store.get("ticks", 0) + 1
        return "again" if store["ticks"] < store["limit"] else "done"


class Wait(AsyncNode):
    async def exec_async(self, prep_res: Any) -> None:
        await anyio.sleep(3600)


def record(url: str) -> WorkflowDB:
    """outer-1 (completed, with nested run outer-1.1), failing-1 (failed), ask-1 (paused)."""
    db = WorkflowDB(url)
    load = Load()
    load.then("default", Flow(start=Inner(), flow_name="inner"))
    Flow(start=load, flow_name="outer", run_id="outer-1", db=db).run({})
    load = Load()
    load.then("default", Boom())
    with pytest.raises(RuntimeError, match="boom"):
        Flow(start=load, flow_name="failing", run_id="failing-1", db=db).run({})
    Flow(start=Ask(), flow_name="ask", run_id="ask-1", db=db).run({})
    return db


@pytest.fixture
def recorded(db_url: str) -> str:
    """A database URL (SQLite, PostgreSQL) holding the runs of :func:`record`."""
    record(db_url)
    return db_url


def run_cli(capsys: Capture, *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def json_of(capsys: Capture, *argv: Any) -> Any:
    code, out, err = run_cli(capsys, *argv, "--json")
    assert 0 == code, err
    return json.loads(out)


def ids(out: str) -> list[str]:
    """The first column of a table's rows (the header left out)."""
    return [line.split()[0] for line in out.splitlines()[1:]]


# ── ls ──────────────────────────────────────────────────────────────────────


def test_ls_lists_top_level_runs_newest_first(recorded: str, capsys: Capture) -> None:
    """`runs ls` prints a header and one row per top-level run, newest first."""
    code, out, err = run_cli(capsys, "runs", "ls", recorded)
    assert 0 == code, err
    assert out.splitlines()[0].split()[:4] == ["run_id", "flow", "status", "steps"]
    assert ["ask-1", "failing-1", "outer-1"] == ids(out)
    rows = {line.split()[0]: line.split()[1:4] for line in out.splitlines()[1:]}
    assert ["failing", "failed", "1"] == rows["failing-1"]
    assert "boom second line" in out  # the error, on one line


def test_ls_all_includes_nested_runs(recorded: str, capsys: Capture) -> None:
    """`runs ls --all` lists nested flows' runs too."""
    _, out, _ = run_cli(capsys, "runs", "ls", recorded, "--all")
    assert {"ask-1", "failing-1", "outer-1", "outer-1.1"} == set(ids(out))


def test_ls_json_is_one_document(recorded: str, capsys: Capture) -> None:
    """`runs ls --json` prints one JSON document: the database (password hidden), paging,
    and every run with 0.2's keys."""
    document = json_of(capsys, "runs", "ls", recorded)
    assert {"database", "offset", "limit", "more", "runs"} == set(document)
    assert (0, 20, False) == (document["offset"], document["limit"], document["more"])
    assert ["ask-1", "failing-1", "outer-1"] == [r["run_id"] for r in document["runs"]]
    failed = document["runs"][1]
    assert {"run_id", "flow_name", "status", "started_at", "completed_at", "total_steps",
            "current_node", "error_msg", "parent_run_id"} <= set(failed)
    assert "boom\nsecond line" == failed["error_msg"]


@pytest.mark.parametrize(("options", "expected"), [
    (["--status", "failed"], ["failing-1"]),
    (["--status", "paused"], ["ask-1"]),
    (["--status", "interrupted"], []),
    (["--flow", "outer"], ["outer-1"]),
    (["--search", "fail"], ["failing-1"]),
    (["--search", "second line"], ["failing-1"]),
    (["--since", "1h"], ["ask-1", "failing-1", "outer-1"]),
    (["--since", "2000-01-01"], ["ask-1", "failing-1", "outer-1"]),
    (["--since", "2999-01-01T00:00:00Z"], []),
    (["--until", "2000-01-01T00:00:00+02:00"], []),
    (["--limit", "2"], ["ask-1", "failing-1"]),
    (["--limit", "2", "--offset", "2"], ["outer-1"]),
    (["--all", "--flow", "inner"], ["outer-1.1"]),
])
def test_ls_filters(recorded: str, capsys: Capture, options: list[str],
                    expected: list[str]) -> None:
    """Each filter of `runs ls` narrows the list, in the table and in --json alike."""
    code, out, err = run_cli(capsys, "runs", "ls", recorded, *options)
    assert 0 == code, err
    assert expected == ids(out)
    document = json_of(capsys, "runs", "ls", recorded, *options)
    assert expected == [r["run_id"] for r in document["runs"]]


def test_ls_says_when_there_are_more(recorded: str, capsys: Capture) -> None:
    """A page that does not hold every run says so: on stderr, and as "more" in --json."""
    _, out, err = run_cli(capsys, "runs", "ls", recorded, "--limit", "1")
    assert ["ask-1"] == ids(out)
    assert "more runs: --offset 1" in err
    assert json_of(capsys, "runs", "ls", recorded, "--limit", "1")["more"] is True
    _, out, err = run_cli(capsys, "runs", "ls", recorded, "--status", "queued")
    assert [] == ids(out)
    assert "no runs match" in err


def test_ls_since_on_fixed_times(tmp_path: Path, capsys: Capture) -> None:
    """--since and --until take ISO-8601 times (UTC when no offset is given)."""
    from tests.test_cli import V021_DB

    path = tmp_path / "old.db"
    path.write_bytes(V021_DB.read_bytes())
    _, out, _ = run_cli(capsys, "runs", "ls", path, "--since", "2026-11-26T00:48:10.810")
    assert ["stuck-running", "nonjson"] == ids(out)
    _, out, _ = run_cli(capsys, "runs", "ls", path, "--until", "2026-11-26 00:48:10.806")
    assert ["greet-failed", "greet-completed"] == ids(out)
    _, out, _ = run_cli(capsys, "runs", "ls", path, "--since", "30m")
    assert [] == ids(out)


# ── show ────────────────────────────────────────────────────────────────────


def test_show_prints_row_events_checkpoint_and_nested_runs(recorded: str, capsys: Capture,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           ) -> None:
    """`runs show` prints the run's fields, its events with their timings, its last
    checkpoint's keys and stored JSON values (long ones cut to the terminal), and its
    nested runs."""
    monkeypatch.setenv("COLUMNS", "100")
    code, out, err = run_cli(capsys, "runs", "show", recorded, "outer-1")
    assert 0 == code, err
    fields, events, checkpoint, nested = out.split("\n\n")
    values = dict(line.strip().split(": ", 1) for line in fields.splitlines())
    assert ("completed", "outer", "-") == (values["status"], values["flow_name"],
                                           values["error_msg"])
    assert values["took"].endswith(("ms", "s"))
    title, _header, *rows = events.splitlines()
    assert "events (6)" == title
    assert ["flow_start", "node_start", "node_end", "node_start", "node_end", "flow_end"] == [
        row.split()[1] for row in rows]
    assert all(row.startswith("+") for row in rows)
    assert rows[2].split()[4] == "default"  # node_end: the action, then how long it took
    title, _header, *rows = checkpoint.splitlines()
    assert title.startswith("checkpoint after step 1 (inner, ")
    stored = {row.split()[0]: row.split(None, 1)[1] for row in rows}
    assert '{"__pf__": "datetime", "v": "2026-01-02T03:04:05"}' == stored["when"]
    assert "true" == stored["inner"]
    assert stored["text"].startswith('"lorem ipsum')
    assert stored["text"].endswith("...")
    assert all(len(row) <= 100 for row in rows)
    assert nested.startswith("nested runs (1)")
    assert ["outer-1.1"] == ids(nested.split("\n", 1)[1])


def test_show_json_holds_everything_in_full(recorded: str, capsys: Capture) -> None:
    """`runs show --json`: the run, its events, its checkpoint steps, the last checkpoint
    with the whole store as stored (nothing decoded, nothing cut), its nested runs."""
    document = json_of(capsys, "runs", "show", recorded, "outer-1")
    assert {"database", "run", "events", "checkpoints", "checkpoint", "children"} == set(
        document)
    assert "completed" == document["run"]["status"]
    assert ["flow_start", "node_start", "node_end", "node_start", "node_end", "flow_end"] == [
        e["event"] for e in document["events"]]
    assert [0, 1] == [c["step"] for c in document["checkpoints"]]
    store = document["checkpoint"]["store"]
    assert LONG_TEXT == store["text"]
    assert {"__pf__": "datetime", "v": "2026-01-02T03:04:05"} == store["when"]
    assert ["outer-1.1"] == [c["run_id"] for c in document["children"]]


def test_show_of_a_run_without_checkpoint(recorded: str, capsys: Capture) -> None:
    """A run paused before its first step has no checkpoint: `show` says so."""
    code, out, _ = run_cli(capsys, "runs", "show", recorded, "ask-1")
    assert 0 == code
    assert "\ncheckpoint: none" in out
    assert "paused: needs an answer" in out
    assert json_of(capsys, "runs", "show", recorded, "ask-1")["checkpoint"] is None


def test_show_escapes_terminal_control_characters(tmp_path: Path, capsys: Capture) -> None:
    """Text from the database cannot drive the terminal: escape sequences are shown
    escaped in tables (and kept as they are in --json)."""
    db = WorkflowDB(tmp_path / "x.db")
    db.create_run("evil", "f")
    db.update_run("evil", status="failed", error_msg="\x1b[2J\x1b]0;owned\x07gone")
    _, out, _ = run_cli(capsys, "runs", "show", tmp_path / "x.db", "evil")
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\\x1b[2J" in out
    assert "\x1b[2J" in json_of(capsys, "runs", "show", tmp_path / "x.db", "evil")["run"][
        "error_msg"]


def test_status_lines_escape_a_run_id_and_node_name_from_the_database(
        tmp_path: Path, capsys: Capture) -> None:
    """A run id (a flow name makes part of a default one) and a node name holding
    terminal escapes are shown escaped on every line that names them: the checkpoint
    line of `show`, the last line of `tail RUN_ID`, and `cancel`."""
    evil = "f\x1b]0;owned\x07\x1b[2J"
    node = Node(name="n\x1b[31m")
    Flow(start=node, db_path=tmp_path / "x.db", run_id=evil, flow_name=evil).run({})
    for argv in (("runs", "show"), ("runs", "tail"), ("runs", "cancel")):
        code, out, err = run_cli(capsys, *argv, tmp_path / "x.db", evil)
        assert 0 == code, err
        assert "\x1b" not in out, argv
        assert "\x07" not in out, argv
        assert "f\\x1b]0;owned\\x07" in out, argv


# ── the old forms ───────────────────────────────────────────────────────────


def test_old_forms_still_work(recorded: str, capsys: Capture) -> None:
    """`runs DB` is `runs ls DB` and `runs DB RUN_ID` is `runs show DB RUN_ID`, options
    included."""
    assert run_cli(capsys, "runs", recorded) == run_cli(capsys, "runs", "ls", recorded)
    assert run_cli(capsys, "runs", "--status", "failed", recorded, "--json") == run_cli(
        capsys, "runs", "ls", recorded, "--status", "failed", "--json")
    assert run_cli(capsys, "runs", recorded, "outer-1") == run_cli(
        capsys, "runs", "show", recorded, "outer-1")


def test_options_go_anywhere(recorded: str, capsys: Capture) -> None:
    """Options may come before, between or after the positionals, in the new forms and
    the old ones alike (tail's optional RUN_ID included)."""
    expected = run_cli(capsys, "runs", "tail", recorded, "failing-1", "--json", "-n", "2")
    assert 0 == expected[0]
    assert 2 == len(expected[1].splitlines())
    assert expected == run_cli(capsys, "runs", "tail", "--json", recorded, "-n", "2",
                               "failing-1")
    assert expected == run_cli(capsys, "runs", "tail", recorded, "--interval", "0.5",
                               "--json", "failing-1", "--lines=2")
    assert run_cli(capsys, "runs", "ls", recorded, "--limit", "1") == run_cli(
        capsys, "runs", "--limit", "1", recorded)


@pytest.mark.parametrize("word", ["ls", "show", "cancel", "tail", "gc"])
def test_a_database_named_like_a_command(tmp_path: Path, capsys: Capture,
                                         monkeypatch: pytest.MonkeyPatch, word: str) -> None:
    """A word after `runs` that is a command is the command: `runs gc` with a file named
    `gc` here is a usage error, and the command it suggests (`runs ./gc`) lists the
    file's runs, whichever command the name is (it used to suggest `runs gc ./gc`, the
    delete command, which wants --older-than)."""
    monkeypatch.chdir(tmp_path)
    record(str(tmp_path / word))
    code, out, err = run_cli(capsys, "runs", word)
    assert (2, "") == (code, out)
    assert 1 == len(err.splitlines())
    suggested = err.rsplit("'pocoflow ", 1)[1].rstrip("'\n").split()
    assert ["runs", f"./{word}"] == suggested
    code, out, _ = run_cli(capsys, *suggested)
    assert 0 == code
    assert "outer-1" in ids(out)
    if word == "ls":
        code, out, _ = run_cli(capsys, "runs", "ls", "./ls")
        assert (0, True) == (code, "outer-1" in ids(out))


def test_runs_help_names_every_command_word(capsys: Capture) -> None:
    """`runs --help` lists every word that is taken as a command (gc was missing)."""
    code, out, _ = run_cli(capsys, "runs", "--help")
    assert 0 == code
    assert "one of ls, show, cancel, tail, gc is always" in " ".join(out.split())


# ── cancel ──────────────────────────────────────────────────────────────────


def test_cancel_of_stopped_and_ended_runs(recorded: str, capsys: Capture) -> None:
    """A paused run is cancelled at once; an ended run is left alone and said to be."""
    code, out, _ = run_cli(capsys, "runs", "cancel", recorded, "ask-1")
    assert 0 == code
    assert "ask-1: cancelled (no process was running it)\n" == out
    assert "cancelled" == WorkflowDB(recorded).get_run("ask-1")["status"]
    code, out, _ = run_cli(capsys, "runs", "cancel", recorded, "outer-1")
    assert 0 == code
    assert "outer-1: already completed; nothing to cancel\n" == out
    assert {"database": WorkflowDB(recorded).url, "run_id": "failing-1", "result": "failed",
            "status": "failed"} == json_of(capsys, "runs", "cancel", recorded, "failing-1")


def test_cancel_of_a_running_run(db_url: str, capsys: Capture) -> None:
    """`runs cancel` of a running run: "requested", and the run ends cancelled."""
    db = WorkflowDB(db_url)
    handle = Flow(start=Wait(), flow_name="wait", run_id="wait-1", db=db).run_background({})
    deadline = time.monotonic() + 10
    while (db.get_run("wait-1") or {}).get("status") != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    document = json_of(capsys, "runs", "cancel", db_url, "wait-1")
    assert ("requested", "wait-1") == (document["result"], document["run_id"])
    handle.wait(timeout=10)
    assert "cancelled" == db.get_run("wait-1")["status"]


def test_cancel_from_another_process(db_url: str) -> None:
    """`pocoflow runs cancel` in its own process stops a run this process runs."""
    db = WorkflowDB(db_url)
    handle = Flow(start=Wait(), flow_name="wait", run_id="far-1", db=db).run_background({})
    deadline = time.monotonic() + 10
    while (db.get_run("far-1") or {}).get("status") != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    done = subprocess.run([sys.executable, "-m", "pocoflow", "runs", "cancel", db_url, "far-1"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert (0, "far-1: cancel requested; the process running it sees it within a second and "
               "stops it as soon as the node running now lets it (a sync exec finishes "
               "first), then records it as cancelled\n") == (done.returncode, done.stdout), \
        done.stderr
    handle.wait(timeout=10)
    assert "cancelled" == db.get_run("far-1")["status"]


# ── tail ────────────────────────────────────────────────────────────────────


def test_tail_of_an_ended_run_prints_its_last_events_and_ends(recorded: str,
                                                              capsys: Capture) -> None:
    """`runs tail DB RUN_ID` of a run that has ended prints its last events (its nested
    runs' too) and ends with its status."""
    code, out, err = run_cli(capsys, "runs", "tail", recorded, "outer-1", "-n", "100")
    assert 0 == code, err
    *events, last = out.splitlines()
    assert "outer-1: completed" == last
    assert 10 == len(events)  # 6 of outer-1, 4 of outer-1.1
    assert {"outer-1", "outer-1.1"} == {line.split()[2] for line in events}
    code, out, _ = run_cli(capsys, "runs", "tail", recorded, "outer-1", "-n", "0")
    assert (0, "outer-1: completed\n") == (code, out)


def test_tail_json_prints_one_event_per_line(recorded: str, capsys: Capture) -> None:
    """`runs tail --json`: one JSON object per event and line, nothing else."""
    code, out, _ = run_cli(capsys, "runs", "tail", recorded, "failing-1", "--json")
    assert 0 == code
    events = [json.loads(line) for line in out.splitlines()]
    assert ["flow_start", "node_start", "node_end", "node_start", "node_error",
            "flow_end"] == [e["event"] for e in events]
    assert {"id", "run_id", "event", "ts", "step", "node_name", "action", "elapsed_ms",
            "error_msg", "detail"} == set(events[0])


def test_tail_follows_a_run_until_it_ends(db_url: str, capsys: Capture) -> None:
    """`runs tail DB RUN_ID` prints events as they are recorded and returns when the run
    ends."""
    db = WorkflowDB(db_url)
    tick = Tick()
    tick.then("again", tick)
    flow = Flow(start=tick, flow_name="ticks", run_id="ticks-1", db=db)
    handle = flow.run_background({"limit": 8})
    deadline = time.monotonic() + 10
    while db.get_run("ticks-1") is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    code, out, err = run_cli(capsys, "runs", "tail", db_url, "ticks-1", "--interval", "0.05",
                             "--json", "-n", "1000")
    handle.wait(timeout=10)
    assert 0 == code, err
    events = [json.loads(line) for line in out.splitlines()]
    assert 8 == sum(e["event"] == "node_end" for e in events)
    assert "flow_end" == events[-1]["event"]
    assert sorted(e["id"] for e in events) == [e["id"] for e in events]  # each once, in order


def test_tail_of_every_run_stops_on_ctrl_c(recorded: str, capsys: Capture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`runs tail DB` prints the newest events of every run and follows until Ctrl-C,
    which ends it with exit 0."""
    newest = [e["id"] for e in WorkflowDB(recorded).get_events(None)][-3:]

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    # the follow module's own view of time: patching time.sleep itself would interrupt
    # every thread that sleeps (PocoFlow's own daemon threads too)
    monkeypatch.setattr("pocoflow.cli.follow.time", types.SimpleNamespace(sleep=interrupt))
    code, out, err = run_cli(capsys, "runs", "tail", recorded, "-n", "3", "--json")
    assert (0, "") == (code, err)
    assert newest == [json.loads(line)["id"] for line in out.splitlines()]


@pytest.fixture
def many_events(tmp_path: Path) -> Path:
    path = tmp_path / "many.db"
    db = WorkflowDB(path)
    db.create_run("r", "f")
    for i in range(300):
        db.save_event("r", "node_start", step=i, node_name="N")
    return path


def test_tail_finds_the_newest_events_of_a_long_log(many_events: Path, capsys: Capture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The newest events are found without reading the whole log: -n 5 prints the 5
    newest of 300."""
    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    # the follow module's own view of time: patching time.sleep itself would interrupt
    # every thread that sleeps (PocoFlow's own daemon threads too)
    monkeypatch.setattr("pocoflow.cli.follow.time", types.SimpleNamespace(sleep=interrupt))
    code, out, _ = run_cli(capsys, "runs", "tail", many_events, "-n", "5", "--json")
    assert 0 == code
    assert [295, 296, 297, 298, 299] == [json.loads(line)["step"] for line in out.splitlines()]
