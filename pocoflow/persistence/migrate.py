"""Alembic glue: bring any database to the head revision when it is opened.

A new database is built by the migrations; a pocoflow 0.2 file (its tables,
no ``alembic_version``) is stamped at revision 0001 and upgraded; a database
at a revision this code does not know was written by a newer PocoFlow and is
refused untouched. Upgrades run under the database's write lock (SQLite
``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), so several threads or
processes opening one new database at once never collide.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, func, inspect, select
from sqlalchemy.engine import URL, Connection

from pocoflow.errors import DatabaseVersionError
from pocoflow.logging import get_logger
from pocoflow.persistence.connect import (
    create_db_engine,
    explain,
    is_memory,
    is_sqlite,
    safe_url,
    to_url,
    write_connection,
)
from pocoflow.persistence.timeouts import restore_deadline, without_deadline

_log = get_logger("db")

#: Revision 0001 is exactly pocoflow 0.2's schema.
V02_REVISION = "0001"
_PG_LOCK_KEY = 0x706F636F  # "poco": the advisory lock held while migrating


@lru_cache(maxsize=1)
def migrations_dir() -> Path:
    """The Alembic scripts: ``migrations/`` of a checkout, or the copy inside the wheel."""
    spec = importlib.util.find_spec("pocoflow._migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").exists():
        return checkout
    raise FileNotFoundError(  # pragma: no cover - a broken install
        "PocoFlow's migrations are missing from this installation; reinstall pocoflow."
    )


def alembic_config(connection: Connection | None = None) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def _script() -> object:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(migrations_dir()))


def head_revision() -> str:
    return _script().get_current_head()  # type: ignore[attr-defined]


def current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def ensure_schema(engine: Engine) -> str:
    """Bring the database to head (or refuse it); return the revision it is at. A
    database at head costs one read of alembic_version."""
    head = head_revision()
    if _stored_revisions(engine) == [head]:
        return head
    with engine.connect() as conn:
        current = current_revision(conn)
        conn.rollback()
    if current == head:
        return head
    _check_known(engine, current, head)
    with write_connection(engine) as conn, conn.begin():
        lifted = None
        try:
            if not is_sqlite(engine):  # a migration (or waiting for another's) may run long
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
                lifted = without_deadline(conn.connection.driver_connection)
                conn.execute(select(func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
            current = current_revision(conn)  # another process may have migrated meanwhile
            if current == head:
                return head
            _check_known(engine, current, head)
            _upgrade(conn, current)
        finally:
            if lifted is not None:
                restore_deadline(conn.connection.driver_connection, lifted)
    return head


def _stored_revisions(engine: Engine) -> list[str] | None:
    """The rows of alembic_version (None if it cannot be read, e.g. no such table)."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        try:
            cursor.execute("SELECT version_num FROM alembic_version")
            return [row[0] for row in cursor.fetchall()]
        except Exception as exc:
            if type(exc).__name__ not in ("OperationalError", "ProgrammingError", "UndefinedTable"):
                raise
            return None
        finally:
            cursor.close()
    finally:
        raw.rollback()
        raw.close()


def _upgrade(conn: Connection, current: str | None) -> None:
    from alembic import command

    config = alembic_config(conn)
    if current is None and inspect(conn).has_table("pf_runs"):
        _log.info("pocoflow 0.2 database found: stamping revision %s", V02_REVISION)
        command.stamp(config, V02_REVISION)  # type: ignore[arg-type]
    _log.info(
        "Upgrading database %s from revision %s to head",
        safe_url(conn.engine.url),
        current or "(empty)",
    )
    command.upgrade(config, "head")  # type: ignore[arg-type]


def _check_known(engine: Engine, current: str | None, head: str) -> None:
    if current is None:
        return
    known = {rev.revision for rev in _script().walk_revisions()}  # type: ignore[attr-defined]
    if current not in known:
        raise DatabaseVersionError(
            f"Database {safe_url(engine.url)!r} is at schema revision {current!r}, newer than "
            f"this PocoFlow knows (its newest is {head!r}); it was left untouched. Upgrade "
            "PocoFlow (pip install -U pocoflow) to open it."
        )


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """``pocoflow db upgrade``: the revisions before and after."""
    before = revision_of(engine)
    return before, ensure_schema(engine)


def revision_of(engine: Engine) -> str | None:
    """``pocoflow db current``: the database's revision (None: not a PocoFlow database yet)."""
    with engine.connect() as conn:
        current = current_revision(conn)
        if current is None and inspect(conn).has_table("pf_runs"):
            return "0.2 (unversioned)"
        return current


def is_sqlite_url(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def schema_status(
    target: str | os.PathLike[str],
    *,
    upgrade_it: bool = False,
) -> dict[str, str | None]:
    """The schema revision of the database at *target* (``before``, ``after``, ``head``,
    ``url``), upgraded to head first when *upgrade_it*. A SQLite file that does not exist
    is reported as such (``exists`` False) and only created by an upgrade."""
    url = to_url(target, create_dirs=upgrade_it)
    head = head_revision()
    status: dict[str, str | None] = {
        "url": safe_url(url),
        "head": head,
        "exists": "yes",
        "file": url.database if is_sqlite_url(url) and not is_memory(url) else None,
    }
    if status["file"] and status["file"] != ":memory:" and not Path(status["file"]).exists():
        status["exists"] = None
        if not upgrade_it:
            status["before"] = status["after"] = None
            return status
    engine = create_db_engine(url)
    try:
        if upgrade_it:
            status["before"], status["after"] = upgrade(engine)
        else:
            status["before"] = status["after"] = revision_of(engine)
    except Exception as exc:
        explained = explain(exc, url)
        if explained is exc:
            raise
        raise explained from exc
    finally:
        engine.dispose()
    return status
