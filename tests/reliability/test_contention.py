"""Contention: four processes write 50 runs each to one database while a fifth reads
without pause. No process sees a lock error, no row is lost, and (SQLite) the WAL file
stays within its bound the whole time.

Each writer runs its 50 runs five at a time (tasks on one loop, so its steps are also
group-committed), 30 steps each, rewriting about 1 KB of the store per step. The reader
lists runs, counts them, follows the event log and loads checkpoints in a loop. Every
process logs PocoFlow's warnings to its output, which is searched for "locked". A thread
here samples the size of the ``-wal`` file every 2 ms. ``POCOFLOW_CONTENTION_RUNS``
(default 50) sets the runs per writer for a longer run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pocoflow import WorkflowDB
from pocoflow.persistence.connect import WAL_LIMIT_BYTES
from tests.reliability.walsampler import WalSampler

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 4
RUNS = int(os.environ.get("POCOFLOW_CONTENTION_RUNS", "50"))
STEPS = 30
#: What the WAL may pass its bound by: the writes between two looks at its size, from
#: four processes at once (as in test_wal_bound.py).
MARGIN = 4 * 1024 * 1024
WAIT = 600.0

WRITER = textwrap.dedent('''
    import logging, sys
    import anyio
    from pocoflow import Flow, Node, Store

    logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                        format="%(levelname)s %(name)s %(message)s")
    url, who, runs, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    class Step(Node):
        def post(self, store, prep_res, exec_res):
            n = store["n"] = store["n"] + 1
            store["note"] = f"{who}:{store['run']}:{n:04d}|" * 60
            store["log"].append(n)
            return "again" if n < steps else "done"

    step = Step()
    step.then("again", step)
    flow = Flow(start=step, db_url=url, flow_name=f"writer{who}", max_steps=steps + 1)

    async def lane(first):
        for run in range(first, runs, 5):
            await flow.run_async(Store({"n": 0, "run": run, "log": []}))

    async def main():
        async with anyio.create_task_group() as group:
            for first in range(5):
                group.start_soon(lane, first)

    anyio.run(main)
    print("writer done", flush=True)
''')

READER = textwrap.dedent('''
    import logging, os, sys, traceback
    from pocoflow import WorkflowDB

    logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                        format="%(levelname)s %(name)s %(message)s")
    url, stop = sys.argv[1], sys.argv[2]
    db = WorkflowDB(url)
    reads, after = 0, 0
    while not os.path.exists(stop):
        try:
            runs = db.list_runs(50)
            db.count_runs()
            for run in runs[:3]:
                db.get_events(run["run_id"])
            new = db.get_events(None, after_id=after, limit=500)
            after = new[-1]["id"] if new else after
            done = [r for r in runs if r["status"] == "completed"][:1]
            for run in done:
                db.load_checkpoint(run["run_id"], run["total_steps"] - 1)
            reads += 5 + len(runs[:3]) + len(done)
        except Exception:
            traceback.print_exc()
            sys.exit(1)
    print("reads", reads, flush=True)
''')


def test_four_writers_and_a_reader_on_one_database(db_url: str, tmp_path: Path) -> None:
    """4 processes x 50 runs of 30 steps, a reader polling throughout: every process
    exits 0 with no "locked" in its output, every run is completed with all its events
    and checkpoints and the right final store, and the SQLite WAL never passed its bound
    (plus the margin)."""
    writer, reader = tmp_path / "writer.py", tmp_path / "reader.py"
    writer.write_text(WRITER)
    reader.write_text(READER)
    stop = tmp_path / "stop"
    WorkflowDB(db_url).list_runs()  # migrated once: the processes race on runs only
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    sqlite = db_url.startswith("sqlite:///")
    began = time.monotonic()
    with WalSampler(Path(db_url.removeprefix("sqlite:///")) if sqlite else None,
                    every=0.002) as sampler:
        read = subprocess.Popen([sys.executable, str(reader), db_url, str(stop)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        writers = [subprocess.Popen([sys.executable, str(writer), db_url, str(who), str(RUNS),
                                     str(STEPS)], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
                   for who in range(WRITERS)]
        try:
            outputs = [proc.communicate(timeout=WAIT)[0] for proc in writers]
        finally:
            stop.touch()
            read_output = read.communicate(timeout=WAIT)[0]
            for proc in [*writers, read]:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    took = time.monotonic() - began

    everything = "\n".join([*outputs, read_output])
    assert [0] * WRITERS == [proc.returncode for proc in writers], everything
    assert 0 == read.returncode, read_output
    assert "locked" not in everything.lower(), everything
    assert "Traceback" not in everything, everything
    assert ["writer done"] * WRITERS == [out.strip() for out in outputs], everything
    reads = int(read_output.split("reads")[1])
    assert reads > 0

    db = WorkflowDB(db_url)
    runs = db.list_runs(10 * WRITERS * RUNS)
    assert WRITERS * RUNS == len(runs)
    assert {("completed", STEPS, None)} == {(r["status"], r["total_steps"], r["error_msg"])
                                            for r in runs}
    lost = 0
    for run in runs:
        events = [(e["event"], e["step"]) for e in db.get_events(run["run_id"])]
        expected = [("flow_start", None),
                    *[(kind, step) for step in range(STEPS)
                      for kind in ("node_start", "node_end")],
                    ("flow_end", STEPS)]
        steps = [c["step"] for c in db.checkpoint_steps(run["run_id"])]
        lost += (events != expected) + (steps != list(range(STEPS)))
    assert 0 == lost
    for run in runs[::37]:
        store = db.load_checkpoint(run["run_id"], STEPS - 1)
        assert (STEPS, list(range(1, STEPS + 1))) == (store["n"], store["log"])
    if sqlite:
        assert sampler.samples > 100
        assert sampler.largest <= WAL_LIMIT_BYTES + MARGIN, (
            f"the WAL grew to {sampler.largest / 1e6:.1f} MB; its bound is "
            f"{WAL_LIMIT_BYTES / 1e6:.1f} MB")

    figures = {"suite": "contention", "backend": "sqlite" if sqlite else "postgresql",
               "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "writers": WRITERS,
               "runs": len(runs), "steps": len(runs) * STEPS, "reads": reads,
               "lock_errors": everything.lower().count("locked"), "rows_lost": lost,
               "wal_peak_bytes": sampler.largest, "wal_samples": sampler.samples,
               "seconds": round(took, 1)}
    print("\ncontention:", json.dumps(figures))
    target = os.environ.get("POCOFLOW_RELIABILITY_STATS")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps(figures) + "\n")
