"""``pocoflow resume`` and ``pocoflow monitor``: commands that load a user's flow."""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any

from pocoflow.cli.base import OK, CLIError, emit_json, module_attr, note, one_line
from pocoflow.cli.databases import Context

if TYPE_CHECKING:
    from pocoflow.flow import Flow


def key_json(text: str) -> tuple[str, Any]:
    """``--set KEY=JSON``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=JSON (e.g. --set answer='\"yes\"' or --set count=3)"
        )
    try:
        return key, json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{key}: {value!r} is not JSON ({exc}); a string needs quotes: "
            f"--set {key}='\"{value}\"'"
        ) from None


def port(text: str) -> int:
    """``--port``: 1 to 65535."""
    if not text.strip().isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 1 to 65535")
    return int(text)


def add_parsers(commands: Any) -> None:
    resume = commands.add_parser(
        "resume",
        help="continue a stopped run from its last checkpoint",
        description="Continue a failed, cancelled, paused or interrupted run from its last "
        "checkpoint, under the same run_id.",
    )
    resume.add_argument(
        "flow",
        metavar="MODULE:FLOW",
        type=module_attr,
        help="the flow: a Flow, or a function returning one, importable from "
        "the current directory (e.g. myapp.flows:research)",
    )
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument(
        "--db",
        metavar="DB",
        help="the run's database, if the flow does not name it (never created)",
    )
    resume.add_argument(
        "--set",
        action="append",
        default=[],
        type=key_json,
        metavar="KEY=JSON",
        dest="updates",
        help="write KEY (a JSON value) to the store first; repeatable",
    )
    resume.add_argument("--json", action="store_true", help="one JSON document")
    resume.set_defaults(func=resume_run)

    monitor = commands.add_parser(
        "monitor",
        help="the Streamlit monitor of a database",
        description="Start the Streamlit monitor on DB. It listens on 127.0.0.1 (this "
        "machine only) unless --host says otherwise. Needs pocoflow[ui].",
    )
    monitor.add_argument(
        "database", metavar="DB", help="SQLite file path or SQLAlchemy URL (never created)"
    )
    monitor.add_argument(
        "--port", type=port, default=8501, metavar="N", help="port to listen on (default 8501)"
    )
    monitor.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="H",
        help="address to listen on (default 127.0.0.1; 0.0.0.0: every interface)",
    )
    monitor.add_argument(
        "--flow",
        type=module_attr,
        metavar="MODULE:FLOW",
        help="the flow, to draw its graph and resume its runs",
    )
    monitor.set_defaults(func=run_monitor)


# ── loading a flow ──────────────────────────────────────────────────────────


def load_flow(spec: str) -> Flow:
    """The Flow that ``MODULE:ATTR`` names (an attribute, or a function returning one),
    imported with the current directory on ``sys.path``."""
    from pocoflow.flow import Flow

    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise CLIError(
                f"Cannot import module {module_name!r} ({exc}); run pocoflow from the "
                "folder that holds it, or add that folder to PYTHONPATH."
            ) from None
        raise CLIError(
            f"Importing module {module_name!r} failed: it needs {missing!r}, "
            f"which is not installed ({exc})."
        ) from None
    except BaseException as exc:  # the module's own code failed (SystemExit included)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise CLIError(f"Importing module {module_name!r} failed: {_what(exc)}.") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise CLIError(
                f"Module {module_name!r} has no attribute {attr!r}; MODULE:FLOW "
                "names a Flow, or a function returning one, in that module."
            )
        target = getattr(target, part)
    if isinstance(target, Flow):
        return target
    if not callable(target):
        raise CLIError(
            f"{spec} is not a Flow (it is {_kind(target)}), nor a function "
            "returning one; point MODULE:FLOW at one of those."
        )
    try:
        flow = target()
    except Exception as exc:
        raise CLIError(f"Calling {spec}() to build the flow failed: {_what(exc)}.") from None
    if not isinstance(flow, Flow):
        raise CLIError(
            f"{spec} is not a Flow, nor a function returning one: {spec}() returned {_kind(flow)}."
        )
    return flow


def _kind(value: Any) -> str:
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _what(exc: BaseException) -> str:
    """``Type: message (file, line N)``, where the user's code raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    here = next((f for f in reversed(frames) if "importlib" not in f.filename), None)
    where = f" ({here.filename}, line {here.lineno})" if here else ""
    return f"{type(exc).__name__}: {exc}{where}"


# ── resume ──────────────────────────────────────────────────────────────────


#: errors that mean the run could not be resumed at all (anything else: it ran and failed)
def _refusals() -> tuple[type[BaseException], ...]:
    from pocoflow.errors import FlowConfigError, ResumeError, RunNotFoundError

    return (ResumeError, RunNotFoundError, FlowConfigError)


def resume_run(args: argparse.Namespace, ctx: Context) -> int:
    db = ctx.open_existing(args.db, command="pocoflow resume") if args.db else None
    flow = load_flow(args.flow)
    if db is not None:
        flow.db = db
    if flow.db is None:
        raise CLIError(
            f"{args.flow} has no database, so it has no runs to resume; give "
            "the database the run was recorded in with --db DB."
        )
    records = flow.db.records
    if records.get_run(args.run_id) is None:
        raise CLIError(
            f"No run {args.run_id!r} in {flow.db.url}; 'pocoflow runs ls "
            f"{ctx.target.shown if ctx.target else flow.db.url}' lists the runs "
            "there."
        )
    updates = dict(args.updates)
    try:
        store = flow.resume(args.run_id, updates=updates or None)
    except _refusals():
        raise
    except Exception as exc:
        raise CLIError(
            f"Run {args.run_id!r} was resumed and failed again: "
            f"{type(exc).__name__}: {exc}. Fix the cause and resume it again."
        ) from None
    run = records.get_run(args.run_id) or {}
    status = run.get("status", "?")
    if args.json:
        emit_json({"run_id": args.run_id, "status": status, "store_keys": sorted(store.keys())})
    else:
        print(f"{one_line(args.run_id)}: {status}; store keys: {one_line(str(sorted(store)))}")
    return OK


# ── monitor ─────────────────────────────────────────────────────────────────

_INSTALL = "pip install 'pocoflow[ui]'"


def monitor_server() -> Any:
    """``pocoflow.ui.server.serve`` (or ``serve_monitor``), or a one-line error naming
    what to install."""
    try:
        server = importlib.import_module("pocoflow.ui.server")
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing.split(".")[0] == "streamlit":
            raise CLIError(
                f"The monitor needs Streamlit, which is not installed: {_INSTALL}."
            ) from None
        if missing in ("pocoflow.ui", "pocoflow.ui.server"):
            raise CLIError(
                "This PocoFlow installation has no monitor (pocoflow.ui.server is "
                f"missing): {_INSTALL}."
            ) from None
        raise CLIError(
            f"The monitor needs {missing!r}, which is not installed: {_INSTALL}."
        ) from None
    # serve(db, *, port, host, flow); the monitor's branch names it serve_monitor
    serve = getattr(server, "serve", None) or getattr(server, "serve_monitor", None)
    if not callable(serve):
        raise CLIError(
            "pocoflow.ui.server has no serve() function; reinstall the monitor: "
            "pip install -U 'pocoflow[ui]'."
        )
    return serve


def run_monitor(args: argparse.Namespace, ctx: Context) -> int:
    serve = monitor_server()
    ctx.open_existing(args.database, command="pocoflow monitor")
    ctx.close()
    if args.flow is not None:
        load_flow(args.flow)  # fail here, in one line, rather than in the browser
    if not _is_loopback(args.host):
        note(
            f"the monitor listens on {args.host}:{args.port}, where other machines can "
            "reach it; it shows every run's data and can cancel and resume runs."
        )
    try:
        code = serve(args.database, port=args.port, host=args.host, flow=args.flow)
    except KeyboardInterrupt:  # Ctrl-C is how the monitor stops
        return OK
    except OSError as exc:
        if exc.errno == 98:  # EADDRINUSE
            raise CLIError(
                f"Port {args.port} on {args.host} is in use; pick another with --port N."
            ) from None
        raise
    return code if isinstance(code, int) else OK


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
