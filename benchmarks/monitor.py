"""The monitor at scale: each query it issues, and a whole page, on 100,000 runs.

``python benchmarks/monitor.py [--runs N] [--db PATH] [--keep] [--plans]``

Fills one SQLite file with N runs (default 100,000: 95,000 top-level runs and
5,000 runs of nested flows; 12 events each, ~1.2 million events; 5 checkpoints
each; a recorded graph and input each), inserting rows directly with
SQLAlchemy Core through pocoflow's models (a real run costs ~1 ms of recording
per step: 100,000 real runs would take many minutes), then prints one markdown
table: the fill time, the ms of each query the monitor issues, through the
public ``WorkflowDB`` API (median of 7 after a warm-up), and the time of a
whole page render (``AppTest`` of ``pocoflow/ui/monitor.py``: counts, the
first page, the newest run's every tab). ``--db PATH`` reuses a file filled
before (``--keep`` keeps the one made); ``--plans`` also prints SQLite's
EXPLAIN QUERY PLAN of each query. A missed target only shows as ok = NO.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from run import Row, table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pocoflow.db import WorkflowDB, upgrade_schema  # noqa: E402
from pocoflow.persistence.models import checkpoints, events, run_inputs, runs  # noqa: E402

FLOWS = 10
NODES = 5
BATCH = 5_000
QUERY_MS = 20.0
PAGE_S = 1.0
REPS = 7
DEAD_OWNER = f"{socket.gethostname()}:999999:deadbeef:deadbeef"  # a pid no process has


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def status_of(i: int) -> str:
    if i % 5000 == 99:
        return "running"  # with a dead owner: interrupted (20 of them)
    slot = i % 100
    return ("completed" if slot < 85 else "failed" if slot < 93 else "cancelled" if slot < 96
            else "paused" if slot < 98 else "queued" if slot == 98 else "completed")


GRAPH = json.dumps({
    "start": "N0",
    "nodes": [{"id": f"N{n}", "name": f"N{n}", "type": "Node"} for n in range(NODES)],
    "edges": [{"from": f"N{n}", "to": f"N{n + 1}", "action": "default"}
              for n in range(NODES - 1)]})


def rows_of(i: int, run_id: str, began: datetime, parent: str | None,
            ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]],
                       dict[str, Any]]:
    """One run's row, events, checkpoints and input, as the recorder would write them."""
    status = "completed" if parent else status_of(i)
    steps = 0 if status == "queued" else NODES
    failed = status == "failed"
    ended = began + timedelta(milliseconds=40 + i % 700)
    stopped_at = NODES - 1 if status in ("failed", "paused", "running") else None
    run = {"run_id": run_id, "flow_name": "inner" if parent else f"flow-{i % FLOWS}",
           "status": status, "started_at": iso(began),
           "completed_at": None if status in ("running", "paused", "queued") else iso(ended),
           "total_steps": steps - (1 if stopped_at is not None else 0),
           "current_node": f"N{stopped_at if stopped_at is not None else NODES - 1}",
           "error_msg": f"node N4 failed: timeout talking to model {i % 37}" if failed else None,
           "next_node": f"N{stopped_at}" if stopped_at is not None else None,
           "parent_run_id": parent,
           "owner": DEAD_OWNER if status == "running" else f"bench:1:{i:08x}",
           "heartbeat_at": iso(ended), "cancel_requested_at": None}
    found: list[dict[str, Any]] = []
    saved: list[dict[str, Any]] = []
    if steps:
        moment = began

        def event(kind: str, **fields: Any) -> None:
            nonlocal moment
            moment += timedelta(milliseconds=3)
            found.append({"run_id": run_id, "event": kind, "ts": iso(moment), "step": None,
                          "node_name": None, "action": None, "elapsed_ms": None,
                          "error_msg": None, "detail": None, **fields})

        event("flow_start", node_name="N0")
        for step in range(NODES):
            event("node_start", step=step, node_name=f"N{step}")
            if step == stopped_at:
                if failed:
                    event("node_error", step=step, node_name=f"N{step}",
                          error_msg=run["error_msg"])
                break
            event("node_end", step=step, node_name=f"N{step}", action="default",
                  elapsed_ms=2.5)
            saved.append({"run_id": run_id, "step": step, "node_name": f"N{step}",
                          "store_json": json.dumps({"n": step, "doc": f"doc {i}",
                                                    "tags": ["a", "b"][: step % 3]}),
                          "created_at": iso(moment), "kind": "full",
                          "next_node": f"N{step + 1}" if step < NODES - 1 else None,
                          "excluded": None})
        if status != "running":
            event("flow_end", step=len(saved), action="default", error_msg=run["error_msg"])
    return run, found, saved, {"run_id": run_id, "graph_json": GRAPH,
                               "input_json": json.dumps({"n": 0})}


def fill(path: Path, count: int) -> dict[str, int]:
    """*count* runs (1 in 20 a nested flow's run) in the SQLite file *path*."""
    from sqlalchemy import create_engine

    upgrade_schema(str(path))
    engine = create_engine(f"sqlite:///{path}")
    start = datetime.now(timezone.utc) - timedelta(days=30)
    spacing = timedelta(days=30) / count
    totals = {"runs": 0, "events": 0, "checkpoints": 0}
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA synchronous = OFF")
        conn.commit()
        for first in range(0, count, BATCH):
            batch: tuple[list[Any], list[Any], list[Any], list[Any]] = ([], [], [], [])
            for i in range(first, min(first + BATCH, count)):
                parent = f"run-{i - 1:06d}" if i % 20 == 1 else None
                run_id = f"{parent}.1" if parent else f"run-{i:06d}"
                made = rows_of(i, run_id, start + spacing * i, parent)
                batch[0].append(made[0])
                batch[1].extend(made[1])
                batch[2].extend(made[2])
                batch[3].append(made[3])
            with conn.begin():
                conn.execute(runs.insert(), batch[0])
                conn.execute(events.insert(), batch[1])
                if batch[2]:
                    conn.execute(checkpoints.insert(), batch[2])
                conn.execute(run_inputs.insert(), batch[3])
            totals["runs"] += len(batch[0])
            totals["events"] += len(batch[1])
            totals["checkpoints"] += len(batch[2])
    engine.dispose()
    return totals


def median_ms(fn: Callable[[], Any], reps: int = REPS) -> float:
    fn()  # warm-up: connection, statement cache, pages
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def queries(db: WorkflowDB) -> Iterator[tuple[str, Callable[[], Any], float | None]]:
    """(scenario, call, target ms) of each query the monitor issues."""
    newest = db.list_runs(1)[0]["run_id"]
    failed = db.list_runs(1, status="failed")[0]["run_id"]
    parent = db.list_runs(1, include_nested=True, search=".1")[0]["parent_run_id"]
    day = datetime.now(timezone.utc) - timedelta(days=1)
    yield "first page (list_runs 50)", lambda: db.list_runs(50), QUERY_MS
    yield "counts per status (count_runs)", lambda: db.count_runs(), None
    yield "filtered page: status=failed", lambda: db.list_runs(50, status="failed"), QUERY_MS
    yield "filtered page: flow_name", lambda: db.list_runs(50, flow_name="flow-3"), QUERY_MS
    yield "filtered page: status=interrupted", \
        lambda: db.list_runs(50, status="interrupted"), QUERY_MS
    yield "filtered page: last 24 hours", lambda: db.list_runs(50, since=day), QUERY_MS
    yield "filtered page: flow + status + since", \
        lambda: db.list_runs(50, flow_name="flow-5", status="failed", since=day), QUERY_MS
    yield "counts: flow_name", lambda: db.count_runs(flow_name="flow-3"), None
    yield "counts: last 24 hours", lambda: db.count_runs(since=day), None
    yield "page 1,000 (offset 49,950)", lambda: db.list_runs(50, offset=49_950), None
    yield "search, rare text (page)", lambda: db.list_runs(50, search="zz-no-such"), None
    yield "search, rare text (counts)", lambda: db.count_runs(search="zz-no-such"), None
    yield "search, common text (page)", lambda: db.list_runs(50, search="model 7"), QUERY_MS
    yield "one run (get_run)", lambda: db.get_run(newest), QUERY_MS
    yield "one run's events (get_events)", lambda: db.get_events(failed), QUERY_MS
    yield "its checkpoints (checkpoint_steps)", lambda: db.checkpoint_steps(failed), QUERY_MS
    yield "a store (get_checkpoint_json)", lambda: db.get_checkpoint_json(failed, 2), QUERY_MS
    yield "its graph and input (get_run_input)", lambda: db.get_run_input(failed), QUERY_MS
    yield "child runs (list_runs parent_run_id)", \
        lambda: db.list_runs(200, parent_run_id=parent), QUERY_MS


def page_render(path: Path) -> tuple[float, float]:
    """Seconds of the first render of the monitor page and of a rerun (a refresh)."""
    os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", "error")  # AppTest has no browser session
    from streamlit.testing.v1 import AppTest

    from pocoflow.ui.monitor import DB_ENV

    os.environ[DB_ENV] = str(path)
    script = ROOT / "pocoflow" / "ui" / "monitor.py"
    AppTest.from_file(str(script), default_timeout=120).run()  # imports, compiled script
    app = AppTest.from_file(str(script), default_timeout=120)
    began = time.perf_counter()
    app.run()
    first = time.perf_counter() - began
    if app.exception:
        raise RuntimeError(f"the monitor failed: {[e.value for e in app.exception]}")
    reruns = []
    for _ in range(3):
        began = time.perf_counter()
        app.run()
        reruns.append(time.perf_counter() - began)
    return first, min(reruns)


def print_plans(path: Path) -> None:
    """EXPLAIN QUERY PLAN of every statement the queries above send."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    sent: dict[str, Any] = {}

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "alembic" not in statement:
            sent.setdefault(statement, parameters)

    event.listen(Engine, "before_cursor_execute", grab)
    try:
        db = WorkflowDB(path)
        for _, call, _ in queries(db):
            call()
    finally:
        event.remove(Engine, "before_cursor_execute", grab)
    raw = sqlite3.connect(path)
    for statement, parameters in sent.items():
        plan = [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
        print(f"- `{' '.join(statement.split())[:140]}...`\n  " + "; ".join(plan))
    raw.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="runs to fill (default 100,000)")
    parser.add_argument("--db", type=Path, help="use this file, filled before (no fill)")
    parser.add_argument("--keep", action="store_true", help="keep the file made (path printed)")
    parser.add_argument("--plans", action="store_true", help="print EXPLAIN QUERY PLAN too")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    made = None
    rows: list[Row] = []
    if args.db is None:
        made = Path(tempfile.mkdtemp(prefix="pocoflow-monitor-bench-")) / "monitor.db"
        began = time.perf_counter()
        totals = fill(made, args.runs)
        took = time.perf_counter() - began
        rows.append(Row(f"fill: {totals['runs']:,} runs, {totals['events']:,} events, "
                        f"{totals['checkpoints']:,} checkpoints", f"{took:.1f}", "s"))
        path = made
    else:
        path = args.db
    size = path.stat().st_size + (path.with_name(path.name + "-wal").stat().st_size
                                  if path.with_name(path.name + "-wal").exists() else 0)
    rows.append(Row("database file", f"{size / 1e6:.0f}", "MB"))
    db = WorkflowDB(path)
    for scenario, call, target in queries(db):
        ms = median_ms(call)
        rows.append(Row(scenario, f"{ms:.2f}", "ms", f"< {target:.0f}" if target else "—",
                        ms < target if target else None))
    first, rerun = page_render(path)
    rows.append(Row("page render, first (AppTest)", f"{first:.2f}", "s", f"< {PAGE_S:.0f}",
                    first < PAGE_S))
    rows.append(Row("page render, refresh (AppTest rerun)", f"{rerun:.2f}", "s",
                    f"< {PAGE_S:.0f}", rerun < PAGE_S))
    print(table(rows))
    if args.plans:
        print()
        print_plans(path)
    if made is not None:
        if args.keep:
            print(f"\nkept {made}")
        else:
            from pocoflow.persistence.connect import to_url
            from pocoflow.persistence.database import Database

            Database.forget(to_url(str(made)))
            for leftover in made.parent.iterdir():
                leftover.unlink()
            made.parent.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
