"""Faults from outside the process: a PostgreSQL server that dies mid-run and comes back,
and a database file this process may not write. (A full disk is in
test_full_disk_and_bad_keys.py, a server that never answers or goes silent in
test_postgres_timeouts.py.)

Each one: the caller gets a clear error naming the server or the file and the fix, in
bounded time; nothing committed before is lost or changed; what was cut short resumes
to the result an uninterrupted run gives, without running a committed step again.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pocoflow import DatabaseConnectionError, Flow, Node, WorkflowDB
from tests.postgres_server import PostgresServer, create_database, own_postgres_server

STEPS = 8
KILL_AFTER = 3  # the server dies while the step after this one runs


class Count(Node):
    """Step *i* of a chain: appends i to the trail, counts its execs in *execs*."""

    def __init__(self, i: int, execs: Counter[int], reached: threading.Event) -> None:
        super().__init__(name=f"S{i}")
        self.i, self.execs, self.reached = i, execs, reached

    def exec(self, prep_res: Any) -> None:
        self.execs[self.i] += 1
        if self.i == KILL_AFTER + 1:
            self.reached.set()
            time.sleep(0.5)  # the server dies now, before this step's commit

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["trail"] = [*store.get("trail", []), self.i]


def chain(execs: Counter[int], reached: threading.Event) -> Count:
    nodes = [Count(i, execs, reached) for i in range(STEPS)]
    for here, after in itertools.pairwise(nodes):
        here.then("default", after)
    return nodes[0]


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, so it can be killed."""
    with own_postgres_server() as found:
        if found is None:
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL binaries not found: apt-get install postgresql")
            pytest.skip("PostgreSQL binaries not found (apt-get install postgresql)")
        yield found


def test_a_server_that_dies_mid_run_fails_it_clearly_and_it_resumes_when_back(
    server: PostgresServer,
) -> None:
    """The server is killed (no goodbye) while step 4 runs: the run stops within
    seconds with DatabaseConnectionError naming the server, never the password; with
    the server back, the steps committed before are all there, the run reads as
    interrupted in this process at once (no lease to wait out), and resume runs only
    the steps not committed, to the store an uninterrupted run ends with."""
    url = create_database(server.url, "dies_mid_run").replace("postgres@", "postgres:pw-x@")
    execs: Counter[int] = Counter()
    reached = threading.Event()
    flow = Flow(chain(execs, reached), db_url=url, flow_name="dies", run_id="dies-1")
    outcome: dict[str, Any] = {}

    def run() -> None:
        began = time.monotonic()
        try:
            flow.run({})
        except Exception as exc:  # what the caller of flow.run gets
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - began

    runner = threading.Thread(target=run)
    runner.start()
    assert reached.wait(60)
    server.kill()
    runner.join(60)

    assert not runner.is_alive()
    error = outcome.get("error")
    assert isinstance(error, DatabaseConnectionError), repr(error)
    assert isinstance(error, ConnectionError)
    assert f"127.0.0.1:{server.port}/dies_mid_run" in str(error)
    assert "flow.resume(run_id)" in str(error)
    assert "pw-x" not in str(error)

    server.start()
    db = WorkflowDB(url)
    run_row = db.get_run("dies-1")
    assert run_row is not None
    assert "interrupted" == run_row["status"]
    committed = run_row["total_steps"]
    assert committed >= KILL_AFTER + 1
    assert list(range(committed)) == [c["step"] for c in db.checkpoint_steps("dies-1")]
    ends = [e["step"] for e in db.get_events("dies-1") if e["event"] == "node_end"]
    assert list(range(committed)) == ends

    store = flow.resume("dies-1")

    assert list(range(STEPS)) == store["trail"]
    assert "completed" == db.get_run("dies-1")["status"]  # type: ignore[index]
    again = {i for i, n in execs.items() if n > 1}
    assert again <= {committed}, f"committed steps ran again: {sorted(again)}"


READER = textwrap.dedent("""
    import sys
    from pocoflow import Flow, Node, WorkflowDB

    class Mark(Node):
        def post(self, store, prep_res, exec_res):
            store["x"] = 1

    path = sys.argv[1]
    for attempt in ("open", "run"):
        try:
            if attempt == "open":
                WorkflowDB(path).list_runs()
            else:
                Flow(Mark(), db_path=path, flow_name="ro").run({})
            print(attempt, "ok")
        except Exception as exc:
            print(attempt, type(exc).__name__, isinstance(exc, OSError), str(exc))
""")


def without_write_permission(argv: list[str]) -> list[str]:
    """*argv* run without the right to write where the file modes forbid it: root
    ignores file modes, so as root the command loses that capability (util-linux's
    setpriv), as an ordinary user already lacks it."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv not found (apt-get install util-linux): needed to test a "
                    "read-only database file as root")
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *argv]


@pytest.fixture
def read_only_database(tmp_path: Path) -> Iterator[Path]:
    """A database holding a completed run, its file and folder made read-only."""
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "runs.db"

    class Mark(Node):
        def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
            store["x"] = 1

    Flow(Mark(), db_path=path, run_id="kept").run({})
    from pocoflow.persistence.database import Database

    Database.forget(WorkflowDB(path).records.url)  # the WAL folded in, its files gone
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    try:
        yield path
    finally:
        folder.chmod(stat.S_IRWXU)
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_a_read_only_database_file_is_refused_by_name_and_left_as_it_was(
    read_only_database: Path, tmp_path: Path,
) -> None:
    """A database file (and folder) this process may not write: opening it and running
    a flow on it both raise DatabaseFileError (an OSError) naming the file, saying it is
    read-only and how to fix it; `pocoflow runs ls` says the same in one line and exits
    1; the file's bytes do not change and no file appears beside it."""
    path = read_only_database
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    script = tmp_path / "reader.py"
    script.write_text(READER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    found = subprocess.run(without_write_permission([sys.executable, str(script), str(path)]),
                           capture_output=True, text=True, timeout=120, env=env)
    cli = subprocess.run(
        without_write_permission([sys.executable, "-m", "pocoflow", "runs", "ls", str(path)]),
        capture_output=True, text=True, timeout=120, env=env)

    lines = found.stdout.splitlines()
    assert 2 == len(lines), (found.stdout, found.stderr)
    for attempt, line in zip(("open", "run"), lines, strict=True):
        assert line.startswith(f"{attempt} DatabaseFileError True "), line
        assert str(path) in line
        assert "read-only" in line
        assert "write permission" in line
    assert 1 == cli.returncode
    assert 1 == len(cli.stderr.strip().splitlines()), cli.stderr
    assert str(path) in cli.stderr
    assert "read-only" in cli.stderr
    assert before == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ["runs.db"] == sorted(p.name for p in path.parent.iterdir())
