"""The database argument (DB): a SQLite file path or a SQLAlchemy URL.

Commands that only read open it with :meth:`Context.open_existing`, which never
creates a file, a folder or a database: it looks at the file (or asks the server)
first, and only then opens it through :class:`pocoflow.WorkflowDB`. Errors from the
database driver are turned into one line that names the database and the fix.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from pocoflow.cli.base import CLIError, UsageError, note, one_line

if TYPE_CHECKING:
    from pocoflow.db import WorkflowDB

#: Schemes of database URLs, to tell a mistyped URL from a file name.
_DB_SCHEMES = (
    "sqlite",
    "postgresql",
    "postgres",
    "mysql",
    "mariadb",
    "oracle",
    "mssql",
    "cockroachdb",
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(/*)")
_SQLITE_URL = re.compile(r"^sqlite(\+\w+)?:///?(?P<path>[^?]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """The DB argument as given, and what can be told of it without opening it."""

    text: str
    shown: str  # for messages: the password hidden
    secrets: tuple[str, ...] = ()  # spellings of the password, never to be printed
    file: Path | None = None  # the SQLite file (None: a server, or in memory)
    memory: bool = False

    @property
    def is_url(self) -> bool:
        return "://" in self.text


def _userinfo(text: str) -> tuple[str, str, str | None, str] | None:
    """Split ``scheme://user:password@rest`` at the last ``@`` before the query:
    (head, user, password or None, rest), or None when there is no user part."""
    match = _SCHEME.match(text)
    if match is None:
        return None
    head, rest = text[: match.end()], text[match.end() :]
    before_query = rest.split("?", 1)[0]
    if "@" not in before_query:
        return None
    at = before_query.rindex("@")
    user, sep, password = rest[:at].partition(":")
    return head, user, password if sep else None, rest[at + 1 :]


def hide_password(text: str) -> str:
    """*text* with every secret of a URL in it (the password, a ``?password=``)
    replaced by ``***``."""
    from pocoflow.persistence.connect import redact

    return redact(text)


def secrets_of(text: str) -> tuple[str, ...]:
    """Every spelling of a secret in *text* a message could repeat (see
    :func:`pocoflow.persistence.connect.secret_values`)."""
    from pocoflow.persistence.connect import secret_values

    return secret_values(text)


def parse_target(text: str) -> Target:
    """What the DB argument is, without touching the file system or the network."""
    shown, secrets = hide_password(text), secrets_of(text)
    match = _SCHEME.match(text)
    if "://" not in text and match and match.group(1).split("+")[0].lower() in _DB_SCHEMES:
        scheme = match.group(1)
        example = (
            "sqlite:///relative/path.db or sqlite:////abs/path.db"
            if scheme.split("+")[0].lower() == "sqlite"
            else f"{scheme}://user:password@host:5432/dbname"
        )
        raise CLIError(
            f"{shown!r} is not a database URL: a URL needs '://' after {scheme!r} (e.g. "
            f"{example}); a SQLite file can also be given as a plain path."
        )
    if not text.strip():
        raise UsageError(
            "pocoflow: error: the database argument is empty (an unset variable?): give a "
            "SQLite file path or a database URL, e.g. pocoflow.db."
        )
    if "://" not in text:
        if text == ":memory:":
            return Target(text, shown, secrets, memory=True)
        return Target(text, shown, secrets, file=Path(text).expanduser())
    sqlite = _SQLITE_URL.match(text)
    if sqlite:
        path = unquote(sqlite.group("path"))
        if path in ("", ":memory:"):
            return Target(text, shown, secrets, memory=True)
        return Target(text, shown, secrets, file=Path(path).expanduser())
    parts = _userinfo(text)
    rest = parts[3] if parts else text[_SCHEME.match(text).end() :]  # type: ignore[union-attr]
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if parts and ("@" in parts[1] or "@" in (parts[2] or "")):
        raise CLIError(
            f"Database URL {shown!r}: its user name or password has an '@'; "
            "write it as %40 (percent-encode @ : / ? # in them)."
        )
    if not host.startswith("[") and ":" in host:
        port = host.rpartition(":")[2]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise CLIError(
                f"Database URL {shown!r}: the port {port!r} is not a number from 1 to 65535."
            )
    return Target(text, shown, secrets)


def check_file(target: Target, *, must_exist: bool, command: str) -> None:
    """Refuse what cannot be a database file before SQLite sees it (SQLite would create
    a missing file, and waits forever on a FIFO)."""
    if target.memory:
        raise CLIError(
            f"{target.shown!r} is an in-memory database, empty in every new "
            "process; give a SQLite file path or a PostgreSQL URL."
        )
    path = target.file
    if path is None:
        return
    if path.is_dir():
        raise CLIError(
            f"{target.shown} is a directory, not a database file; give the path "
            f"of a PocoFlow database file (e.g. {path / 'pocoflow.db'})."
        )
    if not path.exists():
        if must_exist:
            raise CLIError(
                f"No database at {target.shown}: no such file. Check the path; "
                f"'pocoflow db upgrade {target.shown}' creates a new database "
                f"({command} never creates one)."
            )
        return
    if not path.is_file():
        raise CLIError(
            f"{target.shown} is not a regular file (a device, socket or pipe), "
            "so it cannot be a database; give the path of a PocoFlow database "
            "file."
        )
    if must_exist and path.stat().st_size == 0:
        raise CLIError(
            f"{target.shown} is an empty file, not a PocoFlow database. Check "
            f"the path; 'pocoflow db upgrade {target.shown}' makes it one."
        )


# ── errors as one line ──────────────────────────────────────────────────────


def explain(exc: BaseException, target: Target | None) -> str:
    """The one-line message for an exception a command let through."""
    if isinstance(exc, CLIError):
        return str(exc)
    driver = _driver_error(exc)
    if driver is not None:
        return _explain_driver(driver, target)
    from pocoflow.errors import PocoFlowError

    if isinstance(exc, PocoFlowError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}."
    if isinstance(exc, (ValueError, TypeError, LookupError, ImportError)):
        return str(exc)
    return (
        f"unexpected {type(exc).__name__}: {exc}. This is a bug in PocoFlow: rerun "
        "with POCOFLOW_DEBUG=1 to see the traceback, and report it."
    )


def _driver_error(exc: BaseException) -> BaseException | None:
    """The database driver's own error inside a SQLAlchemy DBAPIError, or behind the
    library's DatabaseFileError (the CLI says what to do in its own words)."""
    from pocoflow.errors import DatabaseFileError

    module = sys.modules.get("sqlalchemy.exc")
    found = exc.__cause__ if isinstance(exc, DatabaseFileError) else exc
    if module is not None and isinstance(found, module.DBAPIError):
        return found.orig or found
    if found is not exc and found is not None and type(found).__module__.startswith("sqlite3"):
        return found
    return None


def _explain_driver(error: BaseException, target: Target | None) -> str:
    said = one_line(str(error)).rstrip(" .") or type(error).__name__
    shown = target.shown if target is not None else "the database"
    if type(error).__module__.startswith("sqlite3"):
        lower = said.lower()
        if "file is not a database" in lower:
            return (
                f"{shown} is not a SQLite database (SQLite: {said}); give the path of "
                "a PocoFlow database file, or a database URL."
            )
        if "malformed" in lower or "corrupt" in lower:
            return (
                f"{shown} is a damaged SQLite database (SQLite: {said}); restore it from "
                f"a backup ('sqlite3 {shown} .recover' may save what is left)."
            )
        if "unable to open" in lower:
            return (
                f"Cannot open {shown} (SQLite: {said}); check that it is a file you may "
                "read and write, in a folder you may write to."
            )
        if "readonly" in lower or "read-only" in lower:
            return (
                f"{shown} is read-only (SQLite: {said}); PocoFlow writes to its "
                "database: check the permissions of the file and its folder."
            )
        if "locked" in lower or "busy" in lower:
            return (
                f"{shown} is locked by another process (SQLite: {said}); try again when it is done."
            )
        return f"{shown}: SQLite error: {said}"
    if "does not exist" in said and "database" in said:
        return (
            f"Cannot use {shown}: {_sentence(said)} Create it (e.g. createdb), then run "
            f"'pocoflow db upgrade {shown}'."
        )
    if any(
        word in said.lower()
        for word in ("connection", "connect", "timeout", "resolve", "authentication", "refused")
    ):
        return (
            f"Cannot connect to {shown}: {_sentence(said)} Check that the server is "
            "running and the URL's host, port, user, password and database name."
        )
    return f"{shown}: database error: {said}"


def _sentence(text: str) -> str:
    return text if text.endswith(("?", "!", ".")) else text + "."


# ── the run of one command ──────────────────────────────────────────────────


@dataclass
class Context:
    """One invocation: where output goes, which databases it opened, what to hide."""

    standalone: bool = False  # the process is the pocoflow command (close on exit)
    secrets: tuple[str, ...] = ()
    target: Target | None = None  # the database being worked on, for messages
    opened: list[WorkflowDB] = field(default_factory=list)

    def target_of(self, text: str) -> Target:
        self.target = parse_target(text)
        return self.target

    def open_existing(self, text: str, *, command: str) -> WorkflowDB:
        """Open a PocoFlow database that exists, never creating one. An older PocoFlow
        schema (0.2's too) is upgraded, as every PocoFlow does on open, and said so."""
        from pocoflow.db import WorkflowDB, schema_revision

        target = self.target_of(text)
        check_file(target, must_exist=True, command=command)
        status = schema_revision(text)  # reads only; connects to a server
        if status["exists"] is None:  # it went away meanwhile
            check_file(target, must_exist=True, command=command)
        if status["before"] is None:
            raise CLIError(
                f"{target.shown} has no PocoFlow tables (another application's database, "
                f"or an empty one). Check the path; 'pocoflow db upgrade {target.shown}' "
                "adds PocoFlow's tables to it."
            )
        db = WorkflowDB(text)
        self.opened.append(db)
        if status["before"] != status["head"]:
            note(
                f"{target.shown} was at schema revision {status['before']}; it was upgraded "
                f"to {status['head']} to be read."
            )
        return db

    def close(self) -> None:
        """Close what this invocation opened, when the process is the pocoflow command
        (so a SQLite file keeps no -wal/-shm files behind). Called in-process, the
        databases stay open: the caller's own handles on them may be in use."""
        opened, self.opened = self.opened, []
        if not self.standalone:
            return
        from pocoflow.persistence.database import Database  # no public close() yet

        for db in opened:
            Database.forget(db.records.url)

    def scrub(self, text: str) -> str:
        """*text* with each password hidden wherever it stands as a word of its own."""
        for secret in self.secrets:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "***", text)
        return text
