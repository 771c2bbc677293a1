"""A database that cannot be written (a full disk, a file size limit) and a store that
checkpoints cannot hold: the run ends clearly, the error names the file or the key, and
what a reader sees afterwards is a run that ended or is plainly interrupted, resumable,
with nothing half-written."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pocoflow import CheckpointEncodeError, Flow, Node, Store, WorkflowDB

WAIT = 60.0

GROWER = textwrap.dedent("""
    import os, resource, sys
    from pocoflow import Flow, Node, Store, WorkflowDB

    class Grow(Node):
        def __init__(self):
            super().__init__(name="Grow")
            self.then("again", self)

        def post(self, store, prep_res, exec_res):
            store["n"] += 1
            store[f"blob{store['n']}"] = os.urandom(2000).hex()  # 4 KB more per step
            return "again" if store["n"] < 400 else "done"

    path, limit = sys.argv[1], int(sys.argv[2])
    db = WorkflowDB(path, lease_seconds=1.0)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # what a full disk does
    try:
        Flow(start=Grow(), db=db, run_id="full-run", max_steps=1000).run(Store({"n": 0}))
        print("completed")
    except Exception as exc:
        print(type(exc).__name__)
        print(exc)
    sys.stdout.flush()
    sys.stdin.readline()  # stay alive (the run's owner) until the test has looked
""")


def test_a_full_disk_ends_the_run_with_an_error_naming_the_file(tmp_path: Path) -> None:
    """A process that may write only 400 KB per file runs a flow whose store grows by
    4 KB a step: it gets DatabaseFileError naming the database file and the fix (folding
    the WAL in first wins it some steps); while that process is still alive, a reader
    sees the run failed with that error, or interrupted once the lease is over, never
    running for good; with room again it resumes to completed."""
    path = tmp_path / "small.db"
    WorkflowDB(path)
    script = tmp_path / "grow.py"
    script.write_text(GROWER)
    child = subprocess.Popen([sys.executable, str(script), str(path), str(400 * 1024)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        kind, message = read_lines(child, 2)
        assert "DatabaseFileError" == kind
        assert str(path) in message
        assert "ulimit" in message
        assert "flow.resume(run_id)" in message

        reader = WorkflowDB(path, lease_seconds=1.0)
        deadline = time.monotonic() + WAIT
        while reader.get_run("full-run")["status"] == "running" \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        run = reader.get_run("full-run")
        assert child.poll() is None  # the owner is alive: only the lease tells
        assert run["status"] in ("failed", "interrupted")
        if run["status"] == "failed":
            assert str(path) in run["error_msg"]
    finally:
        if child.poll() is None:
            try:
                child.communicate("\n", timeout=WAIT)
            finally:
                child.kill()
                child.wait()

    steps = run["total_steps"]
    assert steps > 0
    store = Flow(start=_grow_again(), db=WorkflowDB(path), run_id="full-run",
                 max_steps=1000).resume("full-run")
    assert 400 == store["n"]
    assert ("completed", 400) == tuple(WorkflowDB(path).get_run("full-run")[k]
                                       for k in ("status", "total_steps"))


def read_lines(child: subprocess.Popen[str], count: int) -> list[str]:
    """The child's next *count* lines of output; fails the test (rather than hang) if
    they do not come within WAIT seconds."""
    lines: list[str] = []

    def read() -> None:
        for _ in range(count):
            lines.append(child.stdout.readline().strip())  # type: ignore[union-attr]

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(WAIT)
    assert not reader.is_alive(), f"the child hangs; it said {lines}"
    return lines


def _grow_again() -> Node:
    class Grow(Node):
        def __init__(self) -> None:
            super().__init__(name="Grow")
            self.then("again", self)

        def post(self, store: Store, prep_res: Any, exec_res: Any) -> str:
            store["n"] += 1
            return "again" if store["n"] < 400 else "done"

    return Grow()


class Writes(Node):
    """Writes ``store[key] = "x"`` when ``store["n"]`` reaches ``at``."""

    def __init__(self, key: Any, at: int) -> None:
        super().__init__(name="Writes")
        self.key, self.at = key, at
        self.then("again", self)

    def post(self, store: Store, prep_res: Any, exec_res: Any) -> str:
        store["n"] = store.get("n", 0) + 1
        if store["n"] == self.at:
            store[self.key] = "x"
        return "again" if store["n"] < 4 else "done"


def rows(url: str, run_id: str) -> dict[str, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {table: conn.execute(text(f"SELECT count(*) FROM {table} WHERE run_id = "
                                             ":r"), {"r": run_id}).scalar_one()
                    for table in ("pf_runs", "pf_events", "pf_checkpoints")}
    finally:
        engine.dispose()


def test_a_store_key_that_is_not_a_str_writes_nothing_half(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A store that starts with the key 1 fails the run at its start with a
    CheckpointEncodeError naming the key: no node runs, no row of the run is written, and
    nothing is logged about another process. A key 1 written at step 2 fails the run
    there: recorded failed, events and checkpoints up to that step, all of one run."""
    db = WorkflowDB(db_url)
    with caplog.at_level(logging.WARNING, logger="pocoflow"), \
            pytest.raises(CheckpointEncodeError, match="key 1") as caught:
        Flow(start=Writes("never", 99), db=db, run_id="bad-input").run(Store({1: "x"}))

    assert isinstance(caught.value, TypeError)
    assert {"pf_runs": 0, "pf_events": 0, "pf_checkpoints": 0} == rows(db_url, "bad-input")
    assert "taken over" not in caplog.text

    with pytest.raises(CheckpointEncodeError, match="key 1"):
        Flow(start=Writes(1, 2), db=db, run_id="bad-later").run(Store({}))

    run = db.get_run("bad-later")
    assert ("failed", 1) == (run["status"], run["total_steps"])
    assert ["flow_start", "node_start", "node_end", "node_start", "node_error", "flow_end"] \
        == [e["event"] for e in db.get_events("bad-later")]
    assert [0] == [c["step"] for c in db.checkpoint_steps("bad-later")]


def test_a_sqlite_file_with_a_stray_event_row_is_not_made_by_pocoflow(tmp_path: Path) -> None:
    """Every event row PocoFlow wrote in the runs above belongs to a run row (no orphan
    rows), checked on a SQLite file directly."""
    path = tmp_path / "keys.db"
    db = WorkflowDB(path)
    with pytest.raises(CheckpointEncodeError):
        Flow(start=Writes("never", 99), db=db, run_id="k").run(Store({1: "x"}))
    with sqlite3.connect(path) as conn:
        orphans = conn.execute("SELECT count(*) FROM pf_events WHERE run_id NOT IN "
                               "(SELECT run_id FROM pf_runs)").fetchone()[0]
    assert 0 == orphans
