"""Connecting: database URLs, pooled engines, and SQLite's connection settings.

One implementation for SQLite and PostgreSQL; the dialect comes from the URL.
PocoFlow runs SQLAlchemy's sync engine in worker threads (that works on
asyncio and trio alike, and one thread hop per step is cheaper than one per
statement of an async driver), so async driver names in URLs are mapped to
their sync twins.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError

#: How long a SQLite writer waits for another process's lock before failing.
BUSY_TIMEOUT_MS = 30_000

_SYNC_DRIVERS = {
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
}

#: Transaction control on the SQLite driver connection (the writer's fast path).
SQLITE_BEGIN_WRITE = "BEGIN IMMEDIATE"
SQLITE_COMMIT = "COMMIT"
SQLITE_ROLLBACK = "ROLLBACK"
SQLITE_NO_WAIT = "PRAGMA busy_timeout = 0"


#: A path that is really a URL with a slash missing (``postgresql:/bob@host/db``,
#: ``Path("sqlite:///x.db")``) or a driver name (``postgresql+asyncpg:...``). A single
#: letter before the colon is a Windows drive, never a scheme.
_URL_LIKE = re.compile(
    r"[A-Za-z][A-Za-z0-9]+(\+[A-Za-z0-9_]+:|:(/|$))"
    r"|(sqlite|postgres|postgresql|mysql|mariadb|oracle|mssql)(\+\w+)?:",
    re.IGNORECASE,
)
#: Query parameters that carry a secret (libpq's password and sslpassword, and the like);
#: ``passfile`` is a path and stays visible.
_SECRET_PARAM = re.compile(r"pass(word|wd)|secret|token", re.IGNORECASE)
_USERINFO = re.compile(r"^([A-Za-z][\w+.-]*:/*[^:/@?#]*:)[^/?#]*@")  # to the last @
_QUERY_SECRET = re.compile(
    r"([?&][^=&#]*(?:pass(?:word|wd)|secret|token)[^=&#]*=)[^&#]*", re.IGNORECASE
)


def to_url(target: str | os.PathLike[str] | URL, *, create_dirs: bool = True) -> URL:
    """A SQLAlchemy URL for a file path or URL, with the sync driver PocoFlow runs on.

    ``sqlite+aiosqlite`` and ``postgresql+asyncpg`` URLs are accepted and run
    on the stdlib sqlite3 and psycopg 3 drivers. A path that looks like a URL with
    a slash missing is refused rather than made into a file of that name.
    """
    if isinstance(target, URL):
        url = target
    elif isinstance(target, str) and "://" in target:
        try:
            url = make_url(target)
        except ArgumentError as exc:
            raise ValueError(
                f"Database URL {redact(target)!r} is not a valid SQLAlchemy URL: {redact(str(exc))}"
            ) from None
        except ValueError:  # SQLAlchemy's int() of a port that is not a number
            netloc = re.split(r"[/?#]", target.partition("://")[2], maxsplit=1)[0]
            host = netloc.rpartition("@")[2]
            if "[" in host and "]" not in host:
                raise ValueError(
                    f"Database URL {redact(target)!r}: its IPv6 host has no closing ']'. "
                    "Write it in brackets, e.g. postgresql://user@[::1]:5432/dbname."
                ) from None
            port = re.search(r"@[^/?#]*:([^/?#]*)", target)
            raise ValueError(
                f"Database URL {redact(target)!r}: the port "
                f"{port.group(1) if port else '(unreadable)'!r} is not a number. Write "
                "host:5432 (PostgreSQL's usual port), or leave ':port' out for the default."
            ) from None
    elif isinstance(target, (str, os.PathLike)):
        text = os.fspath(target)
        if isinstance(text, str) and _URL_LIKE.match(text):
            scheme, _, rest = text.partition(":")
            if scheme.lower().startswith("sqlite"):
                fix = (
                    f"a SQLite database is given by its file path alone, e.g. "
                    f"db_path={rest.lstrip('/') or 'pocoflow.db'!r}, or as a URL with "
                    "three slashes (sqlite:///relative/file.db, sqlite:////absolute/file.db)"
                )
            else:
                fixed = f"{scheme}://{rest.lstrip('/')}"
                fix = f"a URL needs '://' after its scheme, e.g. db_url={redact(fixed)!r}"
            raise ValueError(
                f"Database {redact(text)!r} looks like a URL, not a file path: {fix}. A file "
                f"whose name really starts that way is written with a directory first: "
                f"'./{redact(text)}'."
            )
        if text == ":memory:":
            return memory_url()
        if not str(text).strip():
            raise ValueError(f"Database path {text!r} is empty; give db_path a file name, e.g. "
                             "db_path='pocoflow.db' (or ':memory:' for a database in memory).")
        path = Path(target).expanduser().absolute()
        if create_dirs:
            _make_folder(path)
        return URL.create("sqlite", database=str(path))
    else:
        raise TypeError(
            f"A database is a file path or a SQLAlchemy URL string, got {type(target).__name__}."
        )
    if url.port is not None and not 0 < url.port < 65536:
        raise ValueError(
            f"Database URL {safe_url(url)!r}: the port {url.port} is out of range (1 to "
            "65535). Write host:5432 (PostgreSQL's usual port), or leave ':port' out."
        )
    driver = _SYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(
            f"Database URL {safe_url(url)!r}: PocoFlow supports "
            "SQLite (a path, sqlite:///file.db) and PostgreSQL (postgresql+asyncpg://... or "
            f"postgresql+psycopg://...), not {url.drivername!r}."
        )
    url = url.set(drivername=driver)
    if driver == "sqlite" and url.database in (None, "", ":memory:"):
        return memory_url()
    if create_dirs and driver == "sqlite" and not is_memory(url) \
            and not url.query.get("uri"):
        _make_folder(Path(url.database).expanduser().absolute())
    return url


def _make_folder(path: Path) -> None:
    """Create the folder of the SQLite file *path*; DatabaseFileError naming the file if
    it cannot be made (a part of it is a file, no permission)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from pocoflow.errors import DatabaseFileError

        in_the_way = next((part for part in path.parents if part.is_file()), None)
        if in_the_way is not None:
            reason = f"{in_the_way} is a file, not a directory"
        else:
            reason = f"{exc.strerror} ({exc.filename})"
        error = DatabaseFileError(
            f"Cannot create the folder of the database file {path}: {reason}. Give a path "
            "whose folders are directories this process may create, or create them first.")
        error.filename = str(path)
        raise error from exc


def memory_url() -> URL:
    """A new SQLite database in this process's memory (``":memory:"``): SQLite's memdb
    VFS under a name of its own, so every connection of this process's pool sees it
    (a plain ``:memory:`` database is private to one connection). Each ``":memory:"``
    is a database of its own, as with sqlite3; it lives until its WorkflowDB (or Flow)
    is gone or the process ends. No WAL: readers and the writer take turns."""
    import sqlite3

    if sqlite3.sqlite_version_info < (3, 36):
        raise ValueError(
            f"An in-memory database (':memory:') needs SQLite 3.36 or newer; this Python's "
            f"sqlite3 has {sqlite3.sqlite_version}. Use a file in a temporary directory "
            "instead (tempfile.mkdtemp()), or leave the database out."
        )
    return URL.create(
        "sqlite",
        database=f"file:/pocoflow-memory-{uuid.uuid4().hex}",
        query={"vfs": "memdb", "uri": "true"},
    )


def is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.query.get("vfs") == "memdb"


def safe_url(url: URL) -> str:
    """The URL for messages and logs: never a password, whether in the user part or in
    the query (``?password=``, ``sslpassword``, any ``*password*``/``*secret*``/
    ``*token*`` parameter)."""
    hidden = {key: "***" for key in url.query if _SECRET_PARAM.search(key)}
    if not hidden:
        return url.render_as_string(hide_password=True)
    shown = url.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace("=%2A%2A%2A", "=***")


def redact(text: str) -> str:
    """*text* holding a URL that may not parse, with its secrets replaced by ``***``."""
    text = _USERINFO.sub(r"\1***@", text)
    return _QUERY_SECRET.sub(r"\1***", text)


def secret_values(text: str) -> tuple[str, ...]:
    """Every spelling of a secret in *text* (a URL that may not parse) that a message
    could repeat: the user part's password and each secret query parameter, as typed
    and percent-decoded; longest first, so a shorter one never hides part of another."""
    from urllib.parse import unquote

    found: set[str] = set()
    userinfo = _USERINFO.match(text)
    if userinfo:
        password = text[userinfo.end(1) : userinfo.end() - 1]
        found |= {password, unquote(password)}
    for match in _QUERY_SECRET.finditer(text):
        value = text[match.end(1) : match.end()]
        found |= {value, unquote(value)}
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def create_db_engine(url: URL) -> Engine:
    """A pooled engine; SQLite gets WAL, synchronous=NORMAL, a busy timeout and
    BEGIN IMMEDIATE for write transactions (so writers queue instead of failing)."""
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            pool_size=8,
            max_overflow=32,
            pool_timeout=60,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    from pocoflow.persistence import timeouts

    try:
        engine = create_engine(
            url,
            pool_size=10,
            max_overflow=40,
            pool_pre_ping=True,
            connect_args=timeouts.connect_args(url),
        )
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"The database driver for {safe_url(url)!r} is not installed ({exc.name}). "
            "Install it with: pip install 'pocoflow[postgres]'."
        ) from None
    event.listen(engine, "do_connect", timeouts.timed_connect(url))
    return engine


def explain(error: BaseException, url: URL) -> BaseException:
    """The error to show for a failed database call: a PocoFlow error that names the
    database and the fix where PocoFlow knows one (a timeout, a full disk, a file that
    is not a database), its cause *error*; else *error* itself."""
    found: BaseException | None
    if url.get_backend_name() == "sqlite":
        found = _explain_sqlite(error, url)
    else:
        from pocoflow.persistence import timeouts

        found = timeouts.explain(error, url)
    if found is None:
        return error
    found.__cause__ = error
    return found


#: SQLite's primary result codes PocoFlow explains, and the words of their messages
#: (Python 3.10's sqlite3 has no error codes).
_SQLITE_FAILURES = {
    13: "database or disk is full",
    10: "disk I/O error",
    26: "file is not a database",
    11: "database disk image is malformed",
    14: "unable to open database file",
    8: "attempt to write a readonly",
}
_FIX = "once it can be written, the run goes on from its last checkpoint: flow.resume(run_id)"


def sqlite_failure(error: BaseException) -> int | None:
    """The primary SQLite result code of *error* (raw or wrapped by SQLAlchemy) if it is
    one PocoFlow explains: full (13), I/O error (10), not a database (26), corrupt (11),
    cannot open (14), read-only (8)."""
    import sqlite3

    cause = getattr(error, "orig", None) or error
    if not isinstance(cause, sqlite3.Error):
        return None
    code = getattr(cause, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF if code & 0xFF in _SQLITE_FAILURES else None
    text = str(cause)
    return next((known for known, words in _SQLITE_FAILURES.items() if words in text), None)


def out_of_space(error: BaseException) -> bool:
    """True for a SQLite write that failed for want of room (disk full, a file size
    limit, an I/O error): folding the WAL in may make room for it."""
    return sqlite_failure(error) in (13, 10)


def _explain_sqlite(error: BaseException, url: URL) -> BaseException | None:
    from pocoflow.errors import DatabaseFileError

    code = sqlite_failure(error)
    if code is None:
        return None
    path = url.database or ":memory:"
    cause = str(getattr(error, "orig", None) or error)
    message = {
        13: f"Could not write to the database file {path}: its disk is full ({cause}). "
        f"Free space on that disk; {_FIX}.",
        10: f"Could not read or write the database file {path}: {cause} (a full disk, a file "
        "size limit such as ulimit -f, or failing storage). Free space or raise the "
        f"limit; {_FIX}.",
        26: f"The file {path} is not a SQLite database (or it is encrypted), so PocoFlow "
        "cannot open it. Give db_path a PocoFlow database or a new file name, and move "
        "this file away if it is in the way.",
        11: f"The database file {path} is damaged ({cause}). Restore it from a backup, or "
            "recover what it holds with the sqlite3 shell's .recover command.",
        14: f"{path} is a directory, not a database file; give a file name inside it, e.g. "
            f"{os.path.join(path, 'pocoflow.db')}." if os.path.isdir(path) else
            f"Could not open the database file {path} ({cause}). Check that its directory "
            "exists and that this process may write there.",
        8: f"The database file {path} is read-only for this process ({cause}). Give it "
        "write permission, or choose a path this process may write.",
    }[code]
    found = DatabaseFileError(message)
    found.filename = path
    return found


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _sqlite_begin)
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous = NORMAL")
    # WAL checkpoints run in PocoFlow's background checkpointer, not inside a step's commit
    cursor.execute("PRAGMA wal_autocheckpoint = 0")
    # a WAL restarted by a checkpoint is cut back to the bound at its next commit
    cursor.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
    cursor.close()


def use_wal(engine: Engine) -> None:
    """Put a SQLite file in WAL mode (persistent), once its schema is known to be ours.

    Switching needs the file to itself, and SQLite does not wait for that (no busy
    handler), so when other processes open the file at the same moment it retries.
    """
    import time

    raw = engine.raw_connection()  # outside any transaction: WAL cannot be set inside one
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        delay = 0.005
        while True:
            connection = raw.driver_connection
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return
            try:
                connection.execute("PRAGMA journal_mode = WAL")
            except Exception as exc:
                if not is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
    finally:
        raw.close()


#: The SQLite WAL's bound. Past it, the writer that notices holds this process's writes
#: for one RESTART checkpoint (it waits for readers, then the next commit starts the WAL
#: over, cut back to this size by journal_size_limit). 8 MiB is twice SQLite's own
#: auto-checkpoint point (1000 pages): about 380 steps of a 2 KB store (a step adds ~22
#: KB of WAL frames), so a burst of a few hundred steps is absorbed and folded in by the
#: background checkpointer, while sustained writing pays ~20 ms per 8 MiB (copy + fsync)
#: instead of growing the WAL without end.
WAL_LIMIT_BYTES = 8 * 1024 * 1024
#: How long a RESTART or TRUNCATE checkpoint waits for readers of an older snapshot to
#: finish before giving up for now (the writers of this process wait as long).
WAL_FOLD_BUSY_MS = 2_000


def wal_checkpoint(
    dbapi_connection: Any, mode: str = "PASSIVE", busy_timeout_ms: int | None = None
) -> bool:
    """Copy the SQLite WAL into the database file on a driver connection outside any
    transaction; True if every frame was copied (RESTART: and the next writer starts the
    WAL over; TRUNCATE: and the WAL file is emptied).

    PASSIVE never waits. RESTART and TRUNCATE take the write lock, then wait for readers
    still on older snapshots; they are tried again while another connection's checkpoint
    runs (SQLite refuses a second one at once), all within *busy_timeout_ms*."""
    if mode not in ("PASSIVE", "RESTART", "TRUNCATE"):
        raise ValueError(f"Unknown WAL checkpoint mode {mode!r}.")
    import time

    sql = f"PRAGMA wal_checkpoint({mode})"
    if busy_timeout_ms is None:
        busy, log, copied = dbapi_connection.execute(sql).fetchone()
        return not busy and (log == copied or mode == "TRUNCATE")
    deadline = time.monotonic() + busy_timeout_ms / 1000
    pause = 0.002
    try:
        while True:
            left = deadline - time.monotonic()
            dbapi_connection.execute(f"PRAGMA busy_timeout = {max(0, int(left * 1000))}")
            busy, log, copied = dbapi_connection.execute(sql).fetchone()
            if not busy:
                return log == copied or mode == "TRUNCATE"
            if mode == "PASSIVE" or time.monotonic() + pause > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    finally:
        dbapi_connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def wal_size(database_file: str) -> int:
    """Bytes in the SQLite WAL beside *database_file* (0 if there is none)."""
    try:
        return os.stat(database_file + "-wal").st_size
    except OSError:
        return 0


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("pocoflow_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def write_connection(engine: Engine) -> Connection:
    """A connection whose transactions take SQLite's write lock up front."""
    return engine.connect().execution_options(pocoflow_write=True)


def is_busy(error: BaseException) -> bool:
    """True when a SQLite error means another connection holds the lock (SQLITE_BUSY or
    SQLITE_LOCKED, by the driver's error code)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:  # Python 3.10's sqlite3 has no error codes: any OperationalError
        import sqlite3

        return isinstance(error, sqlite3.OperationalError)
    return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (and their extended codes)
