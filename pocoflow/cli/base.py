"""What every command shares: exit codes, errors, option values, output."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

# ── exit codes ──────────────────────────────────────────────────────────────

OK = 0
ERROR = 1  # the command was understood but failed: database, run, module, network
USAGE = 2  # the command line itself is wrong: command, option, option value
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), except where Ctrl-C is the way to stop
BROKEN_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE), as Unix tools do


class CLIError(Exception):
    """A failure to report as one line on stderr, with an exit code."""

    code = ERROR


class UsageError(CLIError):
    """The command line is wrong (exit 2); the message names the option and the form."""

    code = USAGE


class Parser(argparse.ArgumentParser):
    """argparse, with one-line errors (no usage block) and no option abbreviations, so
    that ``--stat`` is an error rather than a guess."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # argparse's hook; never returns
        raise UsageError(f"{self.prog}: error: {message} ({self.prog} --help shows the usage)")


# ── option values ───────────────────────────────────────────────────────────

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def moment(text: str) -> datetime:
    """``--since``/``--until``: ISO-8601 (no offset: UTC, as the times shown) or an age
    such as ``30m``, ``2h``, ``7d`` (s, m, h, d, w) meaning that long ago."""
    age = _AGE.match(text)
    try:
        if age:
            seconds = float(age.group(1)) * _UNIT_SECONDS[age.group(2).lower()]
            return datetime.now(timezone.utc) - timedelta(seconds=seconds)
        clean = text.strip()
        if clean[-1:] in ("Z", "z"):
            clean = clean[:-1] + "+00:00"
        value = datetime.fromisoformat(clean)
    except (ValueError, OverflowError, IndexError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give ISO-8601 (2026-11-29, 2026-11-29T10:00:00+02:00; "
            "UTC if no offset) or an age like 30m, 2h, 7d"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def count(minimum: int) -> Any:
    """An argparse type: a whole number from *minimum* to a billion."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            value = None
        if value is None or not minimum <= value <= 1_000_000_000:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number from {minimum} to 1000000000"
            )
        return value

    parse.__name__ = "number"  # what argparse names in its own messages
    return parse


def seconds(text: str) -> float:
    """``--interval``: seconds between polls, 0.05 to 3600."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0.05 to 3600")
    return value


def module_attr(text: str) -> str:
    """``MODULE:FLOW``: a module path, a colon, an attribute path."""
    module, sep, attr = text.partition(":")
    name = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
    if not sep or not re.fullmatch(name, module) or not re.fullmatch(name, attr):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not MODULE:FLOW (e.g. myapp.flows:research, a Flow or a function "
            "returning one)"
        )
    return text


def one_line(text: str) -> str:
    """*text* on one line: whitespace runs become one space, control characters
    (terminal escapes included) are shown escaped."""
    text = " ".join(text.split())
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def note(text: str) -> None:
    """A remark on stderr that is not an error (the command goes on)."""
    print(f"pocoflow: note: {one_line(text)}", file=sys.stderr)


# ── output ──────────────────────────────────────────────────────────────────


def write(text: str) -> None:
    """*text* on stdout, in pieces smaller than its buffer: a larger write that the pipe
    takes only in part (its reader went away) can end without an error in CPython, and
    the rest is lost silently; pieces make the next write report the broken pipe. It is
    flushed at once, so a reader gone away is noticed before anything goes to stderr."""
    for start in range(0, len(text), 4096):
        sys.stdout.write(text[start : start + 4096])
    sys.stdout.flush()


def emit_json(document: Any) -> None:
    """One JSON document on stdout."""
    write(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")


def emit_json_line(document: Any) -> None:
    write(json.dumps(document, ensure_ascii=False, default=str) + "\n")


def width() -> int:
    """The terminal's width (120 when stdout is not a terminal)."""
    return max(40, shutil.get_terminal_size((120, 24)).columns)


def clip(text: Any, size: int) -> str:
    """*text* on one line, at most *size* characters (``...`` marks a cut)."""
    line = "" if text is None else one_line(str(text))
    size = max(size, 4)
    return line if len(line) <= size else line[: size - 3] + "..."


def table(headers: list[str], rows: list[list[Any]], *, right: tuple[int, ...] = ()) -> None:
    """Print aligned columns; the last one is cut to the terminal's width."""
    cells = [[clip(c, 200) for c in row] for row in rows]
    sizes = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    used = sum(sizes[:-1]) + 2 * (len(sizes) - 1)
    last = max(20, width() - used)
    for row in [headers, *cells]:
        out = [
            (c.rjust(s) if i in right else c.ljust(s))
            for i, (c, s) in enumerate(zip(row[:-1], sizes, strict=False))
        ]
        print("  ".join([*out, clip(row[-1], last)]).rstrip())
    sys.stdout.flush()  # a reader gone away is noticed before a note goes to stderr


def short_time(stamp: str | None) -> str:
    """A stored UTC timestamp as ``2026-11-29 10:00:05`` (the seconds' fraction cut)."""
    if not stamp:
        return ""
    return stamp.replace("T", " ")[:19]


def parse_stamp(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        value = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def duration(start: str | None, end: str | None) -> str:
    """How long from *start* to *end* (stored stamps): ``850 ms``, ``12.3 s``, ``4m05s``."""
    a, b = parse_stamp(start), parse_stamp(end)
    if a is None or b is None:
        return ""
    return span((b - a).total_seconds())


def span(total: float) -> str:
    if total < 0.01:
        return f"{total * 1000:.1f} ms"
    if total < 1:
        return f"{total * 1000:.0f} ms"
    if total < 60:
        return f"{total:.1f} s"
    minutes, secs = divmod(int(total), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
