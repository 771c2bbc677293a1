"""A process that opened a database notices when another process migrates it past what
this PocoFlow knows: opening it again, starting a run and resuming one are refused as a
new process refuses it (DatabaseVersionError), and nothing is written."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text

from pocoflow import DatabaseVersionError, Flow, Node, Store, WorkflowDB
from pocoflow.persistence.migrate import head_revision

FUTURE = "9999_from_a_newer_pocoflow"


class Step(Node):
    """Counts its exec calls; fails while ``store["fail"]`` is set."""

    calls = 0

    def prep(self, store: Store) -> Any:
        return store.get("fail", False)

    def exec(self, fail: Any) -> None:
        Step.calls += 1
        if fail:
            raise RuntimeError("first try fails")

    def post(self, store: Store, prep_res: Any, exec_res: Any) -> None:
        store["done"] = True


def move_schema(url: str, revision: str) -> None:
    """What another process's migration leaves: alembic_version at *revision*."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


def counts(url: str) -> tuple[int, int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                         for table in ("pf_runs", "pf_events", "pf_checkpoints"))  # type: ignore[return-value]
    finally:
        engine.dispose()


def test_a_schema_moved_by_another_process_is_refused_and_left_untouched(db_url: str) -> None:
    """After another process moved alembic_version to a revision this PocoFlow does not
    know: a new WorkflowDB, a new run of an already-open Flow and the resume of a failed
    run each raise DatabaseVersionError naming the revision; no node runs and no row is
    written. Moved back, everything works again."""
    db = WorkflowDB(db_url)
    flow = Flow(start=Step(), db=db, flow_name="moved")
    flow.run(Store({}))
    failing = Flow(start=Step(), db=db, run_id="to-resume")
    with pytest.raises(RuntimeError):
        failing.run(Store({"fail": True}))
    before = counts(db_url)
    calls = Step.calls

    move_schema(db_url, FUTURE)

    with pytest.raises(DatabaseVersionError, match=FUTURE):
        WorkflowDB(db_url)
    with pytest.raises(DatabaseVersionError, match=FUTURE):
        flow.run(Store({}))
    with pytest.raises(DatabaseVersionError, match=FUTURE):
        failing.resume("to-resume", updates={"fail": False})
    assert calls == Step.calls
    assert before == counts(db_url)
    assert "failed" == db.get_run("to-resume")["status"]

    move_schema(db_url, head_revision())
    failing.resume("to-resume", updates={"fail": False})
    assert "completed" == WorkflowDB(db_url).get_run("to-resume")["status"]
