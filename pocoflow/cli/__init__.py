"""The ``pocoflow`` command. It works through the public API (WorkflowDB, Flow, Worker),
with two exceptions: it reads through ``db.records``, the synchronous implementation
behind both facades, and closes the files it opened with ``Database.forget`` at exit.

    pocoflow runs ls DB [--status S] [--flow NAME] [--search TEXT] [--since WHEN]
                        [--until WHEN] [--limit N] [--offset N] [--all] [--json]
    pocoflow runs show DB RUN_ID [--json]
    pocoflow runs cancel DB RUN_ID [--json]
    pocoflow runs tail DB [RUN_ID] [--interval S] [-n N] [--json]
    pocoflow runs gc DB --older-than WHEN [--status S] [--batch N] [--json]
    pocoflow runs DB            (= runs ls DB)
    pocoflow runs DB RUN_ID     (= runs show DB RUN_ID)
    pocoflow db upgrade DB [--json]
    pocoflow db current DB [--json]
    pocoflow resume MODULE:FLOW RUN_ID [--db DB] [--set KEY=JSON ...] [--json]
    pocoflow monitor DB [--port N] [--host H] [--flow MODULE:FLOW]
    pocoflow worker MODULE:FLOW [--db DB] [--queue NAME] [--concurrency N]
                    [--queue-concurrency N] [--rate N/PERIOD] [--max-attempts N] [--grace S]
    pocoflow --version

DB is a SQLite file path or a SQLAlchemy URL. Only ``db upgrade`` creates a
database; every other command refuses a missing one. Errors are one line on
stderr; exit codes are listed in ``EXIT_CODES``. ``python -m pocoflow`` is the
same command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Sequence

from pocoflow.cli import base, databases, flows, runs, schema, workers
from pocoflow.cli.base import CLIError, Parser, UsageError
from pocoflow.cli.databases import Context

EXIT_CODES = """\
exit codes:
  0    done (for 'runs tail' and 'monitor', Ctrl-C is a normal end)
  1    error: the database, run, module or server named in the message
  2    usage: unknown command or option, missing argument, bad option value
  130  interrupted by Ctrl-C
  141  stdout was closed early (e.g. '| head -1'); nothing is printed
set POCOFLOW_DEBUG=1 to see the traceback behind an error."""

DESCRIPTION = """\
PocoFlow command line. DB is a SQLite file path or a SQLAlchemy URL
(sqlite:///file.db, postgresql+psycopg://user:password@host/dbname); only
'db upgrade' creates a database. Tables are for people, --json for scripts."""

__all__ = ["EXIT_CODES", "main"]


def build_parser() -> Parser:
    from pocoflow import __version__

    parser = Parser(
        prog="pocoflow", description=DESCRIPTION, epilog=EXIT_CODES, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"pocoflow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runs.add_parser(commands)
    schema.add_parser(commands)
    flows.add_parsers(commands)
    workers.add_worker_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pocoflow`` command on *argv* (default: the process's arguments) and
    return its exit code. Called as the program (no *argv*), it also closes the
    databases it opened before returning."""
    standalone = argv is None
    words = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    ctx = Context(
        standalone=standalone, secrets=tuple(s for w in words for s in databases.secrets_of(w))
    )
    if standalone:
        _tolerate_odd_text()
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:  # started with that file descriptor closed
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - for the process
    try:
        try:
            args = build_parser().parse_args(runs.rewrite_old_forms(words))
            code = args.func(args, ctx)
        finally:
            _close(ctx)
        sys.stdout.flush()
        return code
    except SystemExit as done:  # --help, --version
        sys.stdout.flush()
        return done.code if isinstance(done.code, int) else base.OK
    except BrokenPipeError:
        _silence_stdout()
        return base.BROKEN_PIPE
    except KeyboardInterrupt:
        _say(ctx, "pocoflow: interrupted")
        return base.INTERRUPTED
    except UsageError as exc:
        _say(ctx, str(exc))
        return exc.code
    except Exception as exc:
        if os.environ.get("POCOFLOW_DEBUG"):
            traceback.print_exc()
        code = exc.code if isinstance(exc, CLIError) else base.ERROR
        _say(ctx, f"pocoflow: error: {databases.explain(exc, ctx.target)}")
        return code


def _close(ctx: Context) -> None:
    try:
        ctx.close()
    except BaseException:  # a second Ctrl-C, or a server gone: nothing more to do
        if os.environ.get("POCOFLOW_DEBUG"):
            traceback.print_exc()


def _say(ctx: Context, message: str) -> None:
    """One line on stderr, the password never in it."""
    try:
        print(ctx.scrub(base.one_line(message)), file=sys.stderr)
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr is closed too
        pass


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so Python's final flush of what is left in its buffer
    does not fail again at exit (and print a traceback)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (in-process use)
        pass


def _tolerate_odd_text() -> None:
    """Text a database holds that the terminal cannot encode is escaped, not fatal."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and the exit codes' line breaks."""
