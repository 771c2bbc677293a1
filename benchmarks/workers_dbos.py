"""The (q-e) rows of benchmarks/workers.py: the same queued workload on DBOS.

A DBOS workflow of 5 trivial steps (each checkpointed by DBOS), enqueued N times
on a DBOS queue with a ``DBOSClient`` (so the enqueuing process runs nothing),
then drained by 1, 2 and 4 worker processes (``DBOS.launch()``, worker
concurrency 32, polling every 0.1 s, DBOS's fastest documented setting), on
the same throwaway PostgreSQL server as PocoFlow's rows. Runs per second from
the first workflow's start to the last one's end, as DBOS recorded them.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run import Row

HERE = Path(__file__).resolve()
QUEUE = "bench"


def worker_main(url: str) -> None:
    """A DBOS worker process: launch and serve the queue until SIGTERM."""
    from dbos import DBOS

    DBOS(config={"name": "pocoflow-bench", "system_database_url": url,
                 "executor_id": f"worker-{os.getpid()}", "run_admin_server": False,
                 "log_level": "WARNING"})  # type: ignore[typeddict-unknown-key]
    @DBOS.step()
    def step(n: int) -> int:
        return n + 1

    @DBOS.workflow(name="five_steps")
    def five_steps(n: int) -> int:
        for _ in range(5):
            n = step(n)
        return n

    DBOS.launch()
    DBOS.register_queue(QUEUE, worker_concurrency=32, polling_interval_sec=0.1)
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    DBOS.destroy()


def _sql_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def drain(base: str, runs: int, count: int) -> tuple[float, float, float]:
    """runs/s, worker CPU ms per run, median enqueue ms for *count* DBOS workers."""
    import resource

    from dbos import DBOSClient
    from sqlalchemy import create_engine, text

    from tests.postgres_server import create_database

    url = _sql_url(create_database(base, f"dbos_{os.getpid()}_{time.monotonic_ns()}"))
    # one worker first creates DBOS's schema, then stops: the queue is filled while
    # no worker runs, as for PocoFlow's rows
    first = subprocess.Popen([sys.executable, str(HERE), url], stdout=subprocess.PIPE,
                             text=True)
    assert first.stdout is not None
    assert first.stdout.readline() == "ready\n"
    first.send_signal(signal.SIGTERM)
    first.wait(30)
    client = DBOSClient(system_database_url=url)
    enqueues = []
    for i in range(runs):
        began = time.perf_counter()
        client.enqueue({"queue_name": QUEUE, "workflow_name": "five_steps"}, i)
        enqueues.append(time.perf_counter() - began)
    client.destroy()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = usage.ru_utime + usage.ru_stime
    procs = [subprocess.Popen([sys.executable, str(HERE), url], stdout=subprocess.PIPE,
                              text=True) for _ in range(count)]
    engine = create_engine(url)
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 900
        with engine.connect() as conn:
            while True:
                done = conn.execute(text("SELECT count(*) FROM dbos.workflow_status "
                                         "WHERE status = 'SUCCESS'")).scalar()
                conn.rollback()
                if done >= runs or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            first_ms, last_ms = conn.execute(text(
                "SELECT min(started_at_epoch_ms), max(updated_at) FROM dbos.workflow_status "
                "WHERE status = 'SUCCESS'")).one()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        engine.dispose()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    seconds = (last_ms - first_ms) / 1000
    return done / seconds, cpu / runs * 1000, statistics.median(enqueues) * 1000


def dbos_rows(base: str, runs: int, counts: tuple[int, ...], label: str) -> list[Row]:
    rows = []
    for count in counts:
        rate, cpu_ms, enqueue_ms = drain(base, runs, count)
        rows.append(Row(f"(q-e) DBOS {runs} queued 5-step workflows, {count} worker(s), "
                        f"PostgreSQL {label}", f"{rate:.0f}", "runs/s"))
        rows.append(Row("(q-e) ... DBOS worker CPU per run", f"{cpu_ms:.1f}", "ms"))
        if count == 1:
            rows.append(Row(f"(q-e) DBOS enqueue latency (median), {label}",
                            f"{enqueue_ms:.2f}", "ms"))
    return rows


if __name__ == "__main__":
    worker_main(sys.argv[1])
