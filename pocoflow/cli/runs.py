"""``pocoflow runs ls|show|cancel|tail``: the recorded runs, read through WorkflowDB."""

from __future__ import annotations

import argparse
import json
import sys
from difflib import get_close_matches
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocoflow.cli.base import (
    OK,
    CLIError,
    UsageError,
    clip,
    count,
    duration,
    emit_json,
    moment,
    one_line,
    parse_stamp,
    seconds,
    short_time,
    span,
    table,
    width,
)
from pocoflow.cli.databases import Context

if TYPE_CHECKING:
    from pocoflow.db import WorkflowDB

COMMANDS = ("ls", "show", "cancel", "tail", "gc")
#: options of the runs commands that take a value (to tell their values from positionals)
_VALUED = (
    "--status",
    "--flow",
    "--search",
    "--since",
    "--until",
    "--limit",
    "--offset",
    "--interval",
    "-n",
    "--lines",
    "--older-than",
    "--batch",
)
#: statuses at which a run has stopped (``tail RUN_ID`` ends there)
STOPPED = ("completed", "failed", "cancelled", "paused", "interrupted")
_DB_HELP = "SQLite file path or SQLAlchemy URL (never created by these commands)"


def statuses() -> tuple[str, ...]:
    from pocoflow.events import RUN_STATUSES

    return (*RUN_STATUSES, "interrupted")


def add_parser(commands: Any) -> None:
    from pocoflow.cli import follow

    runs = commands.add_parser(
        "runs",
        help="list, show, cancel or follow recorded runs",
        description="Recorded runs. 'pocoflow runs DB' is short for 'pocoflow runs ls DB', "
        "'pocoflow runs DB RUN_ID' for 'pocoflow runs show DB RUN_ID'. A word "
        f"after 'runs' that is one of {', '.join(COMMANDS)} is always the "
        "command: to list the runs of a database file named 'ls', write "
        "'pocoflow runs ./ls'.",
    )
    verbs = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")

    ls = verbs.add_parser(
        "ls",
        help="list runs, newest first",
        description="List runs, newest first (nested flows' runs only with --all).",
    )
    ls.add_argument("database", metavar="DB", help=_DB_HELP)
    ls.add_argument(
        "--status",
        choices=statuses(),
        metavar="STATUS",
        help=f"only runs with this status: {', '.join(statuses())}",
    )
    ls.add_argument("--flow", metavar="NAME", help="only runs of this flow name")
    ls.add_argument(
        "--search", metavar="TEXT", help="only runs whose run_id or error message contains TEXT"
    )
    ls.add_argument(
        "--since",
        type=moment,
        metavar="WHEN",
        help="only runs started at or after WHEN: ISO-8601 (UTC if no offset) "
        "or an age like 30m, 2h, 7d",
    )
    ls.add_argument("--until", type=moment, metavar="WHEN", help="only runs started before WHEN")
    ls.add_argument(
        "--limit", type=count(1), default=20, metavar="N", help="at most N runs (default 20)"
    )
    ls.add_argument(
        "--offset", type=count(0), default=0, metavar="N", help="skip the first N runs (paging)"
    )
    ls.add_argument(
        "--all", action="store_true", dest="include_nested", help="include nested flows' runs"
    )
    ls.add_argument("--json", action="store_true", help="one JSON document")
    ls.set_defaults(func=list_runs)

    show = verbs.add_parser("show", help="one run: its row, events, last checkpoint, children")
    show.add_argument("database", metavar="DB", help=_DB_HELP)
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument(
        "--json", action="store_true", help="one JSON document (the store's values in full)"
    )
    show.set_defaults(func=show_run)

    cancel = verbs.add_parser(
        "cancel",
        help="stop a run, from any process",
        description="Stop a run. A running run's process sees the request within a second "
        "and ends it 'cancelled' with its checkpoint once the node running now lets it "
        "(a sync exec finishes first); a queued, paused or "
        "interrupted run is marked cancelled at once; an ended run is left as "
        "it is.",
    )
    cancel.add_argument("database", metavar="DB", help=_DB_HELP)
    cancel.add_argument("run_id", metavar="RUN_ID")
    cancel.add_argument("--json", action="store_true", help="one JSON document")
    cancel.set_defaults(func=cancel_run)

    tail = verbs.add_parser(
        "tail",
        help="follow events as they are recorded",
        description="Print the last events, then follow new ones as they are recorded: "
        "every run's, or one run's (nested flows' runs included) until it "
        "stops. Ctrl-C ends it (exit 0).",
    )
    tail.add_argument("database", metavar="DB", help=_DB_HELP)
    tail.add_argument(
        "run_id", metavar="RUN_ID", nargs="?", help="follow this run only, until it stops"
    )
    tail.add_argument(
        "--interval",
        type=seconds,
        default=1.0,
        metavar="S",
        help="seconds between looks at the database (default 1)",
    )
    tail.add_argument(
        "-n",
        "--lines",
        type=count(0),
        default=10,
        metavar="N",
        help="events to print from before (default 10)",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per event and line")
    tail.set_defaults(func=follow.tail_events)

    from pocoflow.cli.workers import add_gc_parser

    add_gc_parser(verbs, _DB_HELP)


def rewrite_old_forms(argv: list[str]) -> list[str]:
    """``runs DB`` means ``runs ls DB``, ``runs DB RUN_ID`` means ``runs show DB RUN_ID``
    (the forms of PocoFlow 0.3.0.dev0). A first positional that is a command word is
    always the command. Options go before the positionals, so that argparse gives
    ``tail DB --interval 1 RUN_ID`` its optional RUN_ID."""
    if len(argv) < 2 or argv[0] != "runs":
        return argv
    positionals: list[str] = []
    options: list[str] = []
    rest = iter(argv[1:])
    for token in rest:
        if token == "--":
            positionals.extend(rest)
        elif token in ("-h", "--help"):
            return argv
        elif token.startswith("-") and token != "-":
            options.append(token)
            if token in _VALUED:
                options.extend(islice(rest, 1))
        else:
            positionals.append(token)
    if not positionals:
        return argv
    verb, *positionals = positionals
    if verb in COMMANDS:
        if not positionals and Path(verb).is_file():
            raise UsageError(
                f"pocoflow runs: error: {verb!r} is the command 'runs {verb}'; "
                f"to list the runs of the database file named {verb!r}, write "
                f"'pocoflow runs ./{verb}'"
            )
    else:
        near = get_close_matches(verb, COMMANDS, n=1, cutoff=0.6)
        if near and "://" not in verb and not Path(verb).exists():
            raise UsageError(
                f"pocoflow runs: error: unknown command {verb!r} (did you mean "
                f"'{near[0]}'?); the commands are {', '.join(COMMANDS)}"
            )
        positionals.insert(0, verb)
        verb = "ls" if len(positionals) == 1 else "show"
    dashed = ["--"] if any(p.startswith("-") for p in positionals) else []
    return ["runs", verb, *options, *dashed, *positionals]


# ── ls ──────────────────────────────────────────────────────────────────────


def list_runs(args: argparse.Namespace, ctx: Context) -> int:
    db = ctx.open_existing(args.database, command="pocoflow runs ls")
    found = db.list_runs(
        args.limit + 1,
        offset=args.offset,
        status=args.status,
        flow_name=args.flow,
        include_nested=args.include_nested,
        search=args.search,
        since=args.since,
        until=args.until,
    )
    more = len(found) > args.limit
    found = found[: args.limit]
    if args.json:
        emit_json(
            {
                "database": db.url,
                "offset": args.offset,
                "limit": args.limit,
                "more": more,
                "runs": found,
            }
        )
        return OK
    runs_table(found)
    if not found:
        print(
            "pocoflow: no runs match"
            if args.offset == 0
            else f"pocoflow: no runs after the first {args.offset}",
            file=sys.stderr,
        )
    elif more:
        print(f"pocoflow: more runs: --offset {args.offset + args.limit}", file=sys.stderr)
    return OK


def runs_table(found: list[dict[str, Any]]) -> None:
    table(
        ["run_id", "flow", "status", "steps", "started (UTC)", "took", "node", "error"],
        [
            [
                r["run_id"],
                r["flow_name"] or "-",
                r["status"],
                "" if r["total_steps"] is None else r["total_steps"],
                short_time(r["started_at"]),
                duration(r["started_at"], r["completed_at"]),
                r.get("current_node") or "",
                r.get("error_msg") or "",
            ]
            for r in found
        ],
        right=(3,),
    )


# ── show ────────────────────────────────────────────────────────────────────


def show_run(args: argparse.Namespace, ctx: Context) -> int:
    db = ctx.open_existing(args.database, command="pocoflow runs show")
    run = existing_run(db, args.run_id, args.database, ctx)
    events = db.get_events(args.run_id)
    steps = db.checkpoint_steps(args.run_id)
    last = steps[-1] if steps else None
    store = db.get_checkpoint_json(args.run_id, last["step"]) if last else None
    children = db.list_runs(1000, parent_run_id=args.run_id)
    if args.json:
        emit_json(
            {
                "database": db.url,
                "run": run,
                "events": events,
                "checkpoints": steps,
                "checkpoint": None if last is None else {**last, "store": store},
                "children": children,
            }
        )
        return OK
    keys = [*run, "took"]
    size = max(len(k) for k in keys)
    shown = {**run, "took": duration(run["started_at"], run["completed_at"]) or None}
    for key in keys:
        value = "-" if shown[key] is None else shown[key]
        print(f"{key:>{size}}: {clip(value, width() - size - 2)}")
    print(f"\nevents ({len(events)})")
    start = parse_stamp(run["started_at"])
    table(
        ["at", "event", "step", "node", "action", "took", "detail"],
        [event_cells(e, start) for e in events],
        right=(2, 5),
    )
    if last is None or store is None:
        print("\ncheckpoint: none")
    else:
        print(
            f"\ncheckpoint after step {last['step']} ({one_line(last['node_name'])}, "
            f"{last['kind']}, "
            f"{short_time(last['created_at'])}; {len(steps)} in all); values as stored"
        )
        table(
            ["key", "value"],
            [[key, json.dumps(value, ensure_ascii=False)] for key, value in store.items()],
        )
    if children:
        print(f"\nnested runs ({len(children)})")
        runs_table(children)
    return OK


def existing_run(db: WorkflowDB, run_id: str, database: str, ctx: Context) -> dict[str, Any]:
    run = db.get_run(run_id)
    if run is None:
        shown = ctx.target.shown if ctx.target else database
        raise CLIError(
            f"No run {run_id!r} in {shown}; 'pocoflow runs ls {shown}' lists the runs there."
        )
    return run


def event_cells(event: dict[str, Any], start: Any) -> list[Any]:
    """An event as table cells; the first is the time since the run started."""
    at = parse_stamp(event["ts"])
    offset = f"+{(at - start).total_seconds():.3f}s" if at and start else event["ts"]
    took = event["elapsed_ms"]
    return [
        offset,
        event["event"],
        "" if event["step"] is None else event["step"],
        event["node_name"] or "",
        event["action"] or "",
        "" if took is None else span(took / 1000),
        event_detail(event),
    ]


def event_detail(event: dict[str, Any]) -> str:
    """The error, pause reason or retry of an event, in words."""
    try:
        extra = json.loads(event["detail"]) if event.get("detail") else {}
    except ValueError:
        extra = {"detail": event["detail"]}
    if not isinstance(extra, dict):
        extra = {"detail": extra}
    words = []
    if "reason" in extra:
        words.append(f"paused: {extra['reason']}")
    if "attempt" in extra:
        words.append(f"attempt {extra['attempt']} failed, retry in {extra.get('delay_s')} s")
    if event["error_msg"]:
        kind = extra.get("type")
        words.append(f"{kind}: {event['error_msg']}" if kind else event["error_msg"])
    if "unmatched_action" in extra:
        words.append(f"no edge for action {extra['unmatched_action']!r}")
    return one_line("; ".join(words))


# ── cancel ──────────────────────────────────────────────────────────────────


def cancel_run(args: argparse.Namespace, ctx: Context) -> int:
    db = ctx.open_existing(args.database, command="pocoflow runs cancel")
    existing_run(db, args.run_id, args.database, ctx)
    result = db.cancel_run(args.run_id)
    run = db.get_run(args.run_id) or {}
    if args.json:
        emit_json(
            {
                "database": db.url,
                "run_id": args.run_id,
                "result": result,
                "status": run.get("status"),
            }
        )
    elif result == "requested":
        print(
            f"{one_line(args.run_id)}: cancel requested; the process running it sees it within a "
            "second and stops it as soon as the node running now lets it (a sync exec "
            "finishes first), then records it as cancelled"
        )
    elif result == "cancelled":
        print(f"{one_line(args.run_id)}: cancelled (no process was running it)")
    else:
        print(f"{one_line(args.run_id)}: already {result}; nothing to cancel")
    return OK
