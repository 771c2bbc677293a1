"""PostgreSQL timeouts: a server that never answers fails a call in bounded time.

Three limits, each overridable in the URL:

- ``connect_timeout`` (default 10 s): psycopg enforces it around the whole
  connection attempt, so it also covers a server that accepts TCP and never
  speaks. ``?connect_timeout=30`` in the URL (or ``PGCONNECT_TIMEOUT``) wins.
- ``statement_timeout`` (default 30 s): the server cancels a statement that
  runs longer (a lock wait, a slow query). Set through libpq's ``options``
  (``?options=-c%20statement_timeout%3D60000``, or ``PGOPTIONS``); ``0`` turns
  it off, and with it the next limit.
- a client-side deadline of statement_timeout plus as much again (at most
  5 s more): a server (or proxy) that goes silent mid-call never sends the
  cancellation, and TCP keepalives or ``tcp_user_timeout`` do not help while
  its kernel still acknowledges our packets. psycopg 3 has no per-call
  deadline before 3.3.6, so each wait of a connection is registered with a
  watchdog thread, which shuts the connection's socket down when the deadline
  passes: the blocked call then fails at once and the connection is dropped.

Errors name the server (``host:port/database``, never the password) and the
setting that ran out: :class:`pocoflow.errors.DatabaseTimeoutError`.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import threading
import time
from typing import Any

from sqlalchemy.engine import URL

from pocoflow.errors import DatabaseTimeoutError, PersistenceError

CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_MS = 30_000
#: The client-side deadline waits this much longer than statement_timeout, at most.
GRACE_S = 5.0
#: How often the watchdog looks for waits past their deadline.
WATCH_EVERY_S = 0.25

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60_000.0, "h": 3_600_000.0, "d": 86_400_000.0}
_SETTING = re.compile(
    r"statement_timeout\s*=\s*'?\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?", re.IGNORECASE
)


def server_of(url: URL) -> str:
    """``host:port/database`` of a PostgreSQL URL, for messages (no user, no password)."""
    host = url.host or url.query.get("host") or "localhost"
    if isinstance(host, tuple):
        host = ",".join(host)
    return f"{host}:{url.port or 5432}/{url.database or ''}"


def _options(url: URL) -> str:
    given = url.query.get("options")
    if isinstance(given, tuple):
        given = " ".join(given)
    return given if given is not None else os.environ.get("PGOPTIONS", "")


def statement_timeout_ms(url: URL) -> float:
    """The statement_timeout a connection to *url* runs with (0: none)."""
    found = _SETTING.search(_options(url))
    if found is None:
        return STATEMENT_TIMEOUT_MS
    return float(found.group(1)) * _UNITS[(found.group(2) or "ms").lower()]


def connect_timeout_s(url: URL) -> float:
    """The connect_timeout psycopg applies (libpq's rule: at least 2 s)."""
    given = url.query.get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT")
    try:
        seconds = int(float(given)) if given is not None else CONNECT_TIMEOUT_S  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return CONNECT_TIMEOUT_S
    return max(seconds, 2) if seconds > 0 else seconds


def client_deadline_s(url: URL) -> float | None:
    """How long one wait for the server may last before the client gives up on it."""
    statement = statement_timeout_ms(url) / 1000
    return statement + min(statement, GRACE_S) if statement > 0 else None


def connect_args(url: URL) -> dict[str, Any]:
    """The defaults the URL does not set: connect_timeout, and statement_timeout added
    to libpq's ``options`` (keeping whatever options the URL or PGOPTIONS give)."""
    args: dict[str, Any] = {}
    if "connect_timeout" not in url.query and not os.environ.get("PGCONNECT_TIMEOUT"):
        args["connect_timeout"] = CONNECT_TIMEOUT_S
    options = _options(url)
    if _SETTING.search(options) is None:
        args["options"] = f"{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip()
    return args


# ── the client-side deadline ────────────────────────────────────────────────


class _Watchdog:
    """Shuts down the socket under a wait that outlived its deadline (one thread per
    process, started with the first PostgreSQL engine; it wakes 4 times a second)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, int, int]] = {}  # ticket -> (deadline, fd, inode)
        self._fired: set[int] = set()
        self._tickets = itertools.count()
        self._pid = -1

    def arm(self, fd: int, seconds: float) -> int:
        ticket = next(self._tickets)
        entry = (time.monotonic() + seconds, fd, os.fstat(fd).st_ino)
        with self._lock:
            self._armed[ticket] = entry
            if self._pid != os.getpid():  # first use, or a forked child
                self._pid = os.getpid()
                threading.Thread(
                    target=self._watch, daemon=True, name="pocoflow-pg-deadlines"
                ).start()
        return ticket

    def disarm(self, ticket: int) -> bool:
        """Forget *ticket*; True if its deadline had passed (its socket is shut)."""
        with self._lock:
            self._armed.pop(ticket, None)
            if ticket in self._fired:
                self._fired.discard(ticket)
                return True
        return False

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_EVERY_S)
            now = time.monotonic()
            with self._lock:
                for ticket, (deadline, fd, inode) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[ticket]
                        self._fired.add(ticket)
                        _shut(fd, inode)


def _shut(fd: int, inode: int) -> None:
    """Shut down the socket *fd* if it is still the one armed (same inode)."""
    try:
        if os.fstat(fd).st_ino != inode:
            return
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


_watchdog = _Watchdog()
_connection_class: Any = None


def connection_class() -> Any:
    """psycopg's Connection, each of whose waits for the server has a deadline."""
    global _connection_class
    if _connection_class is None:
        import psycopg

        class ServerSilent(psycopg.OperationalError):
            """The server did not answer within the client-side deadline."""

        class TimedConnection(psycopg.Connection):  # type: ignore[type-arg]
            pf_deadline: float | None = None
            pf_server = ""

            def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
                seconds = self.pf_deadline
                if not seconds:
                    return super().wait(gen, *args, **kwargs)
                try:
                    ticket = _watchdog.arm(self.pgconn.socket, seconds)
                except Exception:  # no socket: let psycopg say why
                    return super().wait(gen, *args, **kwargs)
                try:
                    return super().wait(gen, *args, **kwargs)
                except BaseException:
                    if _watchdog.disarm(ticket):
                        raise ServerSilent(
                            f"no answer within {seconds:g} s (statement_timeout plus "
                            f"{min(seconds / 2, GRACE_S):g} s): the connection was "
                            "closed"
                        ) from None
                    raise
                finally:
                    _watchdog.disarm(ticket)

        TimedConnection.ServerSilent = ServerSilent  # type: ignore[attr-defined]
        _connection_class = TimedConnection
    return _connection_class


def timed_connect(url: URL) -> Any:
    """A ``do_connect`` listener: psycopg connections with the client-side deadline."""
    deadline = client_deadline_s(url)
    server = server_of(url)

    def connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        conn = connection_class().connect(*cargs, **cparams)
        conn.pf_deadline = deadline
        conn.pf_server = server
        return conn

    return connect


def without_deadline(dbapi_connection: Any) -> Any:
    """Lift the client-side deadline of one connection (a migration may run long);
    returns what to hand back to :func:`restore_deadline`."""
    before = getattr(dbapi_connection, "pf_deadline", None)
    if before is not None:
        dbapi_connection.pf_deadline = None
    return before


def restore_deadline(dbapi_connection: Any, before: Any) -> None:
    if before is not None:
        dbapi_connection.pf_deadline = before


# ── naming what ran out ─────────────────────────────────────────────────────


def explain(error: BaseException, url: URL) -> BaseException | None:
    """A PocoFlow error naming the server and what to check for a psycopg error (raw or
    wrapped by SQLAlchemy) PocoFlow knows: a timeout, a lost or refused connection, a
    read-only database, a missing privilege, a full disk; None for any other error."""
    cause = getattr(error, "orig", None) or error
    kind = type(cause).__name__
    server = server_of(url)
    if kind == "ServerSilent":
        return DatabaseTimeoutError(
            f"PostgreSQL server {server} stopped answering: {cause}. Check that the server "
            "and the network to it are up; a statement that needs longer gets a larger "
            "statement_timeout in the URL (?options=-c%20statement_timeout%3D120000, in ms)."
        )
    if kind == "ConnectionTimeout":
        limit = connect_timeout_s(url)
        return DatabaseTimeoutError(
            f"Could not connect to PostgreSQL server {server} within "
            f"{f'{limit:g} s' if limit > 0 else 'the driver default'} (connect_timeout): it "
            "did not answer. Check the "
            "host, the port and that the server is up; a slower server gets a larger "
            "?connect_timeout= (seconds) in the URL."
        )
    if kind in ("OperationalError", "ProgrammingError", "AdminShutdown"):
        return _lost(str(cause), url) or _refused(str(cause), url)
    refused = _SERVER_REFUSES.get(kind)
    if refused is not None:
        said = " ".join(str(cause).strip().splitlines()[0].split())
        return PersistenceError(f"PostgreSQL server {server} refused: {said}. {refused}")
    if kind == "QueryCanceled" and "statement timeout" in str(cause):
        return DatabaseTimeoutError(
            f"PostgreSQL server {server} cancelled a statement after statement_timeout "
            f"({statement_timeout_ms(url) / 1000:g} s): {str(cause).strip()}. A lock held "
            "elsewhere or a slow server; a larger statement_timeout goes in the URL "
            "(?options=-c%20statement_timeout%3D120000, in ms; 0 turns it off)."
        )
    return None


#: psycopg errors of a server that works but will not write for us, and what to check
_SERVER_REFUSES = {
    "ReadOnlySqlTransaction": (
        "The database is read-only (a hot standby after a failover, or "
        "default_transaction_read_only): point the URL at the primary, or turn "
        "read-only mode off."
    ),
    "InsufficientPrivilege": (
        "The URL's user lacks a privilege PocoFlow needs: GRANT it what it needs on the "
        "pf_ tables (or CREATE on the schema, to make them), or use the tables' owner."
    ),
    "DiskFull": (
        "The server's disk is full: free space on it (what was committed is kept; a run "
        "stopped by this resumes from its last checkpoint)."
    ),
}


def _refused(message: str, url: URL) -> BaseException | None:
    """A clear error for a connection the server (or libpq) refused, by what libpq
    said; None for an error that is not about connecting."""
    from pocoflow.errors import DatabaseConnectionError

    server = server_of(url)
    option = re.search(r'invalid connection option "([^"]+)"', message)
    if option:
        return ValueError(
            f"Database URL for PostgreSQL server {server}: {option.group(1)!r} is not a "
            "connection option libpq knows (such as connect_timeout, sslmode, options, "
            "application_name). Remove it from the URL's query, or check its spelling."
        )
    if not message.startswith(("connection failed", "connection is bad")):
        return None
    said = message.strip().splitlines()[0].split("failed: ")[-1].removeprefix("FATAL:").strip()
    missing = re.search(r'database "([^"]+)" does not exist', message)
    if missing:
        fix = (f"Create it (createdb {missing.group(1)}, or CREATE DATABASE), then open it "
               "again: PocoFlow makes its tables (from a shell: pocoflow db upgrade URL). Or "
               "fix the database name at the end of the URL.")
    elif "authentication failed" in message or re.search(r'role "[^"]+" does not', message):
        fix = ("Check the user name and password in the URL (or PGPASSWORD, ~/.pgpass) and "
               "that pg_hba.conf lets this user in from here.")
    elif "Connection refused" in message or "No such file" in message:
        fix = ("Check that the server is up and listens on that host and port "
               "(pg_isready -h HOST -p PORT), and the URL's host and port.")
    else:
        fix = "Check the URL's host, port, user and database, and that the server is up."
    return DatabaseConnectionError(
        f"Could not connect to PostgreSQL server {server}: {said}. {fix}"
    )


#: What libpq and psycopg say when a connection that worked is gone.
_LOST = ("server closed the connection unexpectedly", "consuming input failed",
         "terminating connection due to administrator command", "the connection is lost",
         "connection already closed", "SSL SYSCALL error: EOF detected")


def _lost(message: str, url: URL) -> BaseException | None:
    """A clear error for a connection lost mid-work (the server stopped, restarted or
    the network broke); None for any other error."""
    from pocoflow.errors import DatabaseConnectionError

    if not any(words in message for words in _LOST):
        return None
    said = " ".join(message.split())
    return DatabaseConnectionError(
        f"Lost the connection to PostgreSQL server {server_of(url)}: {said} What was "
        "committed before is kept. Check that the server is up; a run stopped by this "
        "resumes from its last checkpoint (flow.resume(run_id)) once it is."
    )
