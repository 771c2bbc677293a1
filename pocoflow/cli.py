"""The ``pocoflow`` command. It only calls the public API.

    pocoflow db upgrade DB     bring a database to the current schema
    pocoflow db current DB     print its schema revision (and the code's)
    pocoflow runs DB [--status S] [--flow NAME] [--limit N]   list runs
    pocoflow runs DB RUN_ID    one run: its row and its events
    pocoflow resume MODULE:FLOW RUN_ID [--db DB] [--set KEY=JSON ...]
                               continue a stopped run (FLOW: a Flow, or a function
                               returning one, importable from the current directory)

DB is a SQLite file path or a SQLAlchemy URL.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pocoflow", description="PocoFlow command line.")
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="database schema: upgrade, current")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    for name, text in (("upgrade", "bring DB to the current schema"),
                       ("current", "print DB's schema revision")):
        sub = db_commands.add_parser(name, help=text)
        sub.add_argument("database", metavar="DB", help="SQLite file path or SQLAlchemy URL")

    runs = commands.add_parser("runs", help="list runs, or show one")
    runs.add_argument("database", metavar="DB")
    runs.add_argument("run_id", nargs="?", help="show this run and its events")
    runs.add_argument("--status", help="only runs with this status (interrupted too)")
    runs.add_argument("--flow", help="only runs of this flow name")
    runs.add_argument("--limit", type=int, default=20)

    resume = commands.add_parser("resume", help="continue a failed, cancelled, paused or "
                                                "interrupted run from its last checkpoint")
    resume.add_argument("flow", metavar="MODULE:FLOW", help="e.g. myapp.flows:research")
    resume.add_argument("run_id")
    resume.add_argument("--db", help="the database, if the flow does not name one")
    resume.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="write KEY (a JSON value) to the store first; repeatable")

    args = parser.parse_args(argv)
    try:
        if args.command == "db":
            return _db(args.db_command, args.database)
        if args.command == "resume":
            return _resume(args)
        return _runs(args)
    except Exception as exc:  # a clear one-line error, not a traceback
        from pocoflow.errors import PocoFlowError

        if not isinstance(exc, (PocoFlowError, ValueError, TypeError, FileNotFoundError,
                                ModuleNotFoundError)):
            raise
        print(f"pocoflow: error: {exc}", file=sys.stderr)
        return 1


def _db(command: str, database: str) -> int:
    from pocoflow.db import schema_revision, upgrade_schema

    if command == "upgrade":
        status = upgrade_schema(database)
        if status["exists"] is None:
            print(f"pocoflow: creating new database {status['file']}")
        if status["before"] == status["after"]:
            print(f"{status['url']}: already at revision {status['after']} (head)")
        else:
            print(f"{status['url']}: upgraded from {status['before'] or '(empty)'} to "
                  f"{status['after']} (head)")
        return 0
    status = schema_revision(database)
    if status["exists"] is None:
        print(f"{status['url']}: revision (none): no such file yet; this PocoFlow's head is "
              f"{status['head']}")
    else:
        print(f"{status['url']}: revision {status['before'] or '(none)'}; this PocoFlow's "
              f"head is {status['head']}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    from pocoflow.db import WorkflowDB

    db = WorkflowDB(args.database)
    if args.run_id:
        run = db.get_run(args.run_id)
        if run is None:
            print(f"pocoflow: no run {args.run_id!r} in {db.url}", file=sys.stderr)
            return 1
        for key in ("run_id", "flow_name", "status", "started_at", "completed_at",
                    "total_steps", "current_node", "next_node", "error_msg", "parent_run_id"):
            print(f"{key:>14}: {run.get(key)}")
        print()
        for event in db.get_events(args.run_id):
            elapsed = event["elapsed_ms"]
            print(f"{event['ts']}  {event['event']:<11} step={event['step']!s:<4} "
                  f"{event['node_name'] or '':<20} {event['action'] or '':<10} "
                  f"{'' if elapsed is None else f'{elapsed:.1f} ms':>10} "
                  f"{event['error_msg'] or ''}")
        return 0
    rows = db.list_runs(args.limit, status=args.status, flow_name=args.flow)
    print(f"{'run_id':<32} {'flow':<16} {'status':<12} {'steps':>5}  started_at")
    for run in rows:
        print(f"{run['run_id']:<32} {run['flow_name']:<16} {run['status']:<12} "
              f"{run['total_steps'] if run['total_steps'] is not None else '':>5}  "
              f"{run['started_at']}")
    return 0


def _resume(args: argparse.Namespace) -> int:
    import importlib
    import json
    import os

    from pocoflow.flow import Flow

    module_name, _, attribute = args.flow.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"resume: {args.flow!r} is not MODULE:FLOW (e.g. myapp.flows:research).")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    target = getattr(importlib.import_module(module_name), attribute, None)
    flow = target() if callable(target) and not isinstance(target, Flow) else target
    if not isinstance(flow, Flow):
        raise TypeError(f"resume: {args.flow} is not a Flow, nor a function returning one.")
    if args.db is not None:
        from pocoflow.db import as_async_db

        flow.db = as_async_db(args.db)
    updates = {}
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"resume: --set {item!r} is not KEY=JSON.")
        try:
            updates[key] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"resume: --set {key}: {text!r} is not JSON ({exc}).") from None
    store = flow.resume(args.run_id, updates=updates or None)
    run = flow.db.records.get_run(args.run_id) if flow.db is not None else None
    status = run["status"] if run else "?"
    print(f"{args.run_id}: {status}; store keys: {sorted(store.keys())}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
