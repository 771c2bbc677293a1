"""Write ``pocoflow-0.2.1.db``: a SQLite file made by the real pocoflow 0.2.1 from PyPI.

The file is a fixture for the 0.2 -> 0.3 upgrade path: it holds the three tables that
0.2.1 creates (``pf_runs``, ``pf_checkpoints``, ``pf_events``) and no ``alembic_version``.

This script runs only under pocoflow 0.2.1 (it refuses to run under any other version),
never under the pocoflow of this repository.  From the repository root::

    python -m venv v && v/bin/pip install pocoflow==0.2.1 && \
        v/bin/python tests/data/make_pocoflow_021_db.py tests/data/pocoflow-0.2.1.db

The output file is deleted first (with any ``-wal`` / ``-shm`` side files), so every
run starts from an empty database.  Runs written, with fixed run ids:

``greet-completed``
    Load -> Transform -> Save, completes.  The store holds a str, an int, a list and a
    nested dict.  3 checkpoints (steps 0..2).
``greet-failed``
    Load -> FailingTransform -> Save; Load succeeds, then FailingTransform.exec raises
    ``ValueError("boom at step 1")``.  0.2.1 marks the run 'failed' with that message.
    1 checkpoint (step 0).
``loop-completed``
    Tick loops on itself 5 times through the ``"again"`` edge, then returns ``"done"``
    (no edge, so the flow ends).  6 checkpoints (steps 0..5).
``nonjson``
    Completes; the store holds a ``set`` and a plain object, which 0.2.1 writes as
    ``"<non-serialisable: set>"`` and ``"<non-serialisable: Widget>"``.
``stuck-running``
    Written through ``WorkflowDB`` directly, with the same calls ``Flow.run`` makes, up
    to the ``node_start`` of step 1: it models a 0.2 process that died mid-run, so
    the run stays in status 'running' (step 0 has its checkpoint).

Everything is deterministic except the timestamps (``started_at``, ``completed_at``,
``created_at``, ``ts``) and ``elapsed_ms``.

At the end the script checkpoints the write-ahead log (``PRAGMA
wal_checkpoint(TRUNCATE)``), switches the file to ``PRAGMA journal_mode=DELETE`` (0.2.1
turns WAL on) and removes any ``-wal`` / ``-shm`` file left over, so the .db file is
self-contained.
"""

from __future__ import annotations

import gc
import sqlite3
import sys
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from pocoflow import Flow, Node, Store, WorkflowDB

EXPECTED_VERSION = "0.2.1"


# ── greet flow: Load -> Transform -> Save ─────────────────────────────────────


class Load(Node):
    def prep(self, store):
        return store["name"]

    def exec(self, prep_result):
        return f"hello {prep_result}"

    def post(self, store, prep_result, exec_result):
        store["greeting"] = exec_result
        store["count"] = 1
        return "default"


class Transform(Node):
    def prep(self, store):
        return store["greeting"]

    def exec(self, prep_result):
        return prep_result.split()

    def post(self, store, prep_result, exec_result):
        store["words"] = exec_result
        store["count"] = store["count"] + 1
        return "default"


class FailingTransform(Node):
    def prep(self, store):
        return store["greeting"]

    def exec(self, prep_result):
        raise ValueError("boom at step 1")


class Save(Node):
    def prep(self, store):
        return store["words"]

    def exec(self, prep_result):
        return {"saved": True, "meta": {"n_words": len(prep_result), "tags": ["a", "b"]}}

    def post(self, store, prep_result, exec_result):
        store["result"] = exec_result
        store["count"] = store["count"] + 1
        return "default"


# ── loop flow: Tick -> Tick (x5) -> end ───────────────────────────────────────


class Tick(Node):
    def prep(self, store):
        return store["i"]

    def exec(self, prep_result):
        return prep_result + 1

    def post(self, store, prep_result, exec_result):
        store["i"] = exec_result
        store["trail"] = [*store["trail"], exec_result]
        return "again" if exec_result <= 5 else "done"


# ── non-JSON store values ─────────────────────────────────────────────────────


class Widget:
    """A plain object: json.dumps cannot write it."""

    def __init__(self, label):
        self.label = label


class MakeOdd(Node):
    def exec(self, prep_result):
        return None

    def post(self, store, prep_result, exec_result):
        store["tags"] = {"x"}
        store["widget"] = Widget("w1")
        store["plain"] = "ok"
        store["unicode"] = "héllo ✓"
        return "default"


# ── writers ───────────────────────────────────────────────────────────────────


def _greet_flow(db_path, run_id, middle):
    load, save = Load(), Save()
    load.then("default", middle)
    middle.then("default", save)
    return Flow(start=load, db_path=db_path, flow_name="greet", run_id=run_id)


def write_greet_completed(db_path):
    flow = _greet_flow(db_path, "greet-completed", Transform())
    flow.run(Store({"name": "world"}))


def write_greet_failed(db_path):
    flow = _greet_flow(db_path, "greet-failed", FailingTransform())
    caught = None
    try:
        flow.run(Store({"name": "world"}))
    except ValueError as exc:
        caught = str(exc)
    if caught != "boom at step 1":
        raise AssertionError(f"greet-failed: expected ValueError('boom at step 1'), got {caught!r}")


def write_loop_completed(db_path):
    tick = Tick()
    tick.then("again", tick)
    flow = Flow(start=tick, db_path=db_path, flow_name="loop", run_id="loop-completed")
    flow.run(Store({"i": 0, "trail": []}))


def write_nonjson(db_path):
    flow = Flow(start=MakeOdd(), db_path=db_path, flow_name="odd", run_id="nonjson")
    flow.run(Store({}))


def _now():
    return datetime.now(timezone.utc).isoformat()


def write_stuck_running(db_path):
    """Replay what 0.2.1's Flow.run writes, stopping at the node_start of step 1."""
    db = WorkflowDB(db_path)
    run_id = "stuck-running"
    db.create_run(run_id, flow_name="stuck")
    db.save_event(run_id, "flow_start", node_name="Load", ts=_now())
    db.update_run(run_id, current_node="Load")
    db.save_event(run_id, "node_start", step=0, node_name="Load", ts=_now())
    db.save_event(run_id, "node_end", step=0, node_name="Load", action="default",
                  elapsed_ms=1.0, ts=_now())
    db.save_checkpoint(run_id, 0, "Load",
                       Store({"name": "world", "greeting": "hello world", "count": 1}))
    db.update_run(run_id, total_steps=1)
    db.update_run(run_id, current_node="Transform")
    db.save_event(run_id, "node_start", step=1, node_name="Transform", ts=_now())
    # ... and here the process died: no node_end, no flow_end, status stays 'running'.


# ── file handling ─────────────────────────────────────────────────────────────


def _side_files(path):
    return [Path(f"{path}-wal"), Path(f"{path}-shm")]


def make_self_contained(path):
    """Fold the WAL into the main file and leave it in rollback-journal mode."""
    conn = sqlite3.connect(str(path))
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        assert mode == "delete", mode
    finally:
        conn.close()
    for side in _side_files(path):
        side.unlink(missing_ok=True)


def report(path):
    conn = sqlite3.connect(str(path))
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        print("tables:", tables)
        for name in ("pf_runs", "pf_checkpoints", "pf_events"):
            assert name in tables, name
            print(f"  {name}: {conn.execute(f'SELECT COUNT(*) FROM {name}').fetchone()[0]}")
        assert "alembic_version" not in tables
        rows = conn.execute("SELECT run_id, flow_name, status, total_steps, current_node, "
                            "error_msg FROM pf_runs ORDER BY started_at")
        for row in rows:
            print("  run:", row)
    finally:
        conn.close()


def main(argv):
    if len(argv) != 2:
        sys.exit(f"usage: {argv[0]} OUTPUT.db")
    installed = version("pocoflow")
    if installed != EXPECTED_VERSION:
        sys.exit(f"needs pocoflow=={EXPECTED_VERSION}, found {installed}")
    out = Path(argv[1])
    for stale in (out, *_side_files(out)):
        stale.unlink(missing_ok=True)

    write_greet_completed(out)
    write_greet_failed(out)
    write_loop_completed(out)
    write_nonjson(out)
    write_stuck_running(out)

    # 0.2.1's WorkflowDB never closes its connections (``with conn:`` only commits);
    # they sit in reference cycles until a collection, and while one is open SQLite
    # refuses to leave WAL mode ("database is locked").
    gc.collect()
    make_self_contained(out)
    report(out)


if __name__ == "__main__":
    main(sys.argv)
