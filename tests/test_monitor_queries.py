"""Every query the monitor issues reads an index (SQLite's EXPLAIN QUERY PLAN).

The statements are captured while the monitor (headless) goes through every
filter, page, tab and action on a database of real runs; each is then explained
with its own parameters. Without ANALYZE, SQLite plans from the schema alone, so
the plans are those of a database of any size (benchmarks/monitor.py times them
at 100,000 runs).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.test_monitor import KEY, Recorded, monitor, pick, record_runs, write_flows

TABLES = ("pf_runs", "pf_events", "pf_checkpoints", "pf_run_inputs")
#: read when a database is opened (its schema revision), not by the monitor's pages
SCHEMA = ("alembic_version", "sqlite_master", "PRAGMA")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    import sys

    folder = tmp_path_factory.mktemp("plans")
    found = Recorded(folder / "plans.db", write_flows(folder / "flows"))
    record_runs(found)
    yield found
    sys.path.remove(str(found.flows_dir))


def capture() -> tuple[list[tuple[str, Any]], Any]:
    sent: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
             executemany: bool) -> None:
        sent.append((statement, parameters))

    return sent, grab


def use_every_part(at: Any) -> None:
    """Every filter, page and tab of the monitor, and a cancel."""
    for status in ("failed", "interrupted", "running", "paused", "all"):
        at.selectbox(key=f"{KEY}_status").set_value(status).run()
    at.text_input(key=f"{KEY}_flow").input("pipeline").run()
    at.text_input(key=f"{KEY}_search").input("mon-").run()
    at.selectbox(key=f"{KEY}_time").set_value("last hour").run()
    at.selectbox(key=f"{KEY}_status").set_value("failed").run()
    at.text_input(key=f"{KEY}_flow").input("").run()
    at.text_input(key=f"{KEY}_search").input("").run()
    at.selectbox(key=f"{KEY}_time").set_value("custom").run()
    at.date_input(key=f"{KEY}_since").set_value(dt.date(2020, 1, 1)).run()
    at.selectbox(key=f"{KEY}_status").set_value("all").run()
    at.selectbox(key=f"{KEY}_time").set_value("any time").run()
    at.selectbox(key=f"{KEY}_size").set_value(25).run()
    for run_id in ("mon-done", "mon-failed", "mon-nested", "mon-killed", "mon-paused"):
        pick(at, run_id)  # every tab of it renders
    at.select_slider(key=f"{KEY}_step_mon-paused").set_value("step 0").run()
    at.button(key=f"{KEY}_cancel_mon-paused").click().run()
    at.button(key=f"{KEY}_cancel_yes_mon-paused").click().run()


def plan(raw: sqlite3.Connection, statement: str, parameters: Any) -> list[str]:
    return [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]


def test_every_query_the_monitor_issues_uses_an_index(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each statement the monitor sends (reads of runs, counts, events, checkpoints,
    inputs; the cancel's writes) finds its rows through an index or primary key; a
    scan walks an index (a page newest first, or a covering index for counts); none
    sorts its result in a temporary B-tree (a GROUP BY of statuses may: at most seven
    groups)."""
    explained = explain(recorded.db, monkeypatch, use_every_part)

    touched = {t for s in explained for t in TABLES if f" {t}" in s}
    assert set(TABLES) == touched
    kinds = {s.split()[0].upper() for s in explained}
    assert {"SELECT", "UPDATE"} == kinds
    check_plans(explained)


def explain(db: Path, monkeypatch: pytest.MonkeyPatch, use: Any) -> dict[str, list[str]]:
    """The plan of every statement the monitor sends while *use* drives it."""
    sent, grab = capture()
    event.listen(Engine, "before_cursor_execute", grab)
    try:
        at = monitor(monkeypatch, db)
        use(at)
    finally:
        event.remove(Engine, "before_cursor_execute", grab)

    raw = sqlite3.connect(db)
    explained: dict[str, list[str]] = {}
    for statement, parameters in sent:
        words = statement.split()
        if not words or words[0].upper() in ("BEGIN", "COMMIT", "ROLLBACK") or any(
                s in statement for s in SCHEMA):
            continue
        key = " ".join(words)
        if key not in explained:
            explained[key] = plan(raw, statement, parameters)
    raw.close()
    return explained


def check_plans(explained: dict[str, list[str]]) -> None:
    for statement, lines in explained.items():
        for line in lines:
            if not any(t in line for t in TABLES) and "TEMP B-TREE" not in line:
                continue
            if "TEMP B-TREE" in line:
                assert "FOR GROUP BY" in line, (statement, lines)
                assert "GROUP BY pf_runs.status" in statement, (statement, lines)
                continue
            assert line.startswith(("SEARCH", "SCAN")), (statement, lines)
            assert "INDEX" in line or "PRIMARY KEY" in line, (statement, lines)
            if line.startswith("SCAN"):
                # a scan only of an index: the listing's, walked newest first until a page
                # is full (all runs, or a text search), or a covering one for counts
                if "count(*)" in statement:
                    assert "COVERING INDEX" in line, (statement, lines)
                else:
                    assert "ix_pf_runs_listing" in line, (statement, lines)
                    assert "ORDER BY pf_runs.started_at DESC" in statement, (statement, lines)
                    assert "LIMIT" in statement, (statement, lines)


def test_nested_runs_filtered_by_status_or_flow_are_read_in_index_order(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nested flows' runs shown, the status and flow filters read an index in the
    listing's order too."""
    def use(at: Any) -> None:
        at.checkbox(key=f"{KEY}_nested").check().run()
        at.selectbox(key=f"{KEY}_status").set_value("failed").run()
        at.selectbox(key=f"{KEY}_status").set_value("all").run()
        at.text_input(key=f"{KEY}_flow").input("inner").run()

    check_plans(explain(recorded.db, monkeypatch, use))


def test_the_listing_indexes_of_revision_0003_are_the_ones_used(
        recorded: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    """A page of runs by status, by flow, of top-level runs and of a parent's child runs
    each walks its own listing index."""
    sent, grab = capture()
    event.listen(Engine, "before_cursor_execute", grab)
    try:
        at = monitor(monkeypatch, recorded.db)
        at.selectbox(key=f"{KEY}_status").set_value("failed").run()
        at.selectbox(key=f"{KEY}_status").set_value("all").run()
        at.text_input(key=f"{KEY}_flow").input("pipeline").run()
    finally:
        event.remove(Engine, "before_cursor_execute", grab)
    raw = sqlite3.connect(recorded.db)
    used = {line for statement, parameters in sent if "ORDER BY pf_runs.started_at" in statement
            for line in plan(raw, statement, parameters)}
    raw.close()
    for index in ("ix_pf_runs_parent_listing", "ix_pf_runs_status_listing",
                  "ix_pf_runs_flow_listing"):
        assert any(index in line for line in used), (index, used)


def test_plans_hold_on_a_database_upgraded_from_pocoflow_021(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """0.2.1's file, upgraded on opening, gets the same indexes: its pages use them."""
    import shutil

    from tests.test_monitor import DB_021

    db = tmp_path / "old.db"
    shutil.copy(DB_021, db)
    sent, grab = capture()
    event.listen(Engine, "before_cursor_execute", grab)
    try:
        at = monitor(monkeypatch, db)
        pick(at, "greet-failed")
    finally:
        event.remove(Engine, "before_cursor_execute", grab)
    raw = sqlite3.connect(db)
    for statement, parameters in sent:
        if statement.lstrip().upper().startswith("SELECT") and not any(
                s in statement for s in SCHEMA):
            for line in plan(raw, statement, parameters):
                if any(t in line for t in TABLES):
                    assert "INDEX" in line or "PRIMARY KEY" in line, (statement, line)
    raw.close()
