"""Errors that name what went wrong: a file that is not a database, an in-memory
database (supported, one per ``":memory:"``), a URL whose port is not a number."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from pocoflow import AsyncNode, DatabaseFileError, Flow, Store, WorkflowDB
from pocoflow.persistence.database import Database


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    """Opening a file that is not SQLite raises DatabaseFileError (an OSError) naming the
    file and what to do, and leaves the file as it was."""
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)

    with pytest.raises(DatabaseFileError, match="is not a SQLite database") as caught:
        WorkflowDB(path)

    assert isinstance(caught.value, OSError)
    assert str(path) == caught.value.filename
    assert str(path) in str(caught.value)
    assert b"these are my notes" in path.read_bytes()[:40]


class Count(AsyncNode):
    """Counts to ``store["to"]``, yielding to the loop at each step."""

    def __init__(self) -> None:
        super().__init__(name="Count")
        self.then("again", self)

    async def exec_async(self, prep_res: Any) -> None:
        await anyio.sleep(0)

    def post(self, store: Store, prep_res: Any, exec_res: Any) -> str:
        store["n"] = store.get("n", 0) + 1
        return "again" if store["n"] < store["to"] else "done"


def test_an_in_memory_database_records_runs_in_this_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flow(db_path=":memory:") records its runs (ten at once too) in a database of its
    own that lives with the Flow: another ``":memory:"`` is another database, as with
    sqlite3; a failed run resumes; nothing is created on disk; once its WorkflowDB is
    gone, so is the database."""
    monkeypatch.chdir(tmp_path)
    flow = Flow(start=Count(), db_path=":memory:", flow_name="mem")

    async def ten() -> None:
        async with anyio.create_task_group() as group:
            for i in range(10):
                group.start_soon(flow.run_async, {"to": 5 + i})

    anyio.run(ten)
    db = flow.db
    assert db is not None
    runs = anyio.run(db.list_runs)
    assert 10 == len(runs)
    assert {"completed"} == {r["status"] for r in runs}

    other = WorkflowDB(":memory:")
    assert [] == other.list_runs()
    assert Path(":memory:") == other.db_path  # as given, as 0.2 kept it
    other.create_run("only-here")
    assert ["only-here"] == [r["run_id"] for r in other.list_runs()]
    assert 10 == len(anyio.run(db.list_runs))

    url = other.records.url
    assert any(d.url == url for d in Database._registry.values())
    del other
    gc.collect()
    assert not any(d.url == url for d in Database._registry.values())
    assert [] == os.listdir(tmp_path)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:",
                                 "sqlite+aiosqlite:///:memory:"])
def test_in_memory_urls_are_in_memory_databases_too(url: str) -> None:
    """The URL spellings of an in-memory SQLite database work as ``":memory:"`` does."""
    db = WorkflowDB(url)
    Flow(start=Count(), db=db, run_id="m").run({"to": 3})
    assert ("completed", 3) == (db.get_run("m")["status"], db.get_run("m")["total_steps"])


def test_a_port_that_is_not_a_number_is_named_with_the_fix() -> None:
    """``host:notaport`` gives a ValueError naming the URL (password hidden), the port
    and how to write it, not int()'s message."""
    with pytest.raises(ValueError, match="port 'notaport' is not a number") as caught:
        WorkflowDB("postgresql://bob:hunter2@db.internal:notaport/prod")

    message = str(caught.value)
    assert "postgresql://bob:***@db.internal:notaport/prod" in message
    assert "hunter2" not in message
    assert "5432" in message
    assert "invalid literal" not in message


def test_a_full_database_file_is_named_with_the_fix(tmp_path: Path) -> None:
    """SQLite's own "database or disk is full" (here from a page limit) becomes a
    DatabaseFileError naming the file and saying how to go on."""
    import sqlite3

    from pocoflow.persistence.connect import explain, to_url

    path = tmp_path / "tiny.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.OperationalError, match="full") as caught:
        conn.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    conn.close()

    error = explain(caught.value, to_url(path))

    assert isinstance(error, DatabaseFileError)
    assert caught.value is error.__cause__
    assert f"Could not write to the database file {path}: its disk is full" in str(error)
    assert "flow.resume(run_id)" in str(error)
