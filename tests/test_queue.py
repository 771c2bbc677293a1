"""The queue in one process: submitting (validation, dedup, priority, not_before), what a
worker claims and what it leaves alone, RunHandle.for_run, forks, and deleting old runs.

Workers here run in a thread of this process (``serving``); the tests with worker
processes are in test_worker_processes.py.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest
import sqlalchemy

from pocoflow import (
    Flow,
    Node,
    Pause,
    ResumeError,
    RunExistsError,
    RunFailedError,
    RunHandle,
    RunNotFoundError,
    WorkflowDB,
)
from pocoflow.persistence.queue import Limits
from pocoflow.persistence.records import RunRecords
from pocoflow.worker import Worker
from tests.postgres_server import create_database

WAIT = 60.0


@contextlib.contextmanager
def serving(flow: Flow, **options: Any) -> Iterator[Worker]:
    """A worker serving *flow* in a thread of this process while the block runs."""
    worker = Worker(flow, **options)
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            anyio.run(worker.run_async)
        except BaseException as exc:  # re-raised in the test below
            failed.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(WAIT)
    assert not thread.is_alive(), "the worker did not stop"
    if failed:
        raise failed[0]


def wait_for(check: Any, what: str = "the condition", timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} never held"
        time.sleep(0.02)


class Record(Node):
    """Appends (store['job'], its name) to a list shared by the test."""

    def __init__(self, seen: list[tuple[str, str]], name: str = "Record") -> None:
        super().__init__(name=name)
        self.seen = seen

    def prep(self, store: Any) -> Any:
        return store.get("job")

    def exec(self, job: Any) -> Any:
        self.seen.append((job, self.name))
        return job

    def post(self, store: Any, prep_res: Any, job: Any) -> None:
        store[f"done_{self.name}"] = True


class Gate(Node):
    """Waits in exec until the test opens its gate."""

    def __init__(self, gate: threading.Event, inside: threading.Event) -> None:
        super().__init__(name="Gate")
        self.gate, self.inside = gate, inside

    def exec(self, prep_res: Any) -> str:
        self.inside.set()
        assert self.gate.wait(WAIT)
        return "through"

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["gate"] = exec_res


def chain(*nodes: Node) -> Node:
    for first, second in itertools.pairwise(nodes):
        first.then("default", second)
    return nodes[0]


# ── submitting ──────────────────────────────────────────────────────────────

def test_submit_queues_a_run_with_its_input_and_runs_nothing(db_url: str) -> None:
    """flow.submit records a queued run (queue, priority, its input store) and returns its
    id at once; RunHandle.for_run reads its status; no node runs."""
    seen: list[tuple[str, str]] = []
    flow = Flow(start=Record(seen), db_url=db_url, flow_name="jobs")

    run_id = flow.submit({"job": "a"}, queue="q", priority=3)

    run = WorkflowDB(db_url).get_run(run_id)
    assert ("queued", "q", 3, 0, "jobs") == (run["status"], run["queue"], run["priority"],
                                             run["attempts"], run["flow_name"])  # type: ignore[index]
    assert "queued" == RunHandle.for_run(run_id, WorkflowDB(db_url)).status
    assert '{"job":"a"}' == WorkflowDB(db_url).get_run_input(run_id)["input_json"]  # type: ignore[index]
    assert [] == seen


@pytest.mark.anyio
async def test_submit_async_queues_a_run(db_url: str) -> None:
    """submit_async does what submit does, off the event loop."""
    flow = Flow(start=Node(), db_url=db_url, flow_name="jobs")

    run_id = await flow.submit_async({"x": 1}, dedup_key="k")

    assert "queued" == WorkflowDB(db_url).get_run(run_id)["status"]  # type: ignore[index]
    assert run_id == await flow.submit_async({"x": 2}, dedup_key="k")


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"queue": ""}, ValueError, "queue must be a non-empty str"),
    ({"queue": "a\x00b"}, ValueError, "queue must be a non-empty str without NUL"),
    ({"priority": 1.5}, TypeError, "priority must be an int"),
    ({"priority": True}, TypeError, "priority must be an int"),
    ({"dedup_key": ""}, ValueError, "dedup_key must be a non-empty str"),
    ({"run_id": 7}, TypeError, "run_id must be a str"),
    ({"run_id": ""}, ValueError, "run_id must not be empty"),
    ({"not_before": "tomorrow"}, ValueError, "submit: not_before='tomorrow' is not an ISO"),
    ({"not_before": 5}, TypeError, "submit: not_before must be a datetime, a timedelta"),
])
def test_submit_refuses_bad_options_and_queues_nothing(db_url: str, options: dict[str, Any],
                                                       error: type[Exception],
                                                       match: str) -> None:
    """A bad submit option is an error naming it; nothing is queued."""
    flow = Flow(start=Node(), db_url=db_url, flow_name="jobs")

    with pytest.raises(error, match=match):
        flow.submit({}, **options)
    assert [] == WorkflowDB(db_url).list_runs()


def test_submit_on_a_run_id_that_exists_is_a_run_exists_error(db_url: str) -> None:
    """submit(run_id=...) of an id already recorded raises RunExistsError, not a driver's
    IntegrityError, and changes nothing."""
    flow = Flow(start=Node(), db_url=db_url, flow_name="jobs")
    flow.submit({"n": 1}, run_id="fixed")

    with pytest.raises(RunExistsError, match="'fixed' already exists"):
        flow.submit({"n": 2}, run_id="fixed")
    assert '{"n":1}' == WorkflowDB(db_url).get_run_input("fixed")["input_json"]  # type: ignore[index]


@pytest.mark.parametrize("holder", ["itself", "another run", "nobody"])
def test_a_taken_run_id_is_refused_whatever_its_dedup_key(db_url: str, holder: str) -> None:
    """submit(run_id=taken, dedup_key=k) raises RunExistsError whoever holds k (the run
    itself, another run in flight, nobody), and changes nothing."""
    db = WorkflowDB(db_url)
    flow = Flow(start=Node(), db=db, flow_name="jobs")
    flow.submit({"n": 1}, run_id="taken", dedup_key="k" if holder == "itself" else None)
    if holder == "another run":
        flow.submit({"n": 2}, run_id="other", dedup_key="k")
    runs_before = sorted(run["run_id"] for run in db.list_runs())

    with pytest.raises(RunExistsError, match="'taken' already exists"):
        flow.submit({"n": 3}, run_id="taken", dedup_key="k")
    assert runs_before == sorted(run["run_id"] for run in db.list_runs())
    assert '{"n":1}' == db.get_run_input("taken")["input_json"]  # type: ignore[index]


def test_concurrent_submits_of_one_run_id_and_key_queue_it_once(db_url: str) -> None:
    """Twelve threads submit the same run_id with the same dedup_key at once: one queues
    it, the others get RunExistsError; one row."""
    flow = Flow(start=Node(), db_url=db_url, flow_name="jobs")
    flow.submit({}, run_id="warm-up")  # opened (and migrated) before the race
    outcome: list[Any] = []
    go = threading.Barrier(12)

    def submit() -> None:
        go.wait()
        try:
            outcome.append(flow.submit({}, run_id="once", dedup_key="k"))
        except RunExistsError as exc:
            outcome.append(type(exc))

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)

    assert sorted(outcome, key=str) == sorted(["once"] + [RunExistsError] * 11, key=str)
    queued = [run["run_id"] for run in WorkflowDB(db_url).list_runs()]
    assert ["once"] == [run_id for run_id in queued if run_id != "warm-up"]


def race_a_key(flow: Flow, db: WorkflowDB, key: str, holder: str) -> list[Any]:
    """Eight threads submit with *key* while one cancels its *holder*; what each got."""
    go = threading.Barrier(9)
    got: list[Any] = []

    def submit() -> None:
        go.wait()
        try:
            got.append(flow.submit({}, dedup_key=key))
        except Exception as exc:
            got.append(exc)

    def cancel() -> None:
        go.wait()
        db.cancel_run(holder)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    threads.append(threading.Thread(target=cancel))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return got


def test_submits_racing_a_key_whose_holder_ends_queue_one_new_run(db_url: str) -> None:
    """While the run holding a dedup_key is cancelled, eight threads submit with that key:
    every submit returns a run id (no database error), and one run at most is in flight
    with the key afterwards."""
    db = WorkflowDB(db_url)
    flow = Flow(start=Node(), db=db, flow_name="jobs")
    for round_ in range(80):
        key = f"k{round_}"
        got = race_a_key(flow, db, key, flow.submit({}, dedup_key=key))

        assert [g for g in got if not isinstance(g, str)] == []
        in_flight = [r for r in db.list_runs(flow_name="jobs")
                     if r["status"] in ("queued", "running") and r["run_id"] in got]
        assert len(in_flight) <= 1


@pytest.mark.parametrize("odd", ["s\x00ub", "a\udcffb"])
def test_a_run_id_or_key_with_nul_or_a_lone_surrogate_is_stored_escaped(
    db_url: str, odd: str
) -> None:
    """A run id or dedup_key no database column takes as is (NUL, a lone surrogate) is
    stored escaped, as every other path stores it, and found again by what was given."""
    db = WorkflowDB(db_url)
    flow = Flow(start=Node(), db=db, flow_name="jobs")

    run_id = flow.submit({}, run_id=odd, dedup_key=odd)

    assert db.get_run(odd) is not None
    assert db.get_run(run_id) is not None
    assert "queued" == RunHandle.for_run(odd, db).status
    assert run_id == flow.submit({}, dedup_key=odd)  # the key is found again too


def test_dedup_key_returns_the_run_in_flight_and_a_new_run_once_it_ended(db_url: str) -> None:
    """A second submit with a dedup_key held by a queued run, then by the same run while it
    runs, returns that run's id; once it completed, the key queues a new run."""
    gate, inside = threading.Event(), threading.Event()
    flow = Flow(start=Gate(gate, inside), db_url=db_url, flow_name="dedup")
    first = flow.submit({}, dedup_key="invoice-7")
    assert first == flow.submit({}, dedup_key="invoice-7")
    other = flow.submit({}, dedup_key="invoice-8")

    with serving(flow, concurrency=1):
        assert inside.wait(WAIT)
        running = WorkflowDB(db_url).get_run(first)["status"]  # type: ignore[index]
        again = flow.submit({}, dedup_key="invoice-7")
        gate.set()
        RunHandle.for_run(first, WorkflowDB(db_url)).wait(WAIT)
        RunHandle.for_run(other, WorkflowDB(db_url)).wait(WAIT)
    later = flow.submit({}, dedup_key="invoice-7")

    assert ("running", first) == (running, again)
    assert later not in (first, other)
    assert "queued" == WorkflowDB(db_url).get_run(later)["status"]  # type: ignore[index]


def test_one_worker_takes_runs_by_priority_then_in_submission_order(db_url: str) -> None:
    """One worker, one run at a time: higher priority first; equal priority in the order
    they were submitted."""
    seen: list[tuple[str, str]] = []
    flow = Flow(start=Record(seen), db_url=db_url, flow_name="prio")
    order = [("low-1", 0), ("high-1", 9), ("mid-1", 5), ("low-2", 0), ("high-2", 9),
             ("mid-2", 5), ("low-3", 0)]
    run_ids = [flow.submit({"job": job}, priority=p) for job, p in order]

    with serving(flow, concurrency=1):
        for run_id in run_ids:
            RunHandle.for_run(run_id, WorkflowDB(db_url)).wait(WAIT)

    assert ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2", "low-3"] == [
        job for job, _ in seen]


def test_not_before_holds_a_run_back_until_its_time(db_url: str) -> None:
    """A run submitted with not_before (a time, or a delay) is not started before then;
    a run queued after it without one starts first."""
    seen: list[tuple[str, str]] = []
    flow = Flow(start=Record(seen), db_url=db_url, flow_name="later")
    at = datetime.now(timezone.utc) + timedelta(seconds=1.5)
    timed = flow.submit({"job": "timed"}, not_before=at)
    delayed = flow.submit({"job": "delayed"}, not_before=timedelta(seconds=1))
    now = flow.submit({"job": "now"})

    with serving(flow, concurrency=1):
        for run_id in (timed, delayed, now):
            RunHandle.for_run(run_id, WorkflowDB(db_url)).wait(WAIT)

    db = WorkflowDB(db_url)
    assert "now" == seen[0][0]
    assert datetime.fromisoformat(db.get_run(timed)["started_at"]) >= at  # type: ignore[index]
    assert db.get_run(delayed)["started_at"] >= db.get_run(delayed)["not_before"]  # type: ignore[index]


def test_times_at_the_ends_of_the_calendar_compare_right(db_url: str) -> None:
    """Times are compared as stored text: a not_before in the year 999 (long past) lets the
    run start at once, list_runs(since=...) with it finds the run, and datetime.max as a
    bound is a bound, not an error."""
    seen: list[tuple[str, str]] = []
    flow = Flow(start=Record(seen), db_url=db_url, flow_name="ancient")
    long_ago = datetime(999, 1, 1, tzinfo=timezone.utc)
    run_id = flow.submit({"job": "old"}, not_before=long_ago)
    with serving(flow, concurrency=1):
        RunHandle.for_run(run_id, WorkflowDB(db_url)).wait(WAIT)

    db = WorkflowDB(db_url)
    assert "0999-01-01T00:00:00.000000+00:00" == db.get_run(run_id)["not_before"]  # type: ignore[index]
    assert [run_id] == [r["run_id"] for r in db.list_runs(since=long_ago, until=datetime.max)]
    with pytest.raises(ValueError, match=r"list_runs: until=.* is out of range in UTC"):
        db.list_runs(until=datetime.max.replace(tzinfo=timezone(-timedelta(hours=1))))


# ── what a worker takes, and what it leaves ─────────────────────────────────

def test_a_worker_takes_only_its_own_flow_s_runs_from_a_shared_queue(db_url: str) -> None:
    """Two flows submit to one queue: a worker of one runs only that flow's runs and
    leaves the other's queued (it would run them with the wrong graph)."""
    seen: list[tuple[str, str]] = []
    mine = Flow(start=Record(seen, "Mine"), db_url=db_url, flow_name="mine")
    theirs = Flow(start=Record(seen, "Theirs"), db_url=db_url, flow_name="theirs")
    their_run = theirs.submit({"job": "t"})
    my_run = mine.submit({"job": "m"})

    with serving(mine, concurrency=2):
        RunHandle.for_run(my_run, WorkflowDB(db_url)).wait(WAIT)

    assert [("m", "Mine")] == seen
    assert "queued" == WorkflowDB(db_url).get_run(their_run)["status"]  # type: ignore[index]


def test_a_run_that_cannot_start_is_failed_not_left_running(db_url: str) -> None:
    """A queued run whose input names a start node the worker's flow does not have is
    failed with the reason, at once (not left running, heartbeated by a worker that is
    not running it)."""
    Flow(start=Record([], "OldStart"), db_url=db_url, flow_name="renamed").submit({}, run_id="r")
    flow = Flow(start=Record([], "NewStart"), db_url=db_url, flow_name="renamed")

    with serving(flow, concurrency=1), pytest.raises(RunFailedError, match="OldStart"):
        RunHandle.for_run("r", WorkflowDB(db_url)).wait(WAIT)

    run = WorkflowDB(db_url).get_run("r")
    assert ("failed", None) == (run["status"], run["completed_at"] and None)  # type: ignore[index]


def dead_claim(db_url: str, flow_name: str, lease: float) -> RunRecords:
    """Claim the queued runs of *flow_name* as a worker would, then stop heartbeating them
    (the worker died): they go stale after *lease* seconds."""
    records = RunRecords(db_url, lease_seconds=lease)
    taken = records.claim_queued("default", Limits(10, flow_name=flow_name), max_attempts=3)
    for row in taken:
        records.database.disown(row["run_id"])
    assert taken
    return records


def test_a_cancel_asked_before_its_worker_died_is_honoured_not_lost(db_url: str) -> None:
    """A cancel was asked (recorded) for a run whose worker then died before seeing it: the
    worker that finds the run stale ends it cancelled instead of running it again."""
    seen: list[tuple[str, str]] = []
    flow = Flow(start=Record(seen), db=WorkflowDB(db_url, lease_seconds=0.5),
                flow_name="doomed")
    run_id = flow.submit({"job": "x"})
    dead_claim(db_url, "doomed", 0.5)
    assert "requested" == WorkflowDB(db_url).cancel_run(run_id)

    with serving(flow, concurrency=1):
        RunHandle.for_run(run_id, WorkflowDB(db_url)).wait(WAIT)

    assert "cancelled" == WorkflowDB(db_url).get_run(run_id)["status"]  # type: ignore[index]
    assert [] == seen


def test_a_run_whose_worker_died_is_taken_over_while_new_runs_keep_coming(
    db_url: str,
) -> None:
    """A worker kept busy by a stream of submits (on PostgreSQL each one a NOTIFY that
    wakes it) still looks for runs whose worker died, and finishes them while the stream
    goes on: it does not wait for a quiet moment."""
    seen: list[tuple[str, str]] = []
    flow = Flow(start=Record(seen), db=WorkflowDB(db_url, lease_seconds=0.5),
                flow_name="busy")
    orphan = flow.submit({"job": "orphan"})
    dead_claim(db_url, "busy", 0.5)
    db = WorkflowDB(db_url)

    def orphan_done() -> bool:
        return db.get_run(orphan)["status"] == "completed"  # type: ignore[index]

    submitted = 0
    with serving(flow, concurrency=4, poll_interval=0.5):
        deadline = time.monotonic() + WAIT
        while not orphan_done():
            assert time.monotonic() < deadline, "the orphaned run was never taken over"
            flow.submit({"job": f"new-{submitted}"})
            submitted += 1
            time.sleep(0.02)
        flow.submit({"job": "last"})  # the stream was still going when it finished
        wait_for(lambda: db.count_runs().get("queued", 0) == 0, "the queue emptied")

    assert ("orphan", "Record") in seen
    assert submitted >= 10  # it waited out the lease under a stream of submits


class Ask(Node):
    """Pauses until the store holds as many approvals as it asks for."""

    def __init__(self, seen: list[int]) -> None:
        super().__init__(name="Ask")
        self.seen = seen

    def prep(self, store: Any) -> Any:
        return store.get("approvals", 0), store.get("needed", 3)

    def exec(self, counts: Any) -> int:
        self.seen.append(counts[0])
        if counts[0] < counts[1]:
            raise Pause("more approvals", have=counts[0])
        return counts[0]

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["approved_with"] = exec_res


def test_resumes_by_a_human_do_not_count_as_workers_lost(db_url: str) -> None:
    """A run paused and resumed (db.resume) three times, then its worker dies once, with
    max_attempts=2: it is taken up again, not failed as if it had killed two workers;
    each resume starts the count afresh."""
    seen: list[int] = []
    db = WorkflowDB(db_url, lease_seconds=0.5)
    flow = Flow(start=Ask(seen), db=db, flow_name="asks")
    run_id = flow.submit({"needed": 3})
    with serving(flow, concurrency=1, max_attempts=2):
        for approvals in (1, 2):
            RunHandle.for_run(run_id, db).wait(WAIT)
            assert "paused" == db.get_run(run_id)["status"]  # type: ignore[index]
            db.resume(run_id, updates={"approvals": approvals})
            wait_for(lambda: len(seen) == approvals + 1, "the resumed run")  # noqa: B023
        RunHandle.for_run(run_id, db).wait(WAIT)
    assert "paused" == db.get_run(run_id)["status"]  # type: ignore[index]
    db.resume(run_id, updates={"approvals": 3})
    assert 0 == db.get_run(run_id)["attempts"]  # type: ignore[index]
    dead_claim(db_url, "asks", 0.5)  # attempt 1 dies

    with serving(flow, concurrency=1, max_attempts=2):
        store = RunHandle.for_run(run_id, db).wait(WAIT)

    run = db.get_run(run_id)
    assert ("completed", 2) == (run["status"], run["attempts"])  # type: ignore[index]
    assert 3 == store["approved_with"]


def test_a_human_s_answer_is_not_applied_again_after_it_was_checkpointed(
        db_url: str) -> None:
    """The updates of a db.resume are applied by the worker that goes on with the run;
    a worker that takes the run up after a later checkpoint does not apply them again
    over what the run did since."""
    from pocoflow.persistence import queue
    from pocoflow.persistence.connect import write_connection

    db = WorkflowDB(db_url)
    seen: list[int] = []
    flow = Flow(start=Ask(seen), db=db, flow_name="asks")
    run_id = flow.submit({"needed": 1})
    with serving(flow, concurrency=1):
        RunHandle.for_run(run_id, db).wait(WAIT)
    db.resume(run_id, updates={"approvals": 1})
    stored = db.get_run(run_id)["resume_updates"]  # type: ignore[index]
    records = RunRecords(db_url)
    with write_connection(records.database.engine) as conn:
        assert '{"approvals": 1}' == queue.pending_updates(conn, run_id, stored)
    with serving(flow, concurrency=1):
        RunHandle.for_run(run_id, db).wait(WAIT)
    with write_connection(records.database.engine) as conn:
        assert queue.pending_updates(conn, run_id, stored) is None


def test_a_worker_that_cannot_reach_the_database_keeps_trying(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim that fails (the database is away) is logged and tried again later; the
    worker does not stop, and runs the run once the database answers again."""
    seen: list[tuple[str, str]] = []
    flow = Flow(start=Record(seen), db_url=db_url, flow_name="flaky")
    run_id = flow.submit({"job": "x"})
    records = flow.db.records  # type: ignore[union-attr]
    real = records.claim_queued
    calls = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= 2:
            raise ConnectionError("the database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(records, "claim_queued", flaky)
    with serving(flow, concurrency=1, poll_interval=0.05):
        RunHandle.for_run(run_id, WorkflowDB(db_url)).wait(WAIT)

    assert [("x", "Record")] == seen
    assert len(calls) >= 3


@pytest.mark.parametrize(("options", "match"), [
    ({"concurrency": 0}, "concurrency must be an int from 1 to"),
    ({"concurrency": 2**63}, "concurrency must be an int from 1 to 2147483647"),
    ({"max_attempts": 1.5}, "max_attempts must be an int from 1 to"),
    ({"queue_concurrency": 0}, "queue_concurrency must be None or an int from 1 to"),
    ({"rate": -1}, "rate must be None or an int from 1 to"),
    ({"rate_period": 0}, "rate_period must be a number of seconds > 0"),
    ({"rate_period": float("inf")}, "rate_period must be a number of seconds > 0, at most"),
    ({"poll_interval": -1}, "poll_interval must be a number of seconds > 0"),
    ({"grace_period": -1}, "grace_period must be a number of seconds >= 0"),
    ({"queue": ""}, "queue must be a non-empty str"),
    ({"queue": "a\udcffb"}, "queue must be a non-empty str without NUL"),
])
def test_worker_refuses_bad_options(db_url: str, options: dict[str, Any], match: str) -> None:
    """A bad Worker option is a ValueError naming it."""
    with pytest.raises(ValueError, match=match):
        Worker(Flow(start=Node(), db_url=db_url), **options)


def test_worker_needs_a_database() -> None:
    """A Worker of a flow without a database says how to give one."""
    with pytest.raises(ValueError, match="has no database"):
        Worker(Flow(start=Node()))


# ── RunHandle.for_run ───────────────────────────────────────────────────────

class Boom(Node):
    def exec(self, prep_res: Any) -> None:
        raise RuntimeError("kaboom")


def test_run_handle_for_run_follows_a_queued_run_to_its_end(db_url: str) -> None:
    """for_run: 'queued' before a worker takes the run; wait() returns the final store when
    a worker completes it; RunFailedError (with the error) for a run that failed;
    TimeoutError when it does not end in time; RunNotFoundError for no such run."""
    db = WorkflowDB(db_url)
    flow = Flow(start=chain(Record([], "A"), Record([], "B")), db=db, flow_name="handle")
    ok = flow.submit({"job": "ok"})
    bad = Flow(start=Boom(), db=db, flow_name="boom").submit({})
    handle = RunHandle.for_run(ok, db)

    assert ("queued", False) == (handle.status, handle.is_done)
    with pytest.raises(TimeoutError, match=r"did not stop within 0\.2 s; it is queued"):
        handle.wait(0.2)
    for bad_timeout, error in (("1", TypeError), (True, TypeError), (float("nan"), ValueError)):
        with pytest.raises(error, match=r"RunHandle\.wait\(timeout="):
            handle.wait(bad_timeout)  # type: ignore[arg-type]
    with serving(flow, concurrency=1):
        store = handle.wait(WAIT)
    with serving(Flow(start=Boom(), db=db, flow_name="boom")), \
            pytest.raises(RunFailedError, match="kaboom"):
        RunHandle.for_run(bad, db).wait(WAIT)

    assert {"job": "ok", "done_A": True, "done_B": True} == dict(store)
    assert ("completed", True) == (handle.status, handle.is_done)
    with pytest.raises(RunNotFoundError, match="No run 'nope'"):
        _ = RunHandle.for_run("nope", db).status


@pytest.mark.anyio
async def test_run_handle_wait_async_returns_and_can_be_cancelled(db_url: str) -> None:
    """wait_async returns the store of a run a worker completes; a wait_async cancelled
    while the run is still queued stops waiting at once."""
    db = WorkflowDB(db_url)
    flow = Flow(start=Record([], "A"), db=db, flow_name="async-handle")
    run_id = await flow.submit_async({"job": "j"})
    handle = RunHandle.for_run(run_id, db)

    with anyio.move_on_after(0.3) as scope:
        await handle.wait_async()
    assert scope.cancelled_caught
    thread = threading.Thread(target=lambda: anyio.run(_serve_until, flow, run_id, db))
    thread.start()
    store = await handle.wait_async()
    thread.join(WAIT)

    assert "j" == store["job"]


async def _serve_until(flow: Flow, run_id: str, db: WorkflowDB) -> None:
    worker = Worker(flow, concurrency=1)
    async with anyio.create_task_group() as group:
        group.start_soon(worker.run_async)
        while db.get_run(run_id)["status"] != "completed":  # type: ignore[index]
            await anyio.sleep(0.02)
        worker.stop()


@pytest.fixture
def pg_url(postgres_base_url: str) -> str:
    """A fresh database on the test PostgreSQL server (for what only PostgreSQL does)."""
    return create_database(postgres_base_url, f"pf_queue_{time.monotonic_ns()}")


def test_an_idle_worker_wakes_on_a_submit_without_polling(pg_url: str) -> None:
    """PostgreSQL: a worker that polls only every 30 s starts a run submitted while it
    idles promptly, woken by the submit's NOTIFY; a RunHandle waiting on the run is woken
    by the run's end the same way."""
    seen: list[tuple[str, str]] = []
    flow = Flow(start=Record(seen), db_url=pg_url, flow_name="woken")
    with serving(flow, concurrency=1, poll_interval=30.0):
        time.sleep(0.5)  # the worker has looked at the empty queue and sleeps
        run_id = flow.submit({"job": "prompt"})
        store = RunHandle.for_run(run_id, WorkflowDB(pg_url)).wait(10.0)

    assert ("prompt", True) == (store["job"], store["done_Record"])


# ── fork ────────────────────────────────────────────────────────────────────

class Count(Node):
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        store["n"] = store.get("n", 0) + store.get("by", 1)
        store["trail"] = [*store.get("trail", []), store["n"]]
        return "again" if store["n"] < 5 * store.get("by", 1) else "done"


def test_a_fork_records_its_lineage_and_leaves_its_parent_untouched(db_url: str) -> None:
    """flow.fork(run_id, step, updates) starts a new run at the node after that step,
    with that checkpoint's store and the updates; it records forked_from/forked_at_step,
    its steps are numbered on from the step, and the parent's rows do not change."""
    count = Count()
    count.then("again", count)
    db = WorkflowDB(db_url)
    flow = Flow(start=count, db=db, flow_name="forky")
    handle = flow.run_background({})
    handle.wait(WAIT)
    parent = handle.run_id
    before = (db.get_run(parent), db.get_events(parent), db.get_checkpoints(parent))

    store = flow.fork(parent, 1, updates={"by": 2})

    fork = next(r for r in db.list_runs() if r["run_id"] != parent)
    assert (parent, 1) == (fork["forked_from"], fork["forked_at_step"])
    assert ("completed", [1, 2, 4, 6, 8, 10]) == (fork["status"], store["trail"])
    assert [2, 3, 4, 5] == [c["step"] for c in db.checkpoint_steps(fork["run_id"])]
    assert [1, 2] == db.load_checkpoint(parent, 1)["trail"]
    assert before == (db.get_run(parent), db.get_events(parent), db.get_checkpoints(parent))


class Approve(Node):
    """Pauses until the store says approved."""

    def prep(self, store: Any) -> Any:
        return store.get("approved")

    def exec(self, approved: Any) -> None:
        if not approved:
            raise Pause("approve")


def test_a_nested_flows_run_is_acted_on_through_its_top_level_run(db_url: str) -> None:
    """db.resume, db.cancel_run, flow.resume and flow.fork refuse a nested flow's run id
    (RUN.STEP), naming the top-level run to act on; nothing changes. Alone, a queued child
    would wait for a worker forever under a paused parent."""
    db = WorkflowDB(db_url)
    inner = Flow(start=chain(Inner(), Approve()), flow_name="inner")
    outer = Flow(start=chain(Inner(), inner, Inner()), db=db, flow_name="outer")
    top = outer.run({}).run_id
    child = f"{top}.1"
    before = (db.get_run(top), db.get_run(child))
    assert ("paused", "paused") == (before[0]["status"], before[1]["status"])  # type: ignore[index]

    refusals = [
        (ResumeError, lambda: db.resume(child, updates={"approved": True}), "resume"),
        (ValueError, lambda: db.cancel_run(child), "cancel"),
        (ResumeError, lambda: outer.resume(child, updates={"approved": True}), "resume"),
        (ResumeError, lambda: outer.fork(child, 0), "fork"),
    ]
    for error, act, verb in refusals:
        with pytest.raises(error, match=rf"inside run '{top}': {verb} run '{top}' instead"):
            act()
    assert before == (db.get_run(top), db.get_run(child))
    store = outer.resume(top, updates={"approved": True})
    assert (3, "completed") == (store["inner"], db.get_run(child)["status"])  # type: ignore[index]


def test_a_fork_that_stops_before_its_first_checkpoint_resumes_numbered_on(
    db_url: str,
) -> None:
    """A fork paused at its first node (no checkpoint of its own yet) goes on numbered
    from the step it was forked at, when resumed here or queued for a worker: its
    checkpoints and total_steps continue the parent's numbering."""
    db = WorkflowDB(db_url)
    flow = Flow(start=chain(Inner(), Inner(), Approve(), Inner()), db=db, flow_name="gated")
    parent = flow.run({}).run_id
    assert [0, 1] == [c["step"] for c in db.checkpoint_steps(parent)]

    here = flow.fork(parent, 1).run_id
    queued = flow.fork(parent, 1).run_id
    assert "paused" == db.get_run(here)["status"]  # type: ignore[index]
    flow.resume(here, updates={"approved": True})
    db.resume(queued, updates={"approved": True})
    with serving(flow, concurrency=1):
        RunHandle.for_run(queued, db).wait(WAIT)

    for run_id in (here, queued):
        run = db.get_run(run_id)
        assert ("completed", 4) == (run["status"], run["total_steps"])  # type: ignore[index]
        assert [2, 3] == [c["step"] for c in db.checkpoint_steps(run_id)]
        assert {"inner": 3, "approved": True} == dict(db.load_checkpoint(run_id, 3))


def test_fork_refuses_a_step_or_updates_of_the_wrong_kind(db_url: str) -> None:
    """flow.fork names what is wrong with its step or updates, before anything is written."""
    db = WorkflowDB(db_url)
    flow = Flow(start=chain(Inner(), Inner()), db=db, flow_name="forky")
    parent = flow.run({}).run_id
    for step in (True, None, "1", 1.0):
        with pytest.raises(TypeError, match=rf"step is the number of a step of run '{parent}'"):
            flow.fork(parent, step)  # type: ignore[arg-type]
    for updates in ("abc", [("x", 1)]):
        with pytest.raises(TypeError, match=r"fork\(updates=\.\.\.\) takes a mapping"):
            flow.fork(parent, 0, updates=updates)  # type: ignore[arg-type]
    assert [parent] == [r["run_id"] for r in db.list_runs()]


# ── deleting old runs ───────────────────────────────────────────────────────

class Inner(Node):
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["inner"] = store.get("inner", 0) + 1


def table_counts(db_url: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from pocoflow.persistence.models import checkpoints, events, run_inputs, runs

    records = RunRecords(db_url)
    with records.database.engine.connect() as conn:
        return {name: int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)
                for name, table in (("runs", runs), ("events", events),
                                    ("checkpoints", checkpoints), ("inputs", run_inputs))}


def test_delete_runs_deletes_only_ended_runs_older_than_the_cutoff(db_url: str) -> None:
    """delete_runs(older_than, batch=2) deletes the 7 runs that ended before the cutoff
    (completed, failed, cancelled), with their nested flows' runs, events, checkpoints and
    inputs, and returns exactly the rows it deleted; queued, running and paused runs, runs
    that ended after the cutoff, and a run whose id merely starts with a deleted run's id
    are untouched."""
    db = WorkflowDB(db_url)
    for i in range(4):  # each with a nested flow's run, <run_id>.1
        inner = Flow(start=chain(Inner(), Inner()), flow_name="inner")
        Flow(start=chain(Record([], "Before"), inner, Record([], "After")), db=db,
             flow_name="outer", run_id=f"old-ok-{i}").run({"job": i})
    with pytest.raises(RuntimeError, match="kaboom"):
        Flow(start=Boom(), db=db, flow_name="boom", run_id="old-failed").run({})
    queued_then_cancelled = Flow(start=Node(), db=db, flow_name="c").submit(
        {}, run_id="old-cancelled")
    assert "cancelled" == db.cancel_run(queued_then_cancelled)
    Flow(start=Ask([]), db=db, flow_name="ask", run_id="old-cancelled-pause").run({})
    db.cancel_run("old-cancelled-pause")
    Flow(start=Ask([]), db=db, flow_name="ask", run_id="old-paused").run({})
    Flow(start=Node(), db=db, flow_name="q").submit({}, run_id="old-queued")
    Flow(start=Node(), db=db, flow_name="q").submit({}, run_id="old-ok-0.lookalike")
    Flow(start=Node(), db=db, flow_name="r").submit({}, run_id="old-running")
    dead_claim(db_url, "r", 30.0)
    time.sleep(0.01)
    cutoff = datetime.now(timezone.utc)
    time.sleep(0.01)
    Flow(start=Node(), db=db, flow_name="new", run_id="new-ok").run({})
    assert ["old-ok-0.1"] == [r["run_id"] for r in db.list_runs(parent_run_id="old-ok-0")]
    old = ["old-ok-0", "old-ok-1", "old-ok-2", "old-ok-3", "old-failed", "old-cancelled",
           "old-cancelled-pause"]
    family = old + [f"old-ok-{i}.1" for i in range(4)]
    expected = {"runs": len(family),
                "events": sum(len(db.get_events(r)) for r in family),
                "checkpoints": sum(len(db.checkpoint_steps(r)) for r in family),
                "inputs": sum(db.get_run_input(r) is not None for r in family)}
    before = table_counts(db_url)

    counts = db.delete_runs(older_than=cutoff, batch=2)

    after = table_counts(db_url)
    assert expected == counts
    assert {k: before[k] - counts[k] for k in before} == after
    assert all(db.get_run(r) is None for r in family)
    assert [] == [r for r in family if db.get_events(r) or db.checkpoint_steps(r)]
    kept = {r["run_id"]: r["status"] for r in db.list_runs(include_nested=True)}
    assert {"old-paused": "paused", "old-queued": "queued", "old-ok-0.lookalike": "queued",
            "old-running": "running", "new-ok": "completed"} == kept
    assert [] != db.get_events("old-paused")


def test_delete_runs_with_a_status_or_an_age_deletes_only_those(db_url: str) -> None:
    """status= narrows the deletion to runs that ended so; an age (timedelta) counts back
    from now; a status of a run in flight is refused."""
    db = WorkflowDB(db_url)
    Flow(start=Node(), db=db, run_id="done").run({})
    with pytest.raises(RuntimeError):
        Flow(start=Boom(), db=db, run_id="broke").run({})

    assert 0 == db.delete_runs(timedelta(hours=1))["runs"]
    counts = db.delete_runs(timedelta(0), status="failed")
    assert (1, ["done"]) == (counts["runs"], [r["run_id"] for r in db.list_runs()])
    with pytest.raises(ValueError, match="runs in flight are never deleted"):
        db.delete_runs(timedelta(0), status="paused")


def test_a_run_resumed_while_gc_deletes_it_is_not_queued_and_deleted(pg_url: str) -> None:
    """PostgreSQL: gc locks the runs it deletes. A resume that comes while gc's batch is
    under way (held up here by another connection's lock on a table it deletes from)
    waits for it, then is refused: a run is never queued by a resume and deleted by gc
    (a waiter would find nothing; a worker would fail)."""
    db = WorkflowDB(pg_url)
    with pytest.raises(RuntimeError):
        Flow(start=Boom(), db=db, run_id="old").run({})
    engine = sqlalchemy.create_engine(pg_url)
    outcome: dict[str, Any] = {}

    def attempt(name: str, call: Any) -> None:
        try:
            outcome[name] = call()
        except Exception as exc:
            outcome[name] = exc

    def waiting_locks() -> int:
        with engine.connect() as look:
            return int(look.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE NOT granted").scalar_one())

    def until(done: Any) -> None:
        deadline = time.monotonic() + 20
        while not done():
            assert time.monotonic() < deadline, f"stuck: {outcome}"
            time.sleep(0.02)

    with engine.connect() as holder:
        holder.exec_driver_sql("LOCK TABLE pf_run_inputs IN ACCESS EXCLUSIVE MODE")
        gc = threading.Thread(target=attempt, args=("gc", lambda: db.delete_runs(timedelta(0))))
        gc.start()
        until(lambda: waiting_locks() == 1)  # gc has its runs and waits on the lock
        resume = threading.Thread(
            target=attempt, args=("resume", lambda: db.resume("old", updates={"fix": 1})))
        resume.start()
        until(lambda: "resume" in outcome or waiting_locks() == 2)
        holder.rollback()
    gc.join(20)
    resume.join(20)
    engine.dispose()

    assert 1 == outcome["gc"]["runs"]
    assert isinstance(outcome["resume"], RunNotFoundError), outcome
    assert "deleted" in str(outcome["resume"])
    assert db.get_run("old") is None


def terminate_backends(pg_url: str, where: str) -> int:
    """pg_terminate_backend on this database's other connections matching *where* (SQL
    on pg_stat_activity), as a server restart, a failover or a reaper would drop them;
    how many it dropped."""
    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.connect() as admin:
            return len(admin.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                f"current_database() AND pid <> pg_backend_pid() AND {where}").all())
    finally:
        engine.dispose()


def test_a_worker_whose_listening_connection_is_dropped_goes_on(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL drops the connection a worker LISTENs on (a restart, a failover, an idle
    reaper): the worker says so once, polls, listens again, and serves on; the runs it
    is running and the ones queued after all complete. (It died, its runs cancelled.)"""
    seen: list[tuple[str, str]] = []
    db = WorkflowDB(pg_url)
    flow = Flow(start=Record(seen), db=db, flow_name="listening")
    with (caplog.at_level(logging.WARNING, logger="pocoflow"),
          serving(flow, concurrency=2, poll_interval=0.2)):
        first = flow.submit({"job": "before"})
        RunHandle.for_run(first, db).wait(WAIT)
        assert 1 == terminate_backends(pg_url, "starts_with(query, 'LISTEN')")
        time.sleep(0.5)
        after = [flow.submit({"job": f"after-{i}"}) for i in range(3)]
        for run_id in after:
            RunHandle.for_run(run_id, db).wait(WAIT)
    assert {"completed"} == {db.get_run(r)["status"] for r in [first, *after]}  # type: ignore[index]
    said = [r.getMessage() for r in caplog.records]
    assert 1 == len([m for m in said if "Lost the connection listening" in m])


def test_a_step_after_the_server_dropped_the_idle_writer_connection_is_recorded(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server drops the writer's connection while a node runs (a restart, an
    idle_session_timeout): the node's step is committed on a new connection and the run
    completes. (It failed with "Lost the connection", the server up all along.)"""
    from pocoflow.persistence import writer

    monkeypatch.setattr(writer, "IDLE_PING_S", 0.0)  # any idle time at all

    class Dropping(Node):
        def exec(self, prep_res: Any) -> None:
            terminate_backends(pg_url, "application_name <> 'psql'")

    first, second = Dropping(name="First"), Dropping(name="Second")
    first.then("default", second)
    db = WorkflowDB(pg_url)
    store = Flow(start=first, db=db, flow_name="dropped").run({})
    assert "completed" == db.get_run(store.run_id)["status"]  # type: ignore[index]
    assert [0, 1] == [c["step"] for c in db.get_checkpoints(store.run_id)]


def test_a_read_only_postgresql_database_is_a_clear_error(pg_url: str) -> None:
    """A database in read-only mode (a hot standby after a failover, or
    default_transaction_read_only): a run and a submit fail with a PersistenceError
    naming the server and what to check, not psycopg's bare ReadOnlySqlTransaction."""
    from pocoflow.errors import PersistenceError

    WorkflowDB(pg_url)  # its tables are made
    read_only = f"{pg_url}?options=-c%20default_transaction_read_only%3Don"
    server = pg_url.rsplit("@", 1)[1].split("?")[0]
    flow = Flow(start=Record([]), db_url=read_only, flow_name="read-only")
    for attempt in (lambda: flow.run({"job": "x"}), lambda: flow.submit({"job": "y"})):
        with pytest.raises(PersistenceError) as info:
            attempt()
        message = str(info.value)
        assert "read-only" in message
        assert server in message
        assert "point the URL at the primary" in message
