"""The process-wide handle of one database: engine, group-commit writer, heartbeats.

One per database URL per process (a forked child gets its own), shared by
every ``WorkflowDB``/``AsyncWorkflowDB`` and every Flow that names that
database, so connections are pooled across them. Opening brings the schema
to head first.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
import time
import uuid
import weakref
from typing import Any, ClassVar

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from pocoflow import control
from pocoflow.errors import RunTakenOverError
from pocoflow.logging import get_logger
from pocoflow.persistence import queries
from pocoflow.persistence.connect import (
    create_db_engine,
    explain,
    is_memory,
    is_sqlite,
    safe_url,
    use_wal,
    wal_checkpoint,
    wal_size,
    write_connection,
)
from pocoflow.persistence.migrate import ensure_schema
from pocoflow.persistence.writer import Writer

_log = get_logger("db")

_HOST = socket.gethostname()
#: How often the background thread folds SQLite's WAL into the database file.
CHECKPOINT_EVERY_S = 0.25
#: How often the owner of a running run looks for a cancel request from elsewhere.
CANCEL_POLL_S = 0.5
#: How long closing a database waits for its background threads to finish their round.
CLOSE_WAIT_S = 5.0


_every_database: weakref.WeakSet[Database] = weakref.WeakSet()


class Database:
    """Engine, writer and heartbeat thread of one database in this process."""

    _registry: ClassVar[dict[tuple[str, int], Database]] = {}
    _registry_lock = threading.Lock()

    def __init__(self, url: URL) -> None:
        self.url = url
        self.pid = os.getpid()  # a forked child must not use this process's connections
        self.forked = False  # set in a forked child (see _after_fork): reopen, don't use
        _every_database.add(self)
        self.safe_url = safe_url(url)
        self.engine: Engine = create_db_engine(url)
        try:
            self.revision = ensure_schema(self.engine)
            if is_sqlite(self.engine) and not is_memory(url):
                use_wal(self.engine)
            self.writer = Writer(self.engine, self.revision)
        except BaseException as exc:
            self.engine.dispose()
            explained = explain(exc, url)
            if explained is exc:
                raise
            raise explained from exc
        self.owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # run_id (as stored) -> (owner token, lease seconds, top-level?, id of its RunControl)
        self._owned: dict[str, tuple[str, float, bool, str]] = {}
        #: owner tokens of runs that stopped here with their end unrecorded (see abandon)
        self.abandoned: set[str] = set()
        #: top-level runs this process runs on this database now (their steps share commits
        #: when there are several: see the recorder)
        self.runs_in_flight = 0
        self._owned_lock = threading.Lock()
        self._beat = threading.Event()
        self._beater: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        if self.writer.database_file is not None:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_forever, daemon=True, name="pocoflow-wal-checkpoint"
            )
            self._checkpointer.start()
        _close_at_exit()
        _log.debug("Database ready  url=%s", self.safe_url)

    @classmethod
    def open(cls, url: URL) -> Database:
        """This process's handle of *url*: made (and the schema brought to head) on first
        use; after that, the schema revision is read again (one indexed read), so a
        database another process migrated since is refused as a new process refuses it."""
        key = (url.render_as_string(hide_password=False), os.getpid())
        database = cls._registry.get(key)
        if database is None:
            with cls._registry_lock:
                database = cls._registry.get(key)
                if database is None:
                    database = cls(url)
                    cls._registry[key] = database
                    return database
        database.recheck()
        return database

    def recheck(self) -> None:
        """Read the schema revision again; bring it to head as on first open (an older
        one is upgraded, a newer one refused with DatabaseVersionError, untouched)."""
        try:
            revision = ensure_schema(self.engine)
        except Exception as exc:
            explained = explain(exc, self.url)
            if explained is exc:
                raise
            raise explained from exc
        self.revision = self.writer.statements.revision = revision

    @classmethod
    def forget(cls, url: URL) -> None:
        """Dispose of this process's engine for *url* (tests, or after a server move)."""
        key = (url.render_as_string(hide_password=False), os.getpid())
        with cls._registry_lock:
            database = cls._registry.pop(key, None)
        if database is not None:
            database.close()

    @classmethod
    def close_all(cls) -> None:
        """Close every database this process opened (at interpreter exit), so each
        SQLite WAL is folded into its database file: the file alone holds every run."""
        with cls._registry_lock:
            mine = [key for key, database in cls._registry.items() if database.pid == os.getpid()]
            closing = [cls._registry.pop(key) for key in mine]
        for database in closing:
            try:
                database.close()
            except Exception:
                _log.debug("Closing %s failed", database.safe_url, exc_info=True)

    def close(self) -> None:
        """Stop the background threads, fold the WAL in, and close every connection."""
        self._beat.set()
        for thread in (self._checkpointer, self._beater):
            if thread is not None and thread is not threading.current_thread():
                thread.join(CLOSE_WAIT_S)
        self.writer.close()
        if self.writer.database_file is not None:
            try:
                raw = self.engine.raw_connection()
                try:
                    wal_checkpoint(raw.driver_connection, "TRUNCATE", busy_timeout_ms=1000)
                finally:
                    raw.close()
            except Exception:
                _log.debug("Final WAL checkpoint of %s failed", self.safe_url, exc_info=True)
        self.engine.dispose()

    # ── SQLite WAL checkpoints, off the steps' path ─────────────────────────

    def _checkpoint_forever(self) -> None:
        """Keep the WAL small, off the steps' path: a PASSIVE checkpoint a few times a
        second while this process writes; past the bound, a RESTART checkpoint in the
        writers' turn (this process's writes wait for it); once the database is idle
        (the WAL unchanged for a round), a TRUNCATE that leaves it empty."""
        writer = self.writer
        database_file: str = writer.database_file  # type: ignore[assignment]
        seen = writer.commits
        before = stuck = -1
        while not self._beat.wait(CHECKPOINT_EVERY_S):
            size = wal_size(database_file)
            try:
                if size > writer.wal_limit:
                    writer.fold_wal()
                elif writer.commits != seen:
                    raw = self.engine.raw_connection()
                    try:
                        wal_checkpoint(raw.driver_connection)
                    finally:
                        raw.close()
                elif (
                    size
                    and size == before
                    and size != stuck
                    and not writer.fold_wal(limit=0, mode="TRUNCATE")
                ):
                    stuck = size  # readers kept it: not again before the WAL changes
            except Exception:
                _log.debug(
                    "WAL checkpoint of %s failed; retrying later", self.safe_url, exc_info=True
                )
            seen = writer.commits
            before = wal_size(database_file)

    # ── runs this process owns: claims, heartbeats, cancel requests ─────────

    def claim_token(self) -> str:
        """A new owner value for one run: this process, plus a nonce, so that a run
        taken over and later taken back by this process is a new claim (a fence)."""
        return f"{self.owner}:{uuid.uuid4().hex[:8]}"

    def own(
        self,
        run_id: str,
        token: str,
        lease_seconds: float,
        *,
        top_level: bool = True,
        control_id: str | None = None,
    ) -> None:
        """Keep *run_id*'s heartbeat fresh while this process runs it under *token*;
        a top-level run is also watched for cancel requests and for a takeover, which
        stop it through its RunControl (*control_id*: the run id as the engine knows it,
        when the stored one differs)."""
        with self._owned_lock:
            self._owned[run_id] = (token, lease_seconds, top_level, control_id or run_id)
            if self._beater is None or not self._beater.is_alive():
                self._beater = threading.Thread(
                    target=self._watch_forever, daemon=True, name="pocoflow-heartbeat"
                )
                self._beater.start()

    def run_begins(self, delta: int = 1) -> None:
        """Count a top-level run recorded from this process starting (or, -1, ending)."""
        with self._owned_lock:
            self.runs_in_flight += delta

    def abandon(self, token: str) -> None:
        """The run (and its nested runs) under *token* stopped in this process without
        its end being recorded: its row says ``running``, but nothing runs it, so it
        reads as interrupted here at once (other processes wait out the lease)."""
        with self._owned_lock:
            self.abandoned.add(token)

    def disown(self, run_id: str) -> None:
        with self._owned_lock:
            self._owned.pop(run_id, None)

    def token_of(self, run_id: str) -> str | None:
        """The token under which this process owns *run_id*, if it does."""
        owned = self._owned.get(run_id)
        return owned[0] if owned is not None else None

    def _watch_forever(self) -> None:
        """Every CANCEL_POLL_S, look for cancel requests; every lease/3, beat the hearts.
        A run whose heartbeat finds another owner was taken over: it is stopped."""
        next_beat = 0.0
        pause = CANCEL_POLL_S
        while not self._beat.wait(pause):
            with self._owned_lock:
                owned = dict(self._owned)
            if not owned:
                pause = CANCEL_POLL_S
                continue
            interval = min(owning[1] for owning in owned.values()) / 3
            pause = min(CANCEL_POLL_S, interval)
            now = time.monotonic()
            lost: list[str] = []
            try:
                if now >= next_beat:
                    next_beat = now + interval
                    with write_connection(self.engine) as conn, conn.begin():
                        lost = queries.heartbeat(conn, {r: o[0] for r, o in owned.items()})
                with self.engine.connect() as conn:  # a read: no write lock every poll
                    asked = queries.cancel_requested(
                        conn, [r for r, owning in owned.items() if owning[2]]
                    )
                    conn.rollback()
            except Exception:
                _log.warning(
                    "Heartbeat for %d run(s) failed on %s", len(owned), self.safe_url, exc_info=True
                )
                continue
            for run_id in lost:
                if owned[run_id][2] and run_id in self._owned:
                    self.disown(run_id)
                    control.stop(
                        owned[run_id][3],
                        RunTakenOverError(
                            f"Run '{run_id}' was taken over by another process (this one went "
                            "longer than its lease without a heartbeat); it stops here and "
                            "writes nothing more."
                        ),
                    )
            for run_id in asked:
                if control.stop(owned[run_id][3]):
                    _log.info("Run '%s': cancel requested through the database", run_id)


_exit_hook = threading.Lock()
_exit_hooked = False


def _close_at_exit() -> None:
    """Close this process's databases at interpreter exit (once registered)."""
    global _exit_hooked
    with _exit_hook:
        if not _exit_hooked:
            atexit.register(Database.close_all)
            _exit_hooked = True


def _after_fork() -> None:
    """In a forked child: the parent's databases are not this process's to use."""
    for database in list(_every_database):
        database.forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def owner_is_dead(owner: str | None) -> bool:
    """True when *owner* names a process on this host that no longer exists."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, _token = rest.partition(":")
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():  # this process: alive if one of its databases made the claim
        return not any(
            owner == db.owner or owner.startswith(db.owner + ":")
            for db in Database._registry.values()
        )
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def describe_owner(owner: str | None) -> dict[str, Any]:
    host, _, rest = (owner or "").partition(":")
    pid, _, _ = rest.partition(":")
    return {"host": host or None, "pid": int(pid) if pid.isdigit() else None}
