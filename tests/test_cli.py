"""The ``pocoflow`` command: ``db current``, ``db upgrade`` and ``runs``."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from pocoflow import WorkflowDB
from pocoflow.cli import main
from pocoflow.persistence.connect import create_db_engine, to_url
from pocoflow.persistence.migrate import ensure_schema, head_revision

V021_DB = Path(__file__).resolve().parent / "data" / "pocoflow-0.2.1.db"
V02_RUNS = ("greet-completed", "greet-failed", "loop-completed", "nonjson", "stuck-running")

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    """A copy of the database written by pocoflow 0.2.1."""
    target = tmp_path / "old.db"
    shutil.copyfile(V021_DB, target)
    return target


def run_cli(capsys: Capture, *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ── pocoflow db current / db upgrade ────────────────────────────────────────


def test_db_current_of_a_new_file_says_none(tmp_path: Path, capsys: Capture) -> None:
    """`db current` of a file that does not exist reports no revision and the code's head."""
    code, out, _ = run_cli(capsys, "db", "current", tmp_path / "new.db")
    assert 0 == code
    assert "(none)" in out
    assert head_revision() in out


@pytest.mark.parametrize("start", ["missing", "pocoflow-0.2.1"])
def test_db_current_changes_nothing(tmp_path: Path, capsys: Capture, start: str) -> None:
    """`db current` only reads: a missing file is not created, a 0.2 file keeps its bytes."""
    path = tmp_path / "sub" / "db.sqlite"
    if start != "missing":
        path.parent.mkdir()
        shutil.copyfile(V021_DB, path)
    before = digest(path) if path.exists() else None

    assert 0 == run_cli(capsys, "db", "current", path)[0]

    assert before == (digest(path) if path.exists() else None)


def test_db_current_of_a_02_file_says_0_2(old_db: Path, capsys: Capture) -> None:
    """`db current` of a pocoflow 0.2 file says it is 0.2 (unversioned) and names the head."""
    code, out, _ = run_cli(capsys, "db", "current", old_db)
    assert 0 == code
    assert "0.2" in out
    assert head_revision() in out


def test_db_current_of_a_file_at_head(tmp_path: Path, capsys: Capture) -> None:
    """`db current` of a database opened by WorkflowDB prints the head revision as its own."""
    path = tmp_path / "head.db"
    WorkflowDB(path).list_runs()
    code, out, _ = run_cli(capsys, "db", "current", path)
    assert 0 == code
    assert f"revision {head_revision()};" in out


def test_db_upgrade_of_a_02_file(old_db: Path, capsys: Capture) -> None:
    """`db upgrade` of a 0.2 file says it went from 0.2 to head; a second time, already there."""
    code, out, _ = run_cli(capsys, "db", "upgrade", old_db)
    assert 0 == code
    assert "upgraded from 0.2" in out
    assert f"to {head_revision()} (head)" in out
    assert sorted(V02_RUNS) == sorted(r["run_id"] for r in WorkflowDB(old_db).list_runs())

    code, out, _ = run_cli(capsys, "db", "upgrade", old_db)
    assert 0 == code
    assert f"already at revision {head_revision()} (head)" in out
    code, out, _ = run_cli(capsys, "db", "current", old_db)
    assert f"revision {head_revision()};" in out


def test_db_upgrade_json_says_what_it_did(old_db: Path, tmp_path: Path,
                                         capsys: Capture) -> None:
    """`db upgrade --json` prints one JSON document: the revision before (0.2's file
    has none) and after, whether it created the file; a second time, nothing to do."""
    code, out, _ = run_cli(capsys, "db", "upgrade", old_db, "--json")
    first = json.loads(out)
    code_again, out_again, _ = run_cli(capsys, "db", "upgrade", old_db, "--json")
    again = json.loads(out_again)
    code_new, out_new, _ = run_cli(capsys, "db", "upgrade", tmp_path / "new.db", "--json")
    created = json.loads(out_new)

    assert (0, 0, 0) == (code, code_again, code_new)
    assert str(old_db) == first["file"]
    assert (False, head_revision(), head_revision()) == (
        first["created"], first["after"], first["head"])
    assert first["before"] != head_revision()
    assert (head_revision(), head_revision()) == (again["before"], again["after"])
    assert (True, None, head_revision()) == (
        created["created"], created["before"], created["after"])


def test_db_upgrade_creates_a_new_file(tmp_path: Path, capsys: Capture) -> None:
    """`db upgrade` of a missing file says it creates it and builds it at head."""
    path = tmp_path / "fresh.db"
    code, out, _ = run_cli(capsys, "db", "upgrade", path)
    assert 0 == code
    assert f"creating new database {path}" in out
    assert f"upgraded from (empty) to {head_revision()} (head)" in out
    assert path.exists()


def test_db_upgrade_and_current_by_url(db_url: str, capsys: Capture) -> None:
    """`db upgrade URL` and `db current URL` work on SQLite and PostgreSQL URLs."""
    code, out, _ = run_cli(capsys, "db", "upgrade", db_url)
    assert 0 == code
    assert f"{head_revision()} (head)" in out
    code, out, _ = run_cli(capsys, "db", "current", db_url)
    assert 0 == code
    assert f"revision {head_revision()};" in out


def test_db_upgrade_refuses_a_newer_database(tmp_path: Path, capsys: Capture) -> None:
    """`db upgrade` of a database newer than the code exits 1 naming both revisions."""
    path = tmp_path / "newer.db"
    engine = create_db_engine(to_url(path))
    try:
        ensure_schema(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    finally:
        engine.dispose()
    code, out, err = run_cli(capsys, "db", "upgrade", path)
    assert 1 == code
    assert "" == out
    assert err.startswith("pocoflow: error: ")
    assert "ffff9999" in err
    assert head_revision() in err
    assert "Traceback" not in err


# ── pocoflow runs ───────────────────────────────────────────────────────────


def test_runs_lists_every_run(old_db: Path, capsys: Capture) -> None:
    """`runs DB` prints a header and one line per run, newest first, with status and steps."""
    code, out, _ = run_cli(capsys, "runs", old_db)
    assert 0 == code
    header, *lines = out.splitlines()
    assert header.split()[:4] == ["run_id", "flow", "status", "steps"]
    assert list(reversed(V02_RUNS)) == [line.split()[0] for line in lines]
    rows = {line.split()[0]: line.split()[1:4] for line in lines}
    assert ["greet", "failed", "1"] == rows["greet-failed"]
    assert ["loop", "completed", "6"] == rows["loop-completed"]


def test_runs_filters(old_db: Path, capsys: Capture) -> None:
    """`runs --status`, `--flow` and `--limit` narrow the list."""
    _, out, _ = run_cli(capsys, "runs", old_db, "--status", "failed")
    assert ["greet-failed"] == [line.split()[0] for line in out.splitlines()[1:]]
    _, out, _ = run_cli(capsys, "runs", old_db, "--flow", "greet")
    assert ["greet-failed", "greet-completed"] == [
        line.split()[0] for line in out.splitlines()[1:]]
    _, out, _ = run_cli(capsys, "runs", old_db, "--limit", "2")
    assert ["stuck-running", "nonjson"] == [line.split()[0] for line in out.splitlines()[1:]]


def test_runs_of_one_run_shows_its_row_and_events(old_db: Path, capsys: Capture) -> None:
    """`runs DB RUN_ID` (the old form of `runs show`) prints the run's fields, then its
    events in order, then its last checkpoint."""
    code, out, _ = run_cli(capsys, "runs", old_db, "greet-failed")
    assert 0 == code
    fields, events, checkpoint = out.split("\n\n")
    values = dict(line.strip().split(": ", 1) for line in fields.splitlines())
    assert "failed" == values["status"]
    assert "boom at step 1" == values["error_msg"]
    assert "FailingTransform" == values["current_node"]
    title, header, *lines = events.splitlines()
    assert "events (5)" == title
    assert header.split()[:2] == ["at", "event"]
    kinds = [line.split()[1] for line in lines]
    assert ["flow_start", "node_start", "node_end", "node_start", "node_error"] == kinds
    assert lines[-1].rstrip().endswith("boom at step 1")
    assert checkpoint.startswith("checkpoint after step 0 (")


def test_runs_of_an_unknown_run_fails(old_db: Path, capsys: Capture) -> None:
    """`runs DB RUN_ID` of an unknown run exits 1 with a message naming it."""
    code, out, err = run_cli(capsys, "runs", old_db, "no-such-run")
    assert 1 == code
    assert "" == out
    assert "No run 'no-such-run'" in err


def test_runs_with_a_bad_status_is_a_one_line_usage_error(old_db: Path,
                                                          capsys: Capture) -> None:
    """A bad --status is a one-line usage error and exit 2, not a traceback."""
    code, _, err = run_cli(capsys, "runs", old_db, "--status", "bogus")
    assert 2 == code
    assert 1 == len(err.strip().splitlines())
    assert "bogus" in err


# ── the installed script ────────────────────────────────────────────────────


def test_installed_script_runs(old_db: Path) -> None:
    """The installed `pocoflow` script upgrades and lists a 0.2 file in a process of its own."""
    script = shutil.which("pocoflow")
    assert script is not None
    upgraded = subprocess.run([script, "db", "upgrade", str(old_db)], capture_output=True,
                              text=True, check=False)
    listed = subprocess.run([script, "runs", str(old_db)], capture_output=True, text=True,
                            check=False)
    assert 0 == upgraded.returncode, upgraded.stderr
    assert f"{head_revision()} (head)" in upgraded.stdout
    assert 0 == listed.returncode, listed.stderr
    assert set(V02_RUNS) == {line.split()[0] for line in listed.stdout.splitlines()[1:]}


# ── pocoflow resume ──────────────────────────────────────────────────────────

FLOW_MODULE = '''
import os
from pocoflow import Flow, Node, Pause


class Ask(Node):
    def post(self, store, prep_res, exec_res):
        store["asked"] = store.get("asked", 0) + 1
        if "answer" not in store:
            raise Pause("needs an answer")
        return "done"


class Finish(Node):
    def post(self, store, prep_res, exec_res):
        store["final"] = f"answer was {store['answer']}"


def build():
    ask, finish = Ask(), Finish()
    ask.then("done", finish)
    return Flow(start=ask, flow_name="ask", run_id="ask-1")
'''


def test_resume_continues_a_paused_run_with_set_values(tmp_path: Path, capsys: Capture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`pocoflow resume MODULE:FLOW RUN_ID --db DB --set KEY=JSON` answers a Pause and
    runs the flow to the end, under the same run_id; the paused node runs again from the
    checkpoint before it, so what it wrote before pausing is not applied twice."""
    (tmp_path / "askflow.py").write_text(FLOW_MODULE)
    monkeypatch.chdir(tmp_path)
    db_path = tmp_path / "runs.db"
    import importlib
    import sys

    from pocoflow import Flow  # noqa: F401 - the module imports it too

    sys.path.insert(0, str(tmp_path))
    try:
        flow = importlib.import_module("askflow").build()
        flow.db = WorkflowDB(db_path).aio
        flow.run({})
        assert "paused" == WorkflowDB(db_path).get_run("ask-1")["status"]

        code, out, err = run_cli(capsys, "resume", "askflow:build", "ask-1", "--db", db_path,
                                 "--set", 'answer="42"')
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("askflow", None)

    assert 0 == code, err
    assert "ask-1: completed" in out
    store = WorkflowDB(db_path).load_checkpoint("ask-1", 1)
    assert "answer was 42" == store["final"]
    assert 1 == store["asked"]  # the paused node re-ran from the checkpoint before it


def test_resume_json_reports_the_run_and_its_store(tmp_path: Path, capsys: Capture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`pocoflow resume ... --json` prints one JSON document: the run id, its status
    after the resume and the keys of its final store."""
    (tmp_path / "askflow.py").write_text(FLOW_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    db_path = tmp_path / "runs.db"
    import importlib
    import sys

    try:
        flow = importlib.import_module("askflow").build()
        flow.db = WorkflowDB(db_path).aio
        flow.run({})
        code, out, err = run_cli(capsys, "resume", "askflow:build", "ask-1", "--db", db_path,
                                 "--set", 'answer="42"', "--json")
    finally:
        sys.modules.pop("askflow", None)

    assert 0 == code, err
    assert {"run_id": "ask-1", "status": "completed",
            "store_keys": ["answer", "asked", "final"]} == json.loads(out)


def test_resume_with_a_bad_target_is_a_one_line_error(tmp_path: Path, capsys: Capture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A MODULE:FLOW that is not a Flow, or a --set that is not JSON, is a clear error."""
    (tmp_path / "notaflow.py").write_text("value = 3\n")
    monkeypatch.chdir(tmp_path)
    try:
        code, _, err = run_cli(capsys, "resume", "notaflow:value", "r1")
        assert 1 == code
        assert "notaflow:value is not a Flow" in err
        code, _, err = run_cli(capsys, "resume", "no-colon", "r1")
        assert 2 == code
        assert "MODULE:FLOW" in err
    finally:
        import sys

        sys.modules.pop("notaflow", None)
