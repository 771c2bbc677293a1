"""SQLite's WAL stays bounded under sustained writing and reading, and is folded into the
database file when a process is done with it: the .db file alone holds every run."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from pocoflow import Flow, Node, Store, WorkflowDB
from pocoflow.persistence.connect import WAL_LIMIT_BYTES
from tests.reliability.walsampler import WalSampler

#: What the bound may be passed by: writes between two looks at the WAL's size, and the
#: group commits of several threads (a step adds ~22 KB of WAL frames).
MARGIN = 4 * 1024 * 1024
WAIT = 60.0


class Count(Node):
    """One step of a loop: counts, and rewrites a few hundred bytes of the store."""

    def __init__(self, steps: int) -> None:
        super().__init__(name="Count")
        self.steps = steps
        self.then("again", self)

    def post(self, store: Store, prep_res: object, exec_res: object) -> str:
        store["n"] += 1
        store["note"] = f"{store['n']:06d}" * 50
        return "again" if store["n"] < self.steps else "done"


def counting_flow(path: Path, steps: int, run_id: str) -> Flow:
    return Flow(start=Count(steps), db_path=path, run_id=run_id, max_steps=steps + 1)


def test_wal_stays_bounded_under_sustained_writes_and_reads(tmp_path: Path) -> None:
    """Three threads run 1,000-step flows (3,000 steps, ~65 MB of WAL frames) while a
    fourth reads the runs without pause: the WAL never grows past its bound (plus the
    writes between two looks at it), and every step is recorded."""
    path = tmp_path / "busy.db"
    db = WorkflowDB(path)
    errors: list[BaseException] = []
    done = threading.Event()

    def write(who: int) -> None:
        try:
            counting_flow(path, 1000, f"run-{who}").run(Store({"n": 0}))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        while not done.is_set():
            try:
                for run in db.list_runs():
                    db.get_events(run["run_id"], limit=50)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    with WalSampler(path) as sampler:
        reader = threading.Thread(target=read)
        reader.start()
        writers = [threading.Thread(target=write, args=(who,)) for who in range(3)]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(WAIT)
        done.set()
        reader.join(WAIT)

    assert [] == errors
    assert sampler.samples > 100
    assert sampler.largest <= WAL_LIMIT_BYTES + MARGIN, (
        f"the WAL grew to {sampler.largest / 1e6:.1f} MB; its bound is "
        f"{WAL_LIMIT_BYTES / 1e6:.1f} MB")
    assert {("completed", 1000)} == {(r["status"], r["total_steps"])
                                     for r in db.list_runs()}


WRITER = textwrap.dedent("""
    import sys
    from pocoflow import Flow, Node, Store

    class Count(Node):
        def post(self, store, prep_res, exec_res):
            store["n"] += 1
            store["note"] = f"{store['n']:06d}" * 50
            return "again" if store["n"] < int(sys.argv[3]) else "done"

    count = Count()
    count.then("again", count)
    Flow(start=count, db_path=sys.argv[1], run_id=sys.argv[2], max_steps=10**6).run(
        Store({"n": 0}))
""")


def test_processes_writing_at_once_keep_the_wal_bounded(tmp_path: Path) -> None:
    """Two processes write 1,500 steps each to one file at the same time: the WAL they
    share stays within its bound too (each process folds it in its writers' turn)."""
    path = tmp_path / "shared.db"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    WorkflowDB(path)
    with WalSampler(path) as sampler:
        children = [subprocess.Popen([sys.executable, str(script), str(path), f"p{i}", "1500"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True) for i in range(2)]
        outputs = [child.communicate(timeout=WAIT)[0] for child in children]

    assert [0, 0] == [child.returncode for child in children], outputs
    assert sampler.largest <= WAL_LIMIT_BYTES + MARGIN, (
        f"the WAL grew to {sampler.largest / 1e6:.1f} MB")
    assert {("completed", 1500)} == {(r["status"], r["total_steps"])
                                     for r in WorkflowDB(path).list_runs()}


SCRIPT = textwrap.dedent("""
    import sys
    from pocoflow import Flow, Node, Store

    class Count(Node):
        def post(self, store, prep_res, exec_res):
            store["n"] += 1
            return "again" if store["n"] < 300 else "done"

    count = Count()
    count.then("again", count)
    Flow(start=count, db_path=sys.argv[1], run_id=sys.argv[2], max_steps=1000).run(
        Store({"n": 0}))
    print("done")
""")


def test_a_script_that_exits_leaves_its_runs_in_the_database_file(tmp_path: Path) -> None:
    """Three scripts each record a 300-step run and exit normally: no WAL is left beside
    the database (or an empty one), and a copy of the .db file alone holds all three."""
    path = tmp_path / "script.db"
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    for run_id in ("first", "second", "third"):
        done = subprocess.run([sys.executable, str(script), str(path), run_id],
                              capture_output=True, text=True, timeout=WAIT, check=False)
        assert (0, "done\n") == (done.returncode, done.stdout), done.stderr
        wal = Path(f"{path}-wal")
        assert not wal.exists() or 0 == wal.stat().st_size

    copy = tmp_path / "copy" / "script.db"
    copy.parent.mkdir()
    shutil.copy(path, copy)  # the file alone, as a careless backup takes it
    with sqlite3.connect(copy) as conn:
        found = conn.execute("SELECT run_id, status, total_steps FROM pf_runs "
                             "ORDER BY run_id").fetchall()
    assert [("first", "completed", 300), ("second", "completed", 300),
            ("third", "completed", 300)] == found


def test_an_idle_process_folds_the_wal_in(tmp_path: Path) -> None:
    """A process that keeps its database open but stops writing soon leaves the WAL
    empty: the .db file holds every run while the process idles."""
    path = tmp_path / "idle.db"
    counting_flow(path, 300, "idle-run").run(Store({"n": 0}))
    wal = Path(f"{path}-wal")
    deadline = time.monotonic() + WAIT
    while wal.exists() and wal.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.05)

    assert not wal.exists() or 0 == wal.stat().st_size
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        assert [(300,)] == conn.execute("SELECT total_steps FROM pf_runs").fetchall()
    assert os.path.exists(path)
