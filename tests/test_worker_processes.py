"""Workers in separate processes sharing one database: every queued run done exactly once,
a worker killed or frozen mid-run, a clean drain on SIGTERM, cancel and pause/resume
across processes, and the queue's limits holding across workers.

Each worker is ``python jobs.py URL OPTIONS`` (the script below, written to the test's
directory) serving the flow it builds. Its nodes log every exec (run, step, process,
start/end, wall time) to a file per process, so a test can count how often each step ran,
in which process, and how many runs were in a node at once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pocoflow import RunFailedError, RunHandle, WorkflowDB

ROOT = Path(__file__).resolve().parents[1]
#: Bound on every wait: a test that gets here has hung.
WAIT = 120.0

JOBS = textwrap.dedent('''
    """Flows for the worker tests, and a worker serving one of them (run as a script)."""
    import json, logging, os, sys, time
    from pathlib import Path
    from pocoflow import Flow, Node, Pause, WorkflowDB
    from pocoflow.worker import Worker


    def log(store_log, job, step, what):
        """One line per exec start/end in <log>/<pid>.log (one writer per file)."""
        with open(os.path.join(store_log, f"{os.getpid()}.log"), "a") as out:
            out.write(f"{job} {step} {os.getpid()} {what} {time.time():.6f}\\n")


    class Step(Node):
        """Step i of a run: logs its exec, sleeps store['sleep'] s; at store['die_at'] the
        process dies in exec; the first exec of step store['mark_at'] touches
        store['marker'] (the test's signal that a worker is inside that step)."""

        def __init__(self, i):
            super().__init__(name=f"S{i}")
            self.i = i

        def prep(self, store):
            return {k: store.get(k) for k in ("job", "log", "sleep", "die_at", "mark_at",
                                              "marker")}

        def exec(self, p):
            log(p["log"], p["job"], self.i, "start")
            if p["mark_at"] == self.i and p["marker"]:
                Path(p["marker"]).touch()
            if p["die_at"] == self.i:
                os._exit(1)
            time.sleep(p["sleep"] or 0)
            log(p["log"], p["job"], self.i, "end")
            return os.getpid()

        def post(self, store, prep_res, pid):
            store["trail"] = [*store.get("trail", []), pid]


    class Review(Node):
        """Pauses for a human unless store['approved']."""

        def prep(self, store):
            return store["job"], store["log"], store.get("approved"), store.get("review_sleep")

        def exec(self, p):
            job, store_log, approved, sleep = p
            log(store_log, job, "Review", "start")
            if not approved:
                raise Pause("needs approval", draft=f"draft of {job}")
            time.sleep(sleep or 0)
            log(store_log, job, "Review", "end")
            return "approved"

        def post(self, store, prep_res, verdict):
            store["verdict"] = verdict


    def build(kind, db=None):
        if kind == "review":
            first, second, review, last = Step(0), Step(1), Review(), Step(3)
            first.then("default", second)
            second.then("default", review)
            review.then("default", last)
            return Flow(start=first, db=db, flow_name="review")
        steps = [Step(i) for i in range(5)]
        for a, b in zip(steps, steps[1:]):
            a.then("default", b)
        return Flow(start=steps[0], db=db, flow_name="steps")


    if __name__ == "__main__":
        url, options = sys.argv[1], json.loads(sys.argv[2])
        logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                            format="%(process)d %(name)s %(levelname)s %(message)s")
        db = WorkflowDB(url, lease_seconds=options.pop("lease", 30.0))
        flow = build(options.pop("kind", "steps"), db)
        Worker(flow, **options).serve()
        print("worker exited cleanly", flush=True)
''')


@pytest.fixture
def jobs(tmp_path: Path) -> ModuleType:
    """The jobs script, written to the test's directory and imported here (to submit)."""
    script = tmp_path / "jobs.py"
    script.write_text(JOBS)
    spec = importlib.util.spec_from_file_location(f"jobs_{id(tmp_path)}", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.SCRIPT = script  # type: ignore[attr-defined]
    (tmp_path / "log").mkdir()
    return module


class Workers:
    """Worker processes of one test, each writing its output to a file."""

    def __init__(self, jobs: ModuleType, url: str, tmp_path: Path) -> None:
        self.script = jobs.SCRIPT
        self.url = url
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.outputs: list[Path] = []

    def start(self, **options: Any) -> subprocess.Popen[bytes]:
        out = self.tmp_path / f"worker{len(self.procs)}.out"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        with out.open("wb") as handle:
            proc = subprocess.Popen([sys.executable, str(self.script), self.url,
                                     json.dumps(options)], stdout=handle,
                                    stderr=subprocess.STDOUT, env=env, cwd=self.tmp_path)
        self.procs.append(proc)
        self.outputs.append(out)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return self.outputs[self.procs.index(proc)].read_text(errors="replace")

    def wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        """Until the worker says it serves (it listens for NOTIFYs by then)."""
        wait_until(lambda: "Worker serving" in self.output(proc), proc, self,
                   "the worker never said it serves")

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = WAIT) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {proc.pid} did not stop on SIGTERM:\n{self.output(proc)}")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.kill()
                proc.wait()

    def all_output(self) -> str:
        return "\n".join(f"--- worker {p.pid}\n{self.output(p)}" for p in self.procs)


@pytest.fixture
def workers(jobs: ModuleType, db_url: str, tmp_path: Path) -> Iterator[Workers]:
    WorkflowDB(db_url)  # create the schema once, before the workers race to
    group = Workers(jobs, db_url, tmp_path)
    try:
        yield group
    finally:
        group.close()


def wait_until(check: Any, proc: Any = None, group: Workers | None = None,
               what: str = "the condition never held", timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: worker {proc.pid} exited {proc.returncode}\n"
                        f"{group.all_output() if group else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} (after {timeout} s)\n{group.all_output() if group else ''}")
        time.sleep(0.05)


def wait_for_status(db: WorkflowDB, run_ids: list[str], statuses: tuple[str, ...],
                    group: Workers | None = None, timeout: float = WAIT) -> None:
    def done() -> bool:
        return all(db.get_run(r)["status"] in statuses for r in run_ids)  # type: ignore[index]

    wait_until(done, None, group, f"runs never reached {statuses}", timeout)


def exec_log(tmp_path: Path) -> list[tuple[str, str, int, str, float]]:
    """Every exec start/end the nodes logged: (job, step, pid, start|end, wall time)."""
    lines = []
    for path in (tmp_path / "log").glob("*.log"):
        for line in path.read_text().splitlines():
            job, step, pid, what, at = line.split()
            lines.append((job, step, int(pid), what, float(at)))
    return lines


def starts(tmp_path: Path) -> Counter[tuple[str, str]]:
    """How many times each (job, step) exec started."""
    return Counter((job, step) for job, step, _, what, _ in exec_log(tmp_path)
                   if what == "start")


def submit(jobs: ModuleType, url: str, tmp_path: Path, count: int, kind: str = "steps",
           **store: Any) -> list[str]:
    flow = jobs.build(kind, WorkflowDB(url))
    return [flow.submit({"job": f"j{i}", "log": str(tmp_path / "log"), **store})
            for i in range(count)]


def test_three_workers_share_300_runs_and_each_runs_exactly_once(
        jobs: ModuleType, workers: Workers, db_url: str, tmp_path: Path) -> None:
    """300 queued five-step runs, three worker processes: every run completes, claimed
    once (attempts 1), every step of every run executed exactly once, and the work
    spread over more than one worker; SIGTERM then stops each idle worker with exit 0."""
    run_ids = submit(jobs, db_url, tmp_path, 300)
    db = WorkflowDB(db_url)
    procs = [workers.start(concurrency=4) for _ in range(3)]

    wait_for_status(db, run_ids, ("completed", "failed"), workers)
    codes = [workers.stop(p) for p in procs]

    assert [0, 0, 0] == codes, workers.all_output()
    runs = [db.get_run(r) for r in run_ids]
    assert {("completed", 1, 5)} == {(r["status"], r["attempts"], r["total_steps"])
                                     for r in runs}  # type: ignore[index]
    counted = starts(tmp_path)
    assert 1500 == len(counted)
    assert {1} == set(counted.values())
    pids = {pid for _, _, pid, _, _ in exec_log(tmp_path)}
    assert len(pids) > 1
    for run_id in run_ids[:10]:
        assert 1 == len(set(db.load_checkpoint(run_id, 4)["trail"]))


def test_a_killed_worker_s_runs_finish_elsewhere_without_redoing_finished_steps(
        jobs: ModuleType, workers: Workers, db_url: str, tmp_path: Path) -> None:
    """One of three workers is SIGKILLed while its runs are inside steps: the other two
    take its runs up after the lease and finish them from their last checkpoint. A step
    the dead worker had checkpointed never runs again; only the step in flight when it
    died may; each run it had taken shows attempts 2."""
    run_ids = submit(jobs, db_url, tmp_path, 12, sleep=0.3)
    db = WorkflowDB(db_url)
    victim = workers.start(concurrency=4, lease=3.0)
    workers.wait_ready(victim)
    others = [workers.start(concurrency=4, lease=3.0) for _ in range(2)]

    def victim_inside_a_later_step() -> bool:
        return any(pid == victim.pid and what == "start" and step != "0"
                   for _, step, pid, what, _ in exec_log(tmp_path))

    wait_until(victim_inside_a_later_step, victim, workers, "the victim never got to step 1")
    victim.kill()
    victim.wait()
    wait_for_status(db, run_ids, ("completed", "failed"), workers)
    codes = [workers.stop(p) for p in others]

    assert [0, 0] == codes, workers.all_output()
    counted = starts(tmp_path)
    victim_starts = {(job, step) for job, step, pid, what, _ in exec_log(tmp_path)
                     if pid == victim.pid and what == "start"}
    recovered = 0
    for index, run_id in enumerate(run_ids):
        run = db.get_run(run_id)
        assert ("completed", 5) == (run["status"], run["total_steps"])  # type: ignore[index]
        job = f"j{index}"
        trail = db.load_checkpoint(run_id, 4)["trail"]
        in_flight = [step for step in range(5) if (job, str(step)) in victim_starts
                     and trail[step] != victim.pid]
        assert len(in_flight) <= 1, (job, trail, counted)
        for step in range(5):
            expected = 2 if step in in_flight else 1
            assert expected == counted[(job, str(step))], (job, step, trail)
        if in_flight:
            recovered += 1
            assert 2 == run["attempts"]  # type: ignore[index]
            assert victim.pid in trail or in_flight == [0]
        else:
            assert run["attempts"] in (1, 2)  # type: ignore[index]
    assert recovered >= 1


def test_sigterm_lets_the_runs_in_flight_finish_and_claims_nothing_more(
        jobs: ModuleType, workers: Workers, db_url: str, tmp_path: Path) -> None:
    """SIGTERM inside a step: the worker stops claiming, its runs in flight finish within
    the grace period, the runs it never took stay queued, and it exits 0."""
    marker = tmp_path / "inside"
    run_ids = submit(jobs, db_url, tmp_path, 5, sleep=0.2, mark_at=1, marker=str(marker))
    db = WorkflowDB(db_url)
    worker = workers.start(concurrency=2, grace_period=60)

    wait_until(marker.exists, worker, workers, "no run reached step 1")
    assert 0 == workers.stop(worker), workers.output(worker)

    statuses = Counter(db.get_run(r)["status"] for r in run_ids)  # type: ignore[index]
    assert {"completed": 2, "queued": 3} == dict(statuses)
    assert "worker exited cleanly" in workers.output(worker)
    assert {1} == set(starts(tmp_path).values())


def test_past_the_grace_period_runs_are_handed_back_and_resumed_elsewhere(
        jobs: ModuleType, workers: Workers, db_url: str, tmp_path: Path) -> None:
    """SIGTERM with a short grace period while runs are inside slow steps: the worker
    stops them (a sync step finishes its attempt and is checkpointed), hands them back
    (status queued, not cancelled: a caller waiting on the run is not woken), exits 0;
    another worker goes on from their last checkpoint, and no step runs twice."""
    marker = tmp_path / "inside"
    run_ids = submit(jobs, db_url, tmp_path, 2, sleep=0.6, mark_at=1, marker=str(marker))
    db = WorkflowDB(db_url)
    outcomes: dict[str, Any] = {}

    def wait_on(run_id: str) -> None:
        try:
            outcomes[run_id] = RunHandle.for_run(run_id, WorkflowDB(db_url)).wait(WAIT)
        except BaseException as exc:  # reported by the assertion below
            outcomes[run_id] = exc

    waiters = [threading.Thread(target=wait_on, args=(r,)) for r in run_ids]
    for waiter in waiters:
        waiter.start()
    first = workers.start(concurrency=2, grace_period=0.2)
    wait_until(marker.exists, first, workers, "no run reached step 1")
    assert 0 == workers.stop(first), workers.output(first)

    handed_back = [db.get_run(r) for r in run_ids]
    assert {("queued", 0)} == {(r["status"], r["attempts"]) for r in handed_back}, \
        handed_back  # type: ignore[index]
    assert {} == outcomes
    second = workers.start(concurrency=2)
    for waiter in waiters:
        waiter.join(WAIT)
    assert 0 == workers.stop(second), workers.output(second)

    for run_id in run_ids:
        store = outcomes[run_id]
        assert not isinstance(store, BaseException), store
        assert 5 == len(store["trail"])
        assert {first.pid, second.pid} == set(store["trail"])
        assert ("completed", 1) == (db.get_run(run_id)["status"],  # type: ignore[index]
                                    db.get_run(run_id)["attempts"])  # type: ignore[index]
    assert {1} == set(starts(tmp_path).values())


def test_a_frozen_worker_cannot_write_to_a_run_another_worker_took_over(
        jobs: ModuleType, workers: Workers, db_url: str, tmp_path: Path) -> None:
    """A worker frozen (SIGSTOP) inside a step for longer than its lease loses its run to
    a second worker, which completes it. Woken (SIGCONT), the first worker's run stops
    with RunTakenOverError (logged), nothing it does lands, and it goes on serving."""
    marker = tmp_path / "inside"
    [run_id] = submit(jobs, db_url, tmp_path, 1, sleep=0.5, mark_at=2, marker=str(marker))
    db = WorkflowDB(db_url, lease_seconds=1.5)
    frozen = workers.start(concurrency=1, lease=1.5)
    wait_until(marker.exists, frozen, workers, "the run never reached step 2")
    os.kill(frozen.pid, signal.SIGSTOP)
    wait_until(lambda: db.get_run(run_id)["status"] == "interrupted",  # type: ignore[index]
               None, workers, "the run never showed interrupted")
    rescuer = workers.start(concurrency=1, lease=1.5)
    wait_for_status(db, [run_id], ("completed", "failed"), workers)
    events_before = db.get_events(run_id)
    run_before = db.get_run(run_id)

    os.kill(frozen.pid, signal.SIGCONT)
    wait_until(lambda: "taken over" in workers.output(frozen), frozen, workers,
               "the woken worker never reported the takeover")
    assert 0 == workers.stop(frozen), workers.output(frozen)
    assert 0 == workers.stop(rescuer), workers.output(rescuer)

    assert "RunTakenOverError" in workers.output(frozen) or \
        "was taken over by another process" in workers.output(frozen)
    assert events_before == db.get_events(run_id)
    assert run_before == db.get_run(run_id)
    assert ("completed", 2, 5) == (run_before["status"], run_before["attempts"],  # type: ignore[index]
                                   run_before["total_steps"])  # type: ignore[index]
    trail = db.load_checkpoint(run_id, 4)["trail"]
    assert [frozen.pid] * 2 + [rescuer.pid] * 3 == trail


@pytest.mark.parametrize("how", ["db.cancel_run", "RunHandle.cancel"])
def test_a_cancel_reaches_a_run_on_a_worker(jobs: ModuleType, workers: Workers,
                                            db_url: str, tmp_path: Path, how: str) -> None:
    """A cancel asked in this process (db.cancel_run, or the handle of RunHandle.for_run)
    reaches the run on a worker: it ends cancelled with the checkpoints of the steps it
    finished, and no later step starts."""
    marker = tmp_path / "inside"
    [run_id] = submit(jobs, db_url, tmp_path, 1, sleep=1.0, mark_at=1, marker=str(marker))
    db = WorkflowDB(db_url)
    worker = workers.start(concurrency=1)
    wait_until(marker.exists, worker, workers, "the run never reached step 1")

    if how == "db.cancel_run":
        assert "requested" == db.cancel_run(run_id)
    else:
        RunHandle.for_run(run_id, db).cancel()
    wait_for_status(db, [run_id], ("completed", "failed", "cancelled"), workers)
    assert 0 == workers.stop(worker), workers.output(worker)

    assert "cancelled" == db.get_run(run_id)["status"]  # type: ignore[index]
    done = [c["step"] for c in db.checkpoint_steps(run_id)]
    assert done == list(range(len(done)))
    assert 2 <= len(done) < 5
    # the step in flight (a sync exec) finished its attempt and was checkpointed
    assert {("j0", str(step)) for step in done} == set(starts(tmp_path))


def test_a_run_paused_on_a_worker_is_resumed_from_this_process(
        jobs: ModuleType, workers: Workers, db_url: str, tmp_path: Path) -> None:
    """Review pauses the run on a worker; this process sees it paused, answers with
    db.resume(run_id, updates=...), and a worker applies the answer and re-enters Review;
    the steps before Review never run again."""
    [run_id] = submit(jobs, db_url, tmp_path, 1, kind="review")
    db = WorkflowDB(db_url)
    worker = workers.start(concurrency=2, kind="review")
    handle = RunHandle.for_run(run_id, db)

    handle.wait(WAIT)
    assert "paused" == handle.status
    pause = [e for e in db.get_events(run_id) if e["event"] == "flow_end"][-1]
    assert "needs approval" in pause["detail"]
    assert "draft of j0" in pause["detail"]
    assert "default" == db.resume(run_id, updates={"approved": True})
    store = handle.wait(WAIT)
    assert 0 == workers.stop(worker), workers.output(worker)

    assert ("approved", True) == (store["verdict"], store["approved"])
    assert "completed" == handle.status
    assert {("j0", "0"): 1, ("j0", "1"): 1, ("j0", "Review"): 2, ("j0", "3"): 1} == \
        dict(starts(tmp_path))


def test_a_human_s_answer_survives_the_worker_dying_before_it_was_checkpointed(
        jobs: ModuleType, workers: Workers, db_url: str, tmp_path: Path) -> None:
    """The worker that resumes a paused run with a human's answer is killed inside the
    re-entered node, before any checkpoint holds the answer: the next worker still has the
    answer (the run completes approved instead of pausing again)."""
    [run_id] = submit(jobs, db_url, tmp_path, 1, kind="review", review_sleep=2.0)
    db = WorkflowDB(db_url)
    first = workers.start(concurrency=1, lease=2.0, kind="review")
    handle = RunHandle.for_run(run_id, db)
    handle.wait(WAIT)
    assert "paused" == handle.status

    db.resume(run_id, updates={"approved": True})
    wait_until(lambda: 2 == starts(tmp_path)[("j0", "Review")], first, workers,
               "Review was never re-entered")
    first.kill()
    first.wait()
    second = workers.start(concurrency=1, lease=2.0, kind="review")
    store = handle.wait(WAIT)
    assert 0 == workers.stop(second), workers.output(second)

    assert "completed" == handle.status, db.get_events(run_id)
    assert ("approved", True) == (store["verdict"], store["approved"])
    assert 3 == starts(tmp_path)[("j0", "Review")]
    assert 1 == starts(tmp_path)[("j0", "1")]


def test_dedup_holds_under_three_workers_and_racing_submitters(
        jobs: ModuleType, workers: Workers, db_url: str, tmp_path: Path) -> None:
    """Eight threads submit one dedup_key at once: one run is queued, all get its id; while
    three workers run it, eight more racing submits get its id again; once it completed,
    the key queues a new run. Each run's steps ran once."""
    flow = jobs.build("steps", WorkflowDB(db_url))
    marker = tmp_path / "inside"
    store = {"job": "deduped", "log": str(tmp_path / "log"), "sleep": 0.3, "mark_at": 1,
             "marker": str(marker)}

    def race() -> set[str]:
        got: list[str] = []
        barrier = threading.Barrier(8)

        def one() -> None:
            barrier.wait(WAIT)
            got.append(flow.submit(dict(store), dedup_key="the-key"))

        threads = [threading.Thread(target=one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert 8 == len(got)
        return set(got)

    [first] = race()
    db = WorkflowDB(db_url)
    procs = [workers.start(concurrency=2) for _ in range(3)]
    wait_until(marker.exists, None, workers, "the run never reached step 1")
    assert "running" == db.get_run(first)["status"]  # type: ignore[index]
    assert {first} == race()
    wait_for_status(db, [first], ("completed", "failed"), workers)
    store["job"] = "again"
    [second] = race()
    wait_for_status(db, [second], ("completed", "failed"), workers)
    assert [0, 0, 0] == [workers.stop(p) for p in procs]

    assert first != second
    assert 2 == len([r for r in db.list_runs() if r["dedup_key"] == "the-key"])
    assert {("deduped", str(i)) for i in range(5)} | {("again", str(i)) for i in range(5)} \
        == set(starts(tmp_path))
    assert {1} == set(starts(tmp_path).values())


def test_priority_orders_the_runs_of_three_workers(jobs: ModuleType, workers: Workers,
                                                   db_url: str, tmp_path: Path) -> None:
    """Runs of three priorities, submitted interleaved, served by three workers one run at
    a time: a run is never started while a run of higher priority, or of the same priority
    submitted earlier, waits (it started before the other one ended)."""
    flow = jobs.build("steps", WorkflowDB(db_url))
    priorities = [(0, 5, 10)[i % 3] for i in range(24)]
    run_ids = [flow.submit({"job": f"j{i}", "log": str(tmp_path / "log"), "sleep": 0.05},
                           priority=p) for i, p in enumerate(priorities)]
    db = WorkflowDB(db_url)
    procs = [workers.start(concurrency=1) for _ in range(3)]
    wait_for_status(db, run_ids, ("completed", "failed"), workers)
    assert [0, 0, 0] == [workers.stop(p) for p in procs]

    runs = [db.get_run(r) for r in run_ids]
    for i, first in enumerate(runs):
        for j, later in enumerate(runs):
            ahead = priorities[i] > priorities[j] or (priorities[i] == priorities[j]
                                                      and i < j)
            if ahead:  # `first` should have gone before `later`
                assert first["started_at"] < later["completed_at"], (i, j)  # type: ignore[index]


def test_queue_concurrency_caps_runs_in_flight_across_three_workers(
        jobs: ModuleType, workers: Workers, db_url: str, tmp_path: Path) -> None:
    """queue_concurrency=2 with three workers of concurrency 4: the database never shows
    more than two running runs, and the nodes never see more than two runs at once."""
    run_ids = submit(jobs, db_url, tmp_path, 12, sleep=0.1)
    db = WorkflowDB(db_url)
    seen: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        sampler_db = WorkflowDB(db_url)
        while not sampling.is_set():
            counts = sampler_db.count_runs()
            seen.append(counts.get("running", 0) + counts.get("interrupted", 0))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        procs = [workers.start(concurrency=4, queue_concurrency=2) for _ in range(3)]
        wait_for_status(db, run_ids, ("completed", "failed"), workers)
    finally:
        sampling.set()
        sampler.join()
    assert [0, 0, 0] == [workers.stop(p) for p in procs]

    assert {"completed"} == {db.get_run(r)["status"] for r in run_ids}  # type: ignore[index]
    assert max(seen) <= 2
    spans: dict[str, list[float]] = {}
    for job, _, _, _, at in exec_log(tmp_path):
        span = spans.setdefault(job, [at, at])
        span[0], span[1] = min(span[0], at), max(span[1], at)
    moments = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()],
                     key=lambda m: (m[0], m[1]))
    at_once = most = 0
    for _, change in moments:
        at_once += change
        most = max(most, at_once)
    assert 2 == most


def test_the_rate_limit_holds_across_three_workers(jobs: ModuleType, workers: Workers,
                                                   db_url: str, tmp_path: Path) -> None:
    """rate=5 per second with three workers: in no one-second window do the recorded
    start times of more than five runs fall."""
    run_ids = submit(jobs, db_url, tmp_path, 16)
    db = WorkflowDB(db_url)
    procs = [workers.start(concurrency=4, rate=5, rate_period=1.0) for _ in range(3)]
    wait_for_status(db, run_ids, ("completed", "failed"), workers)
    assert [0, 0, 0] == [workers.stop(p) for p in procs]

    from datetime import datetime

    started = sorted(datetime.fromisoformat(db.get_run(r)["started_at"])  # type: ignore[index]
                     for r in run_ids)
    for i, moment in enumerate(started):
        within = [s for s in started[i:] if (s - moment).total_seconds() < 1.0]
        assert len(within) <= 5, [s.isoformat() for s in started]


def test_a_run_that_keeps_killing_its_worker_fails_after_max_attempts(
        jobs: ModuleType, workers: Workers, db_url: str, tmp_path: Path) -> None:
    """Step 1 kills its process. Each worker dies on it; the run is taken up again after
    the lease, until it has killed max_attempts workers: then the next worker fails it,
    with the reason recorded, and stays up. Step 0, checkpointed, ran once."""
    [run_id] = submit(jobs, db_url, tmp_path, 1, die_at=1)
    db = WorkflowDB(db_url)
    started = 0
    while db.get_run(run_id)["status"] != "failed":  # type: ignore[index]
        assert started < 5, workers.all_output()
        proc = workers.start(concurrency=1, max_attempts=2, lease=1.5)
        started += 1
        deadline = time.monotonic() + WAIT
        while proc.poll() is None and db.get_run(run_id)["status"] != "failed":  # type: ignore[index]
            assert time.monotonic() < deadline, workers.all_output()
            time.sleep(0.05)
    survivor = workers.procs[-1]
    assert 0 == workers.stop(survivor), workers.output(survivor)

    run = db.get_run(run_id)
    assert 3 == started
    assert [1, 1] == [p.returncode for p in workers.procs[:2]]
    assert 2 == run["attempts"]  # type: ignore[index]
    assert "stopped 2 times" in run["error_msg"]  # type: ignore[index]
    assert {("j0", "0"): 1, ("j0", "1"): 2} == dict(starts(tmp_path))
    with pytest.raises(RunFailedError, match="stopped 2 times"):
        RunHandle.for_run(run_id, db).wait(WAIT)


@pytest.mark.parametrize(("name", "args"), [
    ("worker", []), ("worker", ["--threads", "--docs", "6"]), ("approval", []),
    ("approval", ["--reject"]),
])
def test_examples_run_offline(tmp_path: Path, name: str, args: list[str]) -> None:
    """examples/worker.py (worker processes, or threads) and examples/approval.py run to
    exit code 0 with every network connection refused, on a SQLite file of their own."""
    example = ROOT / "examples" / f"{name}.py"
    code = textwrap.dedent(f"""
        import runpy, socket, sys

        def no_network(*args, **kwargs):
            raise OSError("network access is disabled in this test")

        socket.socket.connect = no_network
        socket.socket.connect_ex = no_network
        socket.create_connection = no_network
        sys.argv = [{str(example)!r}, *{args!r}]
        sys.path.insert(0, {str(example.parent)!r})
        runpy.run_path({str(example)!r}, run_name="__main__")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}

    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=WAIT, check=False, env=env)

    assert 0 == done.returncode, done.stdout + done.stderr
    runs = WorkflowDB(next(tmp_path.glob("pocoflow-*.db"))).list_runs(limit=1000)
    assert {"completed"} == {r["status"] for r in runs}
    if name == "approval":
        assert "Published:" in done.stdout
        assert "[approved by alice]" in done.stdout
        assert "Status: paused" in done.stdout


@pytest.mark.parametrize("name", ["worker", "approval"])
def test_examples_print_their_usage(name: str) -> None:
    """--help prints each example's usage and exits 0."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), "--help"],
                          capture_output=True, text=True, timeout=WAIT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert (0, "usage:") == (done.returncode, done.stdout[:6]), done.stderr
    assert "--db" in done.stdout
