"""The process-wide handle of one database: engine, group-commit writer, heartbeats.

One per database URL per process (a forked child gets its own), shared by
every ``WorkflowDB``/``AsyncWorkflowDB`` and every Flow that names that
database, so connections are pooled across them. Opening brings the schema
to head first.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from typing import Any, ClassVar

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from pocoflow.logging import get_logger
from pocoflow.persistence import queries
from pocoflow.persistence.connect import (
    create_db_engine,
    is_sqlite,
    safe_url,
    use_wal,
    wal_checkpoint,
    write_connection,
)
from pocoflow.persistence.migrate import ensure_schema
from pocoflow.persistence.writer import Writer

_log = get_logger("db")

_HOST = socket.gethostname()
#: How often the background thread folds SQLite's WAL into the database file.
CHECKPOINT_EVERY_S = 0.25


class Database:
    """Engine, writer and heartbeat thread of one database in this process."""

    _registry: ClassVar[dict[tuple[str, int], Database]] = {}
    _registry_lock = threading.Lock()

    def __init__(self, url: URL) -> None:
        self.url = url
        self.pid = os.getpid()  # a forked child must not use this process's connections
        self.safe_url = safe_url(url)
        self.engine: Engine = create_db_engine(url)
        try:
            ensure_schema(self.engine)
            if is_sqlite(self.engine):
                use_wal(self.engine)
            self.writer = Writer(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self.owner = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._owned: dict[str, float] = {}  # run_id -> its lease (seconds)
        self._owned_lock = threading.Lock()
        self._beat = threading.Event()
        self._beater: threading.Thread | None = None
        if is_sqlite(self.engine):
            threading.Thread(target=self._checkpoint_forever, daemon=True,
                             name="pocoflow-wal-checkpoint").start()
        _log.debug("Database ready  url=%s", self.safe_url)

    @classmethod
    def open(cls, url: URL) -> Database:
        key = (url.render_as_string(hide_password=False), os.getpid())
        database = cls._registry.get(key)
        if database is not None:
            return database
        with cls._registry_lock:
            database = cls._registry.get(key)
            if database is None:
                database = cls(url)
                cls._registry[key] = database
            return database

    @classmethod
    def forget(cls, url: URL) -> None:
        """Dispose of this process's engine for *url* (tests, or after a server move)."""
        key = (url.render_as_string(hide_password=False), os.getpid())
        with cls._registry_lock:
            database = cls._registry.pop(key, None)
        if database is not None:
            database.close()

    def close(self) -> None:
        """Stop the background threads, fold the WAL in, and close every connection."""
        self._beat.set()
        self.writer.close()
        if is_sqlite(self.engine):
            try:
                wal_checkpoint(self.engine, "TRUNCATE")
            except Exception:
                _log.debug("Final WAL checkpoint of %s failed", self.safe_url, exc_info=True)
        self.engine.dispose()

    # ── SQLite WAL checkpoints, off the steps' path ─────────────────────────

    def _checkpoint_forever(self) -> None:
        """Fold the WAL into the database file a few times a second while runs write."""
        done = self.writer.commits
        while not self._beat.wait(CHECKPOINT_EVERY_S):
            if self.writer.commits == done:
                continue
            done = self.writer.commits
            try:
                wal_checkpoint(self.engine)
            except Exception:
                _log.debug("WAL checkpoint of %s failed; retrying later", self.safe_url,
                           exc_info=True)

    # ── heartbeats ──────────────────────────────────────────────────────────

    def own(self, run_id: str, lease_seconds: float) -> None:
        """Keep *run_id*'s heartbeat fresh while this process runs it."""
        with self._owned_lock:
            self._owned[run_id] = lease_seconds
            if self._beater is None or not self._beater.is_alive():
                self._beater = threading.Thread(target=self._beat_forever, daemon=True,
                                                name="pocoflow-heartbeat")
                self._beater.start()

    def disown(self, run_id: str) -> None:
        with self._owned_lock:
            self._owned.pop(run_id, None)

    def _beat_forever(self) -> None:
        while True:
            with self._owned_lock:
                owned = dict(self._owned)
            interval = min(owned.values(), default=30.0) / 3
            if self._beat.wait(interval):
                return
            if not owned:
                continue
            try:
                with write_connection(self.engine) as conn, conn.begin():
                    queries.heartbeat(conn, self.owner, owned)
            except Exception:
                _log.warning("Heartbeat for %d run(s) failed on %s", len(owned), self.safe_url,
                             exc_info=True)


def owner_is_dead(owner: str | None) -> bool:
    """True when *owner* names a process on this host that no longer exists."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, _token = rest.partition(":")
    if host != _HOST or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return not any(db.owner == owner for db in Database._registry.values())
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
