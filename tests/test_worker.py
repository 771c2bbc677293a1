"""A worker's life: stopping with and without a grace period, being cancelled by the
service that runs it, and serving through the ``pocoflow worker`` command."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from pocoflow import Flow, Node, Pause, RunHandle, WorkflowDB
from pocoflow.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
WAIT = 60.0


class Slow(Node):
    """Step *i*: its exec tells the test it started, then sleeps *sleep* seconds."""

    def __init__(self, i: int, started: list[tuple[str, int]], sleep: float) -> None:
        super().__init__(name=f"Slow{i}")
        self.i, self.started, self.sleep = i, started, sleep

    def prep(self, store: Any) -> Any:
        return store["job"]

    def exec(self, job: Any) -> Any:
        self.started.append((job, self.i))
        time.sleep(self.sleep)
        return self.i

    def post(self, store: Any, prep_res: Any, i: Any) -> None:
        store["done"] = [*store.get("done", []), i]


def slow_flow(db: Any, started: list[tuple[str, int]], sleep: float, steps: int = 3) -> Flow:
    nodes = [Slow(i, started, sleep) for i in range(steps)]
    for first, second in itertools.pairwise(nodes):
        first.then("default", second)
    return Flow(start=nodes[0], db=db, flow_name="slow")


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.01)


def serve_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=anyio.run, args=(worker.run_async,), daemon=True)
    thread.start()
    return thread


def test_stop_lets_runs_in_flight_finish_and_claims_nothing_more(db_url: str) -> None:
    """stop() within the grace period: the run in flight completes, the one queued behind
    it stays queued, and run_async returns."""
    started: list[tuple[str, int]] = []
    db = WorkflowDB(db_url)
    flow = slow_flow(db, started, 0.2)
    first, second = flow.submit({"job": "a"}), flow.submit({"job": "b"})
    worker = Worker(flow, concurrency=1, grace_period=WAIT)
    thread = serve_in_thread(worker)
    wait_for(lambda: ("a", 0) in started, "the first run's first step")

    worker.stop()
    thread.join(WAIT)

    assert not thread.is_alive()
    assert ("completed", "queued") == (db.get_run(first)["status"],  # type: ignore[index]
                                       db.get_run(second)["status"])  # type: ignore[index]
    assert [] == worker.running


def test_stop_now_hands_the_runs_back_and_another_worker_goes_on(db_url: str) -> None:
    """stop(now=True): the run in flight stops after its step's attempt (checkpointed) and
    is handed back: queued, attempts as before the claim, its steps so far kept; a second
    worker finishes it without running a checkpointed step again."""
    started: list[tuple[str, int]] = []
    db = WorkflowDB(db_url)
    flow = slow_flow(db, started, 0.3)
    run_id = flow.submit({"job": "a"})
    worker = Worker(flow, concurrency=1)
    thread = serve_in_thread(worker)
    wait_for(lambda: ("a", 1) in started, "the second step")

    worker.stop(now=True)
    thread.join(WAIT)
    run = db.get_run(run_id)
    assert ("queued", 0, None) == (run["status"], run["attempts"], run["owner"])  # type: ignore[index]
    assert [0, 1] == [c["step"] for c in db.checkpoint_steps(run_id)]

    again = Worker(slow_flow(db, started, 0.0), concurrency=1)
    thread = serve_in_thread(again)
    store = RunHandle.for_run(run_id, db).wait(WAIT)
    again.stop()
    thread.join(WAIT)

    assert [0, 1, 2] == store["done"]
    assert [("a", 0), ("a", 1), ("a", 2)] == started
    assert 1 == db.get_run(run_id)["attempts"]  # type: ignore[index]


def test_cancelling_the_task_that_runs_a_worker_hands_its_runs_back(db_url: str) -> None:
    """A service cancels the task awaiting worker.run_async (its shutdown): the runs in
    flight are handed back to the queue, not recorded as cancelled, and the cancel goes
    on to the service."""
    started: list[tuple[str, int]] = []
    db = WorkflowDB(db_url)
    flow = slow_flow(db, started, 0.3)
    run_id = flow.submit({"job": "a"})
    outcome: list[str] = []

    async def service() -> None:
        worker = Worker(flow, concurrency=1)
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(worker.run_async)
                while ("a", 0) not in started:
                    await anyio.sleep(0.01)
                scope.cancel()
        outcome.append("cancelled" if scope.cancelled_caught else "returned")

    anyio.run(service)

    run = db.get_run(run_id)
    assert ["cancelled"] == outcome
    assert ("queued", None) == (run["status"], run["owner"])  # type: ignore[index]
    assert "flow_end" == db.get_events(run_id)[-1]["event"]


def test_the_pocoflow_worker_command_serves_a_flow_until_sigterm(db_url: str,
                                                                 tmp_path: Path) -> None:
    """``pocoflow worker module:flow --db URL`` runs the flow's queued runs with this Worker
    and exits 0 on SIGTERM, its run completed."""
    (tmp_path / "cliflows.py").write_text(textwrap.dedent("""
        from pocoflow import Flow, Node

        class Shout(Node):
            def prep(self, store):
                return store["word"]

            def exec(self, word):
                return word.upper()

            def post(self, store, word, loud):
                store["loud"] = loud

        def build():
            return Flow(start=Shout(), flow_name="cli")
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        import cliflows  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("cliflows", None)
    db = WorkflowDB(db_url)
    flow = cliflows.build()
    flow.db = db
    run_id = flow.submit({"word": "hi"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}

    proc = subprocess.Popen([sys.executable, "-m", "pocoflow", "worker", "cliflows:build",
                             "--db", db_url, "--concurrency", "2"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        store = RunHandle.for_run(run_id, db).wait(WAIT)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert 0 == proc.returncode, output
    assert "HI" == store["loud"]
    assert "worker: serving queue 'default' of cliflows:build" in output


class Gate(Node):
    """Pauses its run until the store says ``approved``."""

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        if not store.get("approved"):
            raise Pause("needs approval")


def test_the_rate_limit_counts_a_resumed_run_as_a_start(db_url: str) -> None:
    """rate=1 per 1.5 s. A run paused at its first start is resumed (db.resume) a period
    later, as a new run is submitted: the two starts fall a whole period apart, since
    the resumed run's start counts as a first start does. (It was neither counted nor
    held back, so both started at once.)"""
    from datetime import datetime

    db = WorkflowDB(db_url)
    flow = Flow(start=Gate(), db=db, flow_name="gated")
    paused = flow.submit({"job": "a"})
    worker = Worker(flow, concurrency=4, rate=1, rate_period=1.5)
    thread = serve_in_thread(worker)
    try:
        wait_for(lambda: db.get_run(paused)["status"] == "paused", "the pause")  # type: ignore[index]
        time.sleep(1.6)  # the first start's period is over
        db.resume(paused, updates={"approved": True})
        fresh = flow.submit({"approved": True})
        for run_id in (paused, fresh):
            RunHandle.for_run(run_id, db).wait(WAIT)
    finally:
        worker.stop()
        thread.join(WAIT)

    def start_of(run_id: str, kind: str) -> datetime:
        [event] = [e for e in db.get_events(run_id) if e["event"] == kind]
        return datetime.fromisoformat(event["ts"])

    apart = abs((start_of(fresh, "flow_start") - start_of(paused, "flow_resume")).total_seconds())
    assert apart >= 1.2, apart


def test_a_database_timeout_while_preparing_a_run_leaves_it_for_another_try(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database times out (a lock held elsewhere) while a worker reads a claimed
    run's checkpoints: the run is not failed for it; it is taken up again once its lease
    runs out, and completes. (A PocoFlow error there meant "it can never start", and
    DatabaseTimeoutError is one.)"""
    from pocoflow.errors import DatabaseTimeoutError
    from pocoflow.persistence import resume

    real = resume.prepare_claimed
    calls: list[str] = []

    def flaky(flow: Any, records: Any, row: Any) -> Any:
        calls.append(row["run_id"])
        if len(calls) == 1:
            raise DatabaseTimeoutError("PostgreSQL server cancelled a statement (test)")
        return real(flow, records, row)

    monkeypatch.setattr(resume, "prepare_claimed", flaky)
    started: list[tuple[str, int]] = []
    db = WorkflowDB(db_url, lease_seconds=1.0)
    flow = slow_flow(db, started, 0.0, steps=2)
    run_id = flow.submit({"job": "a"})
    worker = Worker(flow, concurrency=1, poll_interval=0.1)
    thread = serve_in_thread(worker)
    try:
        store = RunHandle.for_run(run_id, db).wait(WAIT)
    finally:
        worker.stop()
        thread.join(WAIT)
    assert [0, 1] == store["done"]
    assert [run_id, run_id] == calls
    assert "completed" == db.get_run(run_id)["status"]  # type: ignore[index]
