"""``pocoflow worker`` serves a queue until SIGTERM; ``pocoflow runs gc`` deletes old runs."""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pocoflow import WorkflowDB
from pocoflow.cli import main
from pocoflow.cli.workers import rate

FLOWS = textwrap.dedent("""
    from pocoflow import Flow, Node

    class Count(Node):
        def post(self, store, prep_res, exec_res):
            store["n"] = store.get("n", 0) + 1
            return "again" if store["n"] < 3 else "done"

    def build(db=None):
        count = Count()
        count.then("again", count)
        return Flow(count, db_path=db, flow_name="counting")

    flow = build()
""")
WAIT = 60.0


def submitted(folder: Path, module: str, source: str, db: str, runs: int) -> list[str]:
    """Write *source* as *module* in *folder*, and submit *runs* runs of its
    ``build(db)`` flow; their ids."""
    (folder / f"{module}.py").write_text(source)
    sys.path.insert(0, str(folder))
    try:
        flow = importlib.import_module(module).build(db)
        return [flow.submit({"i": i}) for i in range(runs)]
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(module, None)


def serve_until(folder: Path, flow: str, db: Path, done: Callable[[], bool],
                *options: str) -> tuple[int, str, str]:
    """Run `pocoflow worker FLOW --db DB` in *folder* until *done*(), then SIGTERM it;
    its exit code, stdout and stderr."""
    worker = subprocess.Popen([sys.executable, "-m", "pocoflow", "worker", flow,
                               "--db", str(db), *options], cwd=folder,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + WAIT
        while not done():
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        output, errors = worker.communicate(timeout=WAIT)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return worker.returncode, output, errors


def test_worker_runs_queued_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`pocoflow worker myflows:flow --db DB` completes the runs submitted to the queue,
    and exits 0 on SIGTERM."""
    db_path = tmp_path / "q.db"
    ids = submitted(tmp_path, "myflows", FLOWS, str(db_path), 5)
    db = WorkflowDB(db_path)
    code, output, _ = serve_until(tmp_path, "myflows:flow", db_path,
                                  lambda: db.count_runs().get("completed", 0) >= 5,
                                  "--concurrency", "2")
    assert 0 == code, output
    assert "serving queue 'default'" in output
    assert {3} == {db.get_run(run_id)["total_steps"] for run_id in ids}  # type: ignore[index]


FAILING = textwrap.dedent("""
    from pocoflow import Flow, Node

    class Fail(Node):
        def exec(self, prep_res):
            raise ValueError("upstream said \\x1b[2J no")

    def build(db=None):
        return Flow(Fail(), db_path=db, flow_name="failing")

    flow = build()
""")


def test_worker_says_on_stderr_what_goes_wrong(tmp_path: Path) -> None:
    """`pocoflow worker` prints its warnings (a run that failed, a database away) on
    stderr, one escaped line each: it printed only its start line, whatever happened."""
    db_path = tmp_path / "q.db"
    [run_id] = submitted(tmp_path, "failing", FAILING, str(db_path), 1)
    db = WorkflowDB(db_path)
    _, _, errors = serve_until(tmp_path, "failing:flow", db_path,
                               lambda: db.get_run(run_id)["status"] == "failed")  # type: ignore[index]
    said = [line for line in errors.splitlines() if f"Run '{run_id}' failed" in line]
    assert 1 == len(said), errors
    assert said[0].startswith("pocoflow: WARNING: ")
    assert "\\x1b[2J" in said[0]
    assert "\x1b" not in errors


def test_runs_gc_deletes_old_ended_runs_and_says_what(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`runs gc DB --older-than 0s --json` deletes the ended runs with their events and
    checkpoints, and leaves a paused run."""
    from pocoflow import Flow, Node, Pause

    class Ask(Node):
        def exec(self, prep_res: object) -> None:
            raise Pause("wait")

    db_path = tmp_path / "gc.db"
    Flow(Node(), db_path=db_path, run_id="done-1").run({})
    Flow(Node(), db_path=db_path, run_id="done-2").run({})
    Flow(Ask(), db_path=db_path, run_id="paused").run({})
    time.sleep(0.01)

    assert 0 == main(["runs", "gc", str(db_path), "--older-than", "0s", "--json"])
    report = json.loads(capsys.readouterr().out)

    assert 2 == report["deleted"]["runs"]
    assert 8 == report["deleted"]["events"]  # flow_start, node_start, node_end, flow_end
    assert ["paused"] == [r["run_id"] for r in WorkflowDB(db_path).list_runs()]


def test_runs_gc_needs_older_than(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --older-than, gc is a usage error (exit 2) and deletes nothing."""
    db_path = tmp_path / "gc.db"
    WorkflowDB(db_path)

    assert 2 == main(["runs", "gc", str(db_path)])
    assert "--older-than" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "expected"), [("10", (10, 1.0)), ("100/m", (100, 60.0)),
                                                ("50/30s", (50, 30.0)), ("5/2h", (5, 7200.0))])
def test_rate_reads_runs_per_period(text: str, expected: tuple[int, float]) -> None:
    """--rate takes N, N/m, N/30s, N/2h."""
    assert expected == rate(text)


def test_a_bad_rate_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--rate fast exits 2 naming the value and an example."""
    assert 2 == main(["worker", "x:flow", "--rate", "fast"])
    assert "'fast' is not a rate" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--rate", "1/" + "9" * 400 + "h", "at most a year"),
    ("--grace", "nan", "is not a number of seconds from 0"),
    ("--grace", "-1", "is not a number of seconds from 0"),
])
def test_a_limit_a_worker_cannot_use_is_a_usage_error(
        option: str, value: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A rate period no worker would ever get past, or a grace period that is no time,
    exits 2 naming the value (it was accepted, and the worker never claimed a run)."""
    assert 2 == main(["worker", "x:flow", option, value])
    assert says in capsys.readouterr().err


