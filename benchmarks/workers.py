"""PocoFlow benchmark: queued runs on workers, and concurrent recorded runs.

``python benchmarks/workers.py [--quick] [--runs N] [--no-dbos]`` prints one
markdown table. Every figure comes from this one run, on this machine:

(q-a) Throughput of queued runs: N runs (default 2,000) of a 5-step flow of
      trivial sync nodes (every step checkpointed) are submitted, then 1, 2 and 4
      worker processes (``pocoflow.worker.Worker``, concurrency 32 each) drain
      the queue; runs per second from the first run's start to the last run's end,
      as recorded in the database. On a throwaway PostgreSQL server with
      durable settings (fsync on) and one with fsync off. Worker CPU ms per run
      from the children's rusage.
(q-b) Enqueue latency: ms per ``flow.submit`` (median over the N submits).
(q-c) Idle start latency: ms from ``flow.submit`` to the first node's start, with one
      idle worker listening (PostgreSQL NOTIFY), median of 20.
(q-d) Concurrent runs in one process on SQLite: 1,000 and 5,000 simultaneous
      5-step runs (``run_async`` in a task group) recorded in one file, against
      the same runs with no database; target ≤ 2x. Each measurement runs in a
      fresh process, the two sides in turn, best of 3. Twice: trivial nodes that run
      on the event loop (``threaded = False``), and plain Nodes whose (empty)
      ``exec`` runs in a worker thread as a user's node does. Without a database
      a run of loop-only nodes never yields, so the runs go one after the
      other; recorded, they really run together (their steps share commits),
      which the ratio also pays for (a bigger heap for the garbage collector).
(q-e) The same workload on DBOS (``pip install dbos``; skipped with --no-dbos or if
      it is not installed): a 5-step durable workflow enqueued N times on a DBOS
      queue, drained by 1, 2 and 4 worker processes, on the same servers.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(REPO))

from run import Row, table  # noqa: E402

from pocoflow import Flow, Node, Store  # noqa: E402

STEPS = 5
WORKER_CONCURRENCY = 32


class Step(Node):
    """A trivial node: adds one to ``store["n"]``; five of them make the flow."""

    threaded = False

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["n"] = store.get("n", 0) + 1


class ThreadedStep(Step):
    """The same step as a plain Node: its (empty) exec runs in a worker thread."""

    threaded = True

    def exec(self, prep_res: Any) -> None:
        return None


def chain(kind: type[Step] = Step) -> Step:
    """STEPS trivial nodes in a row; returns the first."""
    nodes = [kind(name=f"step{i}") for i in range(STEPS)]
    for here, following in itertools.pairwise(nodes):
        here.then("default", following)
    return nodes[0]


def build(url: str) -> Flow:
    """The benchmark's flow, recorded at *url*."""
    return Flow(chain(), db_url=url, flow_name="bench", max_steps=STEPS + 1)


# ── worker processes ─────────────────────────────────────────────────────────

def worker_main(url: str) -> None:
    """A worker process: serve the queue until SIGTERM."""
    from pocoflow.worker import Worker

    print("ready", flush=True)
    Worker(build(url), concurrency=WORKER_CONCURRENCY, grace_period=5).serve()


@contextlib.contextmanager
def workers(url: str, count: int) -> Iterator[list[subprocess.Popen[str]]]:
    procs = [subprocess.Popen([sys.executable, str(HERE), "--worker", url],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
             for _ in range(count)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fresh_database(base: str) -> str:
    from tests.postgres_server import create_database

    return create_database(base, f"bench_{os.getpid()}_{time.monotonic_ns()}")


def span_seconds(url: str) -> float:
    """First start to last end of the completed runs, from their rows."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql+psycopg", "postgresql+psycopg", 1))
    try:
        with engine.connect() as conn:
            first, last, done = conn.execute(text(
                "SELECT min(started_at), max(completed_at), count(*) FROM pf_runs "
                "WHERE status = 'completed'")).one()
    finally:
        engine.dispose()
    from datetime import datetime

    return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds(), done


def queued_throughput(base: str, runs: int, count: int) -> dict[str, float]:
    """Submit *runs*, then drain them with *count* workers; runs/s and CPU ms per run."""
    from pocoflow import WorkflowDB

    url = fresh_database(base)
    flow = build(url)
    WorkflowDB(url)
    submits = []
    for i in range(runs):
        began = time.perf_counter()
        flow.submit({"i": i})
        submits.append(time.perf_counter() - began)
    cpu_before = children_cpu()
    db = WorkflowDB(url)
    with workers(url, count):
        deadline = time.monotonic() + 600
        while db.count_runs().get("completed", 0) < runs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} workers did not finish {runs} runs in 600 s: "
                                   f"{db.count_runs()}")
            time.sleep(0.05)
    cpu = children_cpu() - cpu_before
    seconds, done = span_seconds(url)
    return {"rate": done / seconds, "cpu_ms": cpu / runs * 1000,
            "submit_ms": statistics.median(submits) * 1000}


def idle_start(base: str, tries: int = 20) -> float:
    """Median ms from submit to the first node's start, one idle worker listening."""
    from pocoflow import WorkflowDB

    url = fresh_database(base)
    flow = build(url)
    db = WorkflowDB(url)
    delays = []
    with workers(url, 1):
        time.sleep(0.5)  # the worker is idle, listening
        for i in range(tries):
            submitted = time.time()
            run_id = flow.submit({"i": i})
            while True:
                started = [e for e in db.get_events(run_id) if e["event"] == "node_start"]
                if started:
                    break
                time.sleep(0.001)
            from datetime import datetime

            delays.append(datetime.fromisoformat(started[0]["ts"]).timestamp() - submitted)
            time.sleep(0.05)
    return statistics.median(delays) * 1000


KINDS = {"loop": Step, "threaded": ThreadedStep}
CONCURRENT_TRIES = 3


def concurrent_main(kind: str, runs: int, database: str | None) -> None:
    """One measurement, alone in its process: *runs* simultaneous runs of the flow
    (recorded in the SQLite file *database*, or not at all); prints the wall seconds.
    Persistence is imported either way, so both sides start from the same heap."""
    import anyio

    import pocoflow.persistence.database  # noqa: F401

    flow = Flow(chain(KINDS[kind]), db_path=database, flow_name="c")

    async def main() -> None:
        if flow.db is not None:
            await flow.db.open()
        began = time.perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(runs):
                group.start_soon(flow.run_async, Store({"n": 0}))
        print(time.perf_counter() - began)

    anyio.run(main)


def concurrent_sqlite(runs: int, workdir: Path, kind: str) -> tuple[float, float]:
    """Wall s of *runs* simultaneous recorded runs on SQLite, and with no database: the
    best of CONCURRENT_TRIES each, every one in a fresh process, the two sides taking
    turns. (Measured in one process, the database's threads and heap, still there
    after its runs, slowed the runs without a database and flattered the ratio.)"""

    def timed(database: Path | None) -> float:
        command = [sys.executable, str(HERE), "--concurrent", kind, str(runs)]
        if database is not None:
            command.append(str(database))
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
        return float(done.stdout.split()[-1])

    with_db: list[float] = []
    without: list[float] = []
    for attempt in range(CONCURRENT_TRIES):
        with_db.append(timed(workdir / f"concurrent-{kind}-{runs}-{attempt}.db"))
        without.append(timed(None))
    return min(with_db), min(without)


def measure(*, runs: int, quick: bool, dbos: bool) -> list[Row]:
    from tests.postgres_server import postgres_server

    rows: list[Row] = []
    counts = (1, 2) if quick else (1, 2, 4)
    for durable in (True, False):
        label = "fsync on" if durable else "fsync off"
        with postgres_server(durable=durable) as base:
            if base is None:
                return [Row("(q) PostgreSQL", "no server binaries", "")]
            for count in counts:
                result = queued_throughput(base, runs, count)
                rows.append(Row(f"(q-a) {runs} queued 5-step runs, {count} worker(s), "
                                f"PostgreSQL {label}", f"{result['rate']:.0f}", "runs/s",
                                "≥ 300 (4 workers, fsync on)" if durable and count == 4
                                else "—",
                                result["rate"] >= 300 if durable and count == 4 else None))
                rows.append(Row("(q-a) ... worker CPU per run", f"{result['cpu_ms']:.1f}", "ms"))
                if count == 1:
                    rows.append(Row(f"(q-b) enqueue latency (median), {label}",
                                    f"{result['submit_ms']:.2f}", "ms", "< 2 ms",
                                    result["submit_ms"] < 2))
            if durable:
                idle = idle_start(base)
                rows.append(Row("(q-c) idle start latency (submit → first node), fsync on",
                                f"{idle:.1f}", "ms", "< 10 ms", idle < 10))
            if dbos:
                from workers_dbos import dbos_rows

                rows += dbos_rows(base, runs, counts, label)
    with tempfile.TemporaryDirectory(prefix="pocoflow-bench-queue-") as tmp:
        for kind, nodes in (("loop", "nodes on the loop"), ("threaded", "exec in threads")):
            for many in (1_000, 5_000):
                with_db, without = concurrent_sqlite(many, Path(tmp), kind)
                ratio = with_db / without
                rows.append(Row(f"(q-d) {many} concurrent 5-step runs ({nodes}), "
                                "SQLite / no database", f"{with_db:.2f} / {without:.2f}", "s"))
                rows.append(Row("(q-d) ... ratio", f"{ratio:.2f}", "x", "≤ 2x", ratio <= 2))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and workers")
    parser.add_argument("--runs", type=int, default=None, help="queued runs (default 2000)")
    parser.add_argument("--no-dbos", action="store_true", help="leave DBOS out")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--concurrent", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker)
        return 0
    if args.concurrent:
        kind, runs, *database = args.concurrent
        concurrent_main(kind, int(runs), database[0] if database else None)
        return 0
    runs = args.runs or (300 if args.quick else 2000)
    dbos = not args.no_dbos
    if dbos:
        try:
            import dbos as _dbos  # noqa: F401
        except ImportError:
            dbos = False
    print(table(measure(runs=runs, quick=args.quick, dbos=dbos)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
