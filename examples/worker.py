"""Durable runs at scale: queue a batch of runs, let a pool of workers do them.

    python examples/worker.py                      # SQLite file, 3 worker processes
    python examples/worker.py --docs 30 --workers 4 --threads
    python examples/worker.py --db postgresql+psycopg://user@host/db

The script submits one run per document (``flow.submit``: recorded as
``queued``, nothing runs here), starts worker processes (``python
examples/worker.py --serve``, what ``pocoflow worker examples.worker:build_flow``
does) or worker threads, follows every run through ``RunHandle.for_run`` and
prints a short report: which worker did how many runs, how long they took.
Kill a worker process while it runs (``kill -9 PID``): its runs are taken up
by the others once their lease runs out, from their last checkpoint.

The "LLM" is a fake that sleeps a little, so the example runs offline.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime

from pocoflow import Flow, Node, RunHandle, WorkflowDB

DOCUMENTS = [
    "Anyio runs the same async code on asyncio and trio.",
    "SQLite in WAL mode lets readers and one writer work at once.",
    "PostgreSQL's SKIP LOCKED lets many workers take jobs from one table.",
    "A checkpoint after every step makes a long run resumable.",
    "Rate limits keep a fleet of workers within a model provider's quota.",
    "A lease and a heartbeat tell a dead worker from a slow one.",
]


def fake_llm(prompt: str) -> str:
    """An offline stand-in for a model call (a little slow, like the real thing)."""
    time.sleep(0.05)
    words = prompt.split(":", 1)[-1].split()
    return " ".join(words[:6]) + ("..." if len(words) > 6 else "")


class Summarise(Node):
    max_retries = 3
    retry_delay = 0.1

    def prep(self, store):
        return store["document"]

    def exec(self, document):
        return fake_llm(f"Summarise: {document}")

    def post(self, store, document, summary):
        store["summary"] = summary


class Title(Node):
    def prep(self, store):
        return store["summary"]

    def exec(self, summary):
        return fake_llm(f"Title: {summary}").title()

    def post(self, store, summary, title):
        store["title"] = title
        store["worker"] = f"{os.getpid()}/{threading.current_thread().name}"


def build_flow(db=None) -> Flow:
    """The flow every worker serves and every run is submitted to."""
    summarise = Summarise()
    summarise.then("default", Title())
    return Flow(start=summarise, db=db, flow_name="summaries")


def serve(url: str, concurrency: int) -> None:
    """One worker process: serve the queue until SIGTERM (then finish, or hand back)."""
    from pocoflow.worker import Worker

    Worker(build_flow(WorkflowDB(url)), concurrency=concurrency, grace_period=10).serve()


def start_workers(url: str, count: int, concurrency: int, threads: bool) -> list:
    """Worker processes (``--serve``), or worker threads of this process."""
    if not threads:
        return [subprocess.Popen([sys.executable, __file__, "--serve", "--db", url,
                                  "--concurrency", str(concurrency)]) for _ in range(count)]
    import anyio

    from pocoflow.worker import Worker

    started = []
    for i in range(count):
        worker = Worker(build_flow(WorkflowDB(url)), concurrency=concurrency)
        thread = threading.Thread(target=anyio.run, args=(worker.run_async,),
                                  name=f"worker-{i}", daemon=True)
        thread.start()
        started.append((worker, thread))
    return started


def stop_workers(started: list) -> None:
    for item in started:
        if isinstance(item, subprocess.Popen):
            item.send_signal(signal.SIGTERM)
        else:
            item[0].stop()
    for item in started:
        if isinstance(item, subprocess.Popen):
            item.wait(timeout=60)
        else:
            item[1].join(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Without --db: a SQLite file in this directory.")
    parser.add_argument("--db", default="sqlite:///pocoflow-worker-example.db",
                        help="database URL or path (default: %(default)s)")
    parser.add_argument("--docs", type=int, default=12, help="runs to submit (default: 12)")
    parser.add_argument("--workers", type=int, default=3, help="workers to start (default: 3)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="runs at once per worker (default: 2)")
    parser.add_argument("--threads", action="store_true",
                        help="run the workers as threads of this process, not processes")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        serve(args.db, args.concurrency)
        return 0

    db = WorkflowDB(args.db)  # creates (or upgrades) the schema once, up front
    flow = build_flow(db)
    run_ids = [flow.submit({"document": DOCUMENTS[i % len(DOCUMENTS)], "n": i})
               for i in range(args.docs)]
    print(f"Queued {len(run_ids)} runs on {db.url}")

    began = time.monotonic()
    workers = start_workers(args.db, args.workers, args.concurrency, args.threads)
    try:
        stores = [RunHandle.for_run(run_id, db).wait(timeout=120) for run_id in run_ids]
    finally:
        stop_workers(workers)
    took = time.monotonic() - began

    by_worker = Counter(store["worker"] for store in stores)
    durations = []
    for run_id in run_ids:
        run = db.get_run(run_id)
        durations.append((datetime.fromisoformat(run["completed_at"])
                          - datetime.fromisoformat(run["started_at"])).total_seconds())
    print(f"Done: {len(stores)} runs in {took:.1f} s by {len(by_worker)} worker(s)")
    for worker, count in sorted(by_worker.items()):
        print(f"  worker {worker}: {count} run(s)")
    print(f"  a run took {min(durations):.2f} to {max(durations):.2f} s from its claim "
          "to its end")
    for run_id, store in list(zip(run_ids, stores, strict=False))[:3]:
        print(f"  {run_id}: {store['title']!r}")
    statuses = Counter(db.get_run(r)["status"] for r in run_ids)
    print(f"  statuses: {dict(statuses)}")
    return 0 if statuses == {"completed": len(run_ids)} else 1


if __name__ == "__main__":
    sys.exit(main())
