"""``pocoflow worker`` and ``pocoflow runs gc``: serving a queue, and retention."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import sys
from collections.abc import Iterator
from typing import Any

from pocoflow.cli.base import OK, CLIError, count, emit_json, module_attr, moment, one_line
from pocoflow.cli.databases import Context
from pocoflow.logging import get_logger

_RATE = re.compile(r"^\s*(\d+)\s*(?:/\s*(\d+(?:\.\d+)?)?\s*(s|m|h)?)?\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def rate(text: str) -> tuple[int, float]:
    """``--rate``: ``N`` (per second), ``N/S`` (per S seconds) or ``N/m``, ``N/10s``..."""
    found = _RATE.match(text)
    if not found or int(found.group(1)) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rate: give runs per period, e.g. 10 (a second), 100/m, 50/30s"
        )
    from pocoflow.worker import MAX_PERIOD_S

    per = float(found.group(2) or 1) * _UNIT[found.group(3)]
    if not 0 < per <= MAX_PERIOD_S:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the period must be longer than 0 and at most a year"
        )
    return int(found.group(1)), per


def grace(text: str) -> float:
    """``--grace``: seconds to let runs finish when stopped, from 0 (``inf``: no limit)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:  # (NaN too)
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0 (or inf)")
    return value


def add_worker_parser(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        help="run queued runs of a flow (many workers may share a database)",
        description="Serve a queue: run the runs flow.submit() queued, at most N at once, "
        "waking on PostgreSQL NOTIFY (SQLite: polling); take up runs whose "
        "worker died; on SIGTERM/SIGINT let runs finish for the grace period, "
        "then hand the rest back to the queue.",
    )
    worker.add_argument(
        "flow",
        metavar="MODULE:FLOW",
        type=module_attr,
        help="the flow: a Flow, or a function returning one, importable from the current directory",
    )
    worker.add_argument(
        "--db", metavar="DB", help="the database (default: the flow's own); never created"
    )
    worker.add_argument(
        "--queue", default="default", metavar="NAME", help="the queue to serve (default: default)"
    )
    worker.add_argument(
        "--concurrency",
        type=count(1),
        default=4,
        metavar="N",
        help="runs at once in this worker (default 4)",
    )
    worker.add_argument(
        "--queue-concurrency",
        type=count(1),
        metavar="N",
        help="runs of the queue at once across all workers",
    )
    worker.add_argument(
        "--rate",
        type=rate,
        metavar="N[/PERIOD]",
        help="runs started per period across all workers, e.g. 100/m",
    )
    worker.add_argument(
        "--max-attempts",
        type=count(1),
        default=3,
        metavar="N",
        help="workers a run may kill before it is failed (default 3)",
    )
    worker.add_argument(
        "--grace",
        type=grace,
        default=30.0,
        metavar="S",
        help="seconds to let runs finish on SIGTERM (default 30)",
    )
    worker.set_defaults(func=serve)


def add_gc_parser(verbs: Any, db_help: str) -> None:
    gc = verbs.add_parser(
        "gc",
        help="delete old runs that ended",
        description="Delete runs that ended (completed, failed or cancelled) before a time, "
        "with their nested runs, events, checkpoints and inputs, a batch at a "
        "time so writers are not held up; print what was deleted. Runs queued, "
        "running or paused are never deleted.",
    )
    gc.add_argument("database", metavar="DB", help=db_help)
    gc.add_argument(
        "--older-than",
        type=moment,
        required=True,
        metavar="WHEN",
        help="an age like 30d, 12h, or an ISO-8601 time",
    )
    gc.add_argument(
        "--status",
        choices=("completed", "failed", "cancelled"),
        metavar="STATUS",
        help="only runs with this status (completed, failed or cancelled)",
    )
    gc.add_argument(
        "--batch",
        type=count(1),
        default=500,
        metavar="N",
        help="runs deleted per transaction (default 500)",
    )
    gc.add_argument("--json", action="store_true", help="one JSON document")
    gc.set_defaults(func=collect)


def serve(args: argparse.Namespace, ctx: Context) -> int:
    from pocoflow.cli.flows import load_flow
    from pocoflow.worker import Worker

    db = ctx.open_existing(args.db, command="pocoflow worker") if args.db else None
    flow = load_flow(args.flow)
    if db is not None:
        flow.db = db
    if flow.db is None:
        raise CLIError(
            f"{args.flow} has no database; give the one its runs are queued in with --db DB."
        )
    limit, period = args.rate if args.rate else (None, 1.0)
    worker = Worker(
        flow,
        queue=args.queue,
        concurrency=args.concurrency,
        queue_concurrency=args.queue_concurrency,
        rate=limit,
        rate_period=period,
        max_attempts=args.max_attempts,
        grace_period=args.grace,
    )
    print(
        f"worker: serving queue {args.queue!r} of {args.flow} on {flow.db.url} "
        f"(concurrency {args.concurrency}); Ctrl-C or SIGTERM to stop",
        flush=True,
    )
    with _warnings_on_stderr():
        try:
            worker.serve()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now
            return OK
    return OK


class _OneLine(logging.Formatter):
    """A log record on one line, stored text (run ids, errors) escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


@contextlib.contextmanager
def _warnings_on_stderr() -> Iterator[None]:
    """The worker's warnings (a database away, a run that failed) on stderr while it
    serves, unless the application set up PocoFlow's logging itself: an operator
    would otherwise see only the start line while every claim fails."""
    root = get_logger()
    if any(not isinstance(h, logging.NullHandler) for h in root.handlers):
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_OneLine("pocoflow: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def collect(args: argparse.Namespace, ctx: Context) -> int:
    db = ctx.open_existing(args.database, command="pocoflow runs gc")
    deleted = db.delete_runs(args.older_than, status=args.status, batch=args.batch)
    if args.json:
        emit_json(
            {
                "database": db.url,
                "older_than": args.older_than.isoformat(),
                "status": args.status,
                "deleted": deleted,
            }
        )
    else:
        print(
            f"deleted {deleted['runs']} runs ({deleted['events']} events, "
            f"{deleted['checkpoints']} checkpoints, {deleted['inputs']} inputs) that ended "
            f"before {args.older_than.isoformat(timespec='seconds')}"
        )
    return OK
