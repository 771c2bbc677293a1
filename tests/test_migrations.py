"""Alembic migrations: new databases, the pocoflow 0.2.1 file, downgrade, newer revisions,
concurrent first opens, the alembic command line and the migrations inside a wheel."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from pocoflow import DatabaseVersionError, Flow, Node, ResumeError, Store, WorkflowDB
from pocoflow.persistence.connect import create_db_engine, to_url
from pocoflow.persistence.database import Database
from pocoflow.persistence.migrate import alembic_config, ensure_schema, head_revision
from pocoflow.persistence.models import Base

ROOT = Path(__file__).resolve().parent.parent
V021_DB = ROOT / "tests" / "data" / "pocoflow-0.2.1.db"
V02_RUNS = ("greet-completed", "greet-failed", "loop-completed", "nonjson", "stuck-running")
#: pocoflow 0.2.1's columns (pocoflow/db.py of that release), in order, with their types.
V02_COLUMNS = {
    "pf_runs": [("run_id", "TEXT"), ("flow_name", "TEXT"), ("status", "TEXT"),
                ("started_at", "TEXT"), ("completed_at", "TEXT"), ("total_steps", "INTEGER"),
                ("current_node", "TEXT"), ("error_msg", "TEXT")],
    "pf_checkpoints": [("id", "INTEGER"), ("run_id", "TEXT"), ("step", "INTEGER"),
                       ("node_name", "TEXT"), ("store_json", "TEXT"), ("created_at", "TEXT")],
    "pf_events": [("id", "INTEGER"), ("run_id", "TEXT"), ("step", "INTEGER"),
                  ("node_name", "TEXT"), ("event", "TEXT"), ("action", "TEXT"),
                  ("elapsed_ms", "REAL"), ("error_msg", "TEXT"), ("ts", "TEXT")],
}


class Tick(Node):
    """Counts ``i`` to 5 looping on itself ("again", then "done"), appends to ``trail``,
    deletes ``tmp`` at 2."""

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str | None:
        store["i"] += 1
        store["trail"].append(store["i"])
        if store["i"] == 2:
            del store["tmp"]
        if store["i"] == 3:
            store["seen"] = {"at": store["i"]}
        return "again" if store["i"] < 5 else "done"


class Mark(Node):
    """Sets ``store["marked"] = True``; the flow ends after it."""

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["marked"] = True


@contextmanager
def engine_of(url: str | Path) -> Iterator[Engine]:
    """An engine of our own (not the process-wide one WorkflowDB shares)."""
    engine = create_db_engine(to_url(url))
    try:
        yield engine
    finally:
        engine.dispose()


def copy_02(tmp_path: Path) -> Path:
    target = tmp_path / "old.db"
    shutil.copyfile(V021_DB, target)
    return target


def raw_rows(path: Path, table: str, query: str = "SELECT * FROM {} ORDER BY rowid",
             ) -> list[dict[str, Any]]:
    """A table's rows read with sqlite3 alone (read-only), in rowid order."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(query.format(table))]


def table_sql(path: Path) -> dict[str, str]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))


def revision_rows(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite") else None


def _plain(value: Any) -> Any:
    """An index as plain data (a partial index's WHERE is an object whose repr has an
    address): mappings and lists taken apart, anything else by its text."""
    if isinstance(value, dict):
        return repr(sorted((key, _plain(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return repr([_plain(item) for item in value])
    return value if isinstance(value, (int, bool, type(None))) else str(value)


def snapshot(engine: Engine) -> dict[str, Any]:
    """Every table's columns, indexes, checks and rows: what "untouched" compares."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        found = inspect(conn)
        for table in sorted(found.get_table_names()):
            rows = conn.execute(text(f"SELECT * FROM {table}")).all()
            out[table] = (
                [(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(table)],
                sorted(_plain(index) for index in found.get_indexes(table)),
                sorted(map(repr, found.get_check_constraints(table))),
                sorted(map(repr, rows)),
            )
    return out


# ── a new database ──────────────────────────────────────────────────────────


def test_new_database_is_at_head(db_url: str) -> None:
    """WorkflowDB builds an empty database at the head revision, with one version row."""
    WorkflowDB(db_url).list_runs()
    with engine_of(db_url) as engine:
        assert [head_revision()] == revision_rows(engine)
        assert {"pf_runs", "pf_events", "pf_checkpoints"} <= set(inspect(engine).get_table_names())


def test_autogenerate_finds_no_drift(db_url: str) -> None:
    """The migrated schema is exactly the ORM models: Alembic autogenerate finds no change."""
    WorkflowDB(db_url).list_runs()
    with engine_of(db_url) as engine, engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [] == diff


# ── the database written by pocoflow 0.2.1 ──────────────────────────────────


def test_02_file_is_upgraded_with_runs_and_row_counts_unchanged(tmp_path: Path) -> None:
    """Opening the 0.2.1 file takes it to head; its runs keep every 0.2 value, no row is lost."""
    path = copy_02(tmp_path)
    assert "alembic_version" not in table_sql(path)
    for table, columns in V02_COLUMNS.items():  # the constant is 0.2.1's DDL
        assert columns == [(c["name"], c["type"])
                           for c in raw_rows(path, table, "PRAGMA table_info({})")]
    before = {t: raw_rows(path, t) for t in V02_COLUMNS}

    db = WorkflowDB(path)
    with engine_of(path) as engine:
        assert [head_revision()] == revision_rows(engine)
    assert {t: len(rows) for t, rows in before.items()} == {
        t: len(raw_rows(path, t)) for t in V02_COLUMNS}
    runs = db.list_runs()
    assert sorted(V02_RUNS) == sorted(r["run_id"] for r in runs)
    names = [n for n, _ in V02_COLUMNS["pf_runs"]]
    assert sorted(before["pf_runs"], key=lambda r: r["run_id"]) == sorted(
        ({n: r[n] for n in names} for r in runs), key=lambda r: r["run_id"])
    by_id = {r["run_id"]: r for r in runs}
    assert {"greet-completed": "completed", "greet-failed": "failed",
            "loop-completed": "completed", "nonjson": "completed",
            "stuck-running": "running"} == {k: r["status"] for k, r in by_id.items()}
    assert {"greet-completed": 3, "greet-failed": 1, "loop-completed": 6, "nonjson": 1,
            "stuck-running": 1} == {k: r["total_steps"] for k, r in by_id.items()}
    assert "boom at step 1" == by_id["greet-failed"]["error_msg"]


def test_02_events_read_back_as_written(tmp_path: Path) -> None:
    """get_events of an upgraded 0.2 file returns the 0.2 rows, every 0.2 column the same."""
    path = copy_02(tmp_path)
    raw = raw_rows(path, "pf_events")
    names = [n for n, _ in V02_COLUMNS["pf_events"]]
    db = WorkflowDB(path)
    for run_id in V02_RUNS:
        expected = [r for r in raw if r["run_id"] == run_id]
        got = db.get_events(run_id)
        assert expected == [{n: e[n] for n in names} for e in got]
        assert all(e["detail"] is None for e in got)
    assert 35 == len(raw)


def test_02_checkpoints_load_the_stores_0_2_wrote(tmp_path: Path) -> None:
    """get_checkpoints and load_checkpoint of an upgraded 0.2 file give 0.2's store_json."""
    path = copy_02(tmp_path)
    raw = raw_rows(path, "pf_checkpoints")
    db = WorkflowDB(path)
    for run_id in V02_RUNS:
        expected = [r for r in raw if r["run_id"] == run_id]
        got = db.get_checkpoints(run_id)
        assert [(r["step"], r["node_name"], json.loads(r["store_json"])) for r in expected] == [
            (c["step"], c["node_name"], json.loads(c["store_json"])) for c in got]
        assert all("full" == c["kind"] for c in got)
        for row in expected:
            assert json.loads(row["store_json"]) == dict(db.load_checkpoint(run_id, row["step"]))
    assert {"i": 6, "trail": [1, 2, 3, 4, 5, 6]} == dict(db.load_checkpoint("loop-completed", 5))
    odd = dict(db.load_checkpoint("nonjson", 0))
    assert "<non-serialisable: set>" == odd["tags"]
    assert "héllo ✓" == odd["unicode"]


def test_02_file_records_new_runs_next_to_old_ones(tmp_path: Path) -> None:
    """A Flow with db_path= the 0.2 file records its run there; the old runs stay as they were."""
    path = copy_02(tmp_path)
    old = {r["run_id"]: r for r in WorkflowDB(path).list_runs()}
    max_event_id = max(r["id"] for r in raw_rows(path, "pf_events"))

    result = Flow(start=Mark(), db_path=path, flow_name="fresh", run_id="fresh-1").run(Store({}))

    assert result["marked"] is True
    db = WorkflowDB(path)
    runs = {r["run_id"]: r for r in db.list_runs()}
    assert {*V02_RUNS, "fresh-1"} == set(runs)
    assert "completed" == runs["fresh-1"]["status"]
    assert old == {k: v for k, v in runs.items() if k != "fresh-1"}
    events = db.get_events("fresh-1")
    assert ["flow_start", "node_start", "node_end", "flow_end"] == [e["event"] for e in events]
    assert all(e["id"] > max_event_id for e in events)
    assert {"marked": True} == dict(db.load_checkpoint("fresh-1", 0))


def test_02_status_check_accepts_cancelled_and_still_checks(tmp_path: Path) -> None:
    """After the upgrade the 0.2 CHECK takes 'cancelled' and still refuses unknown statuses."""
    path = copy_02(tmp_path)
    db = WorkflowDB(path)
    db.create_run("to-cancel", "x")
    db.update_run("to-cancel", status="cancelled")
    assert "cancelled" == db.get_run("to-cancel")["status"]
    with closing(sqlite3.connect(path)) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE pf_runs SET status = 'bogus' WHERE run_id = 'to-cancel'")


def test_02_tables_keep_their_ids_and_new_ids_follow_them(tmp_path: Path) -> None:
    """The upgrade rebuilds pf_checkpoints and pf_events (no AUTOINCREMENT: it costs a page
    per commit) keeping every id, and a new run's rows get ids above the old ones."""
    path = copy_02(tmp_path)
    before = {t: [r["id"] for r in raw_rows(path, t)] for t in ("pf_checkpoints", "pf_events")}
    WorkflowDB(path).list_runs()
    tables = table_sql(path)
    assert "AUTOINCREMENT" not in tables["pf_checkpoints"].upper()
    assert "AUTOINCREMENT" not in tables["pf_events"].upper()
    assert before == {t: [r["id"] for r in raw_rows(path, t)] for t in before}
    Flow(start=Mark(), db_path=path, flow_name="after").run({})
    Database.forget(to_url(path))
    for table, ids in before.items():
        new_ids = [r["id"] for r in raw_rows(path, table)][len(ids):]
        assert new_ids
        assert min(new_ids) > max(ids)


def test_02_failed_run_resume_says_what_to_do(tmp_path: Path) -> None:
    """Resuming a 0.2 failed run (no next node recorded) is a ResumeError that says what to do."""
    path = copy_02(tmp_path)
    flow = Flow(start=Mark(), db_path=path, flow_name="greet")
    with pytest.raises(ResumeError) as caught:
        flow.resume("greet-failed")
    message = str(caught.value)
    assert "greet-failed" in message
    assert "0.2" in message
    assert "load_checkpoint" in message
    assert "resume_from" in message
    assert "failed" == WorkflowDB(path).get_run("greet-failed")["status"]


def test_02_stuck_running_run_status_agrees_with_status_filter(tmp_path: Path) -> None:
    """list_runs(status=S) finds the ownerless 0.2 'running' run exactly when it shows as S."""
    path = copy_02(tmp_path)
    db = WorkflowDB(path)
    shown = db.get_run("stuck-running")["status"]
    for status in ("running", "interrupted"):
        found = [r["run_id"] for r in db.list_runs(status=status)]
        assert (["stuck-running"] if status == shown else []) == found, (
            f"get_run shows {shown!r}; list_runs(status={status!r}) gives {found}")


def test_02_stuck_running_run_resume_error_names_no_missing_process(tmp_path: Path) -> None:
    """Resuming the ownerless 0.2 'running' run fails clearly, not with "process None on None"."""
    path = copy_02(tmp_path)
    flow = Flow(start=Mark(), db_path=path, flow_name="stuck")
    with pytest.raises(ResumeError) as caught:
        flow.resume("stuck-running")
    assert "None" not in str(caught.value)


# ── downgrade to 0.2 and back ───────────────────────────────────────────────


def test_downgrade_to_02_schema_and_back(db_url: str) -> None:
    """Downgrading to 0001 leaves 0.2's schema with full snapshots and cancelled → failed;
    upgrading again works and loads the same stores."""
    tick = Tick()
    tick.then("again", tick).then("done", Mark())
    Flow(start=tick, db_url=db_url, flow_name="loop", run_id="delta-run").run(
        Store({"i": 0, "trail": [], "tmp": "x", "pad": "p" * 400}))
    db = WorkflowDB(db_url)
    db.create_run("cancel-me", "c")
    db.update_run("cancel-me", status="cancelled")
    kinds = [c["kind"] for c in db.get_checkpoints("delta-run")]
    assert "full" == kinds[0]
    assert "delta" in kinds
    stores = {c["step"]: dict(db.load_checkpoint("delta-run", c["step"]))
              for c in db.get_checkpoints("delta-run")}
    assert 6 == len(stores)
    Database.forget(to_url(db_url))

    with engine_of(db_url) as engine:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0001")
        assert ["0001"] == revision_rows(engine)
        with engine.connect() as conn:
            found = inspect(conn)
            assert set(V02_COLUMNS) | {"alembic_version"} == set(found.get_table_names())
            for table, columns in V02_COLUMNS.items():
                if engine.dialect.name != "sqlite":  # 0.2's REAL is 4 bytes on PostgreSQL
                    columns = [(n, "DOUBLE PRECISION" if n == "elapsed_ms" else t)
                               for n, t in columns]
                assert columns == [(c["name"], str(c["type"]))
                                   for c in found.get_columns(table)]
                assert [] == [i for i in found.get_indexes(table) if not i.get("unique")]
            run = conn.execute(text("SELECT status, error_msg FROM pf_runs "
                                    "WHERE run_id = 'cancel-me'")).one()
            rows = conn.execute(text("SELECT step, store_json FROM pf_checkpoints "
                                     "WHERE run_id = 'delta-run' ORDER BY step")).all()
        assert ("failed", "cancelled") == tuple(run)
        assert stores == {step: json.loads(store_json) for step, store_json in rows}
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE pf_runs SET status = 'cancelled' "
                              "WHERE run_id = 'cancel-me'"))
    path = sqlite_path(db_url)
    if path is not None:
        assert "AUTOINCREMENT" in table_sql(path)["pf_checkpoints"].upper()
        assert "AUTOINCREMENT" in table_sql(path)["pf_events"].upper()

    again = WorkflowDB(db_url)  # a database at an older revision: upgraded on open
    with engine_of(db_url) as engine:
        assert [head_revision()] == revision_rows(engine)
    assert stores == {c["step"]: dict(again.load_checkpoint("delta-run", c["step"]))
                      for c in again.get_checkpoints("delta-run")}
    assert "failed" == again.get_run("cancel-me")["status"]


# ── a database newer than this code ─────────────────────────────────────────


def test_newer_revision_is_refused_and_left_untouched(db_url: str) -> None:
    """A database at an unknown revision raises DatabaseVersionError naming both revisions,
    and is not modified (SQLite: the same bytes; PostgreSQL: same schema and rows)."""
    db = WorkflowDB(db_url)
    db.create_run("r1", "f")
    db.save_event("r1", "flow_start", node_name="A")
    db.save_checkpoint("r1", 0, "A", {"k": [1, 2]})
    Database.forget(to_url(db_url))
    with engine_of(db_url) as engine, engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    path = sqlite_path(db_url)
    if path is not None:
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        digest = sha256(path)
    with engine_of(db_url) as engine:
        before = snapshot(engine)

    with pytest.raises(DatabaseVersionError) as caught:
        WorkflowDB(db_url)
    message = str(caught.value)
    del caught  # its traceback holds the refused engine: a connection left open by the
    gc.collect()  # refusal is a ResourceWarning (psycopg), so an error, here

    assert "ffff9999" in message
    assert head_revision() in message
    if path is not None:
        assert digest == sha256(path)
    with engine_of(db_url) as engine:
        assert before == snapshot(engine)


def test_newer_revision_file_in_rollback_journal_mode_is_left_untouched(tmp_path: Path) -> None:
    """A refused newer SQLite file that is not in WAL mode is not switched to WAL either."""
    path = tmp_path / "newer.db"
    with engine_of(path) as engine:
        ensure_schema(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
    with closing(sqlite3.connect(path)) as conn:
        assert "delete" == conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
    digest = sha256(path)

    with pytest.raises(DatabaseVersionError):
        WorkflowDB(path)

    assert digest == sha256(path)


# ── concurrent first opens ──────────────────────────────────────────────────


def test_threads_opening_a_new_database_at_once_all_succeed(db_url: str) -> None:
    """8 threads opening one new database at once (WorkflowDB, or an engine of their own each)
    all succeed, and the database ends at head with one version row."""
    barrier = threading.Barrier(8)

    def open_one(i: int) -> str:
        barrier.wait()
        if i % 2:
            WorkflowDB(db_url).list_runs()
            return head_revision()
        with engine_of(db_url) as engine:
            return ensure_schema(engine)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(open_one, range(8)))

    assert [head_revision()] * 8 == results
    with engine_of(db_url) as engine:
        assert [head_revision()] == revision_rows(engine)


def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """4 processes opening one new SQLite file at once all succeed; it ends at head."""
    path = tmp_path / "shared.db"
    code = ("import sys\nfrom pocoflow import WorkflowDB\nprint('ready', flush=True)\n"
            "sys.stdin.readline()\ndb = WorkflowDB(sys.argv[1])\ndb.create_run(sys.argv[2])\n"
            "print(len(db.list_runs(1000)))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"run-{i}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    for proc in procs:  # every child has imported pocoflow: release them together
        assert "ready\n" == proc.stdout.readline()  # type: ignore[union-attr]
    for proc in procs:
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
    outcomes = [proc.communicate(timeout=120) for proc in procs]

    assert [0] * 4 == [proc.returncode for proc in procs], outcomes
    with engine_of(path) as engine:
        assert [head_revision()] == revision_rows(engine)
    assert {f"run-{i}" for i in range(4)} == {r["run_id"] for r in WorkflowDB(path).list_runs()}


# ── the alembic command line, from the repository root ──────────────────────


@pytest.mark.parametrize("start", ["empty", "pocoflow-0.2.1"])
def test_alembic_command_upgrades_to_head(tmp_path: Path, start: str) -> None:
    """`alembic -x db=PATH upgrade head` from the repo root upgrades a new file and the 0.2.1
    file (keeping its runs); `alembic -x db=PATH current` then shows the head."""
    path = tmp_path / "new.db" if start == "empty" else copy_02(tmp_path)
    alembic = shutil.which("alembic")
    assert alembic is not None

    upgraded = subprocess.run([alembic, "-x", f"db={path}", "upgrade", "head"], cwd=ROOT,
                              capture_output=True, text=True, check=False)
    current = subprocess.run([alembic, "-x", f"db={path}", "current"], cwd=ROOT,
                             capture_output=True, text=True, check=False)

    assert 0 == upgraded.returncode, upgraded.stderr
    assert 0 == current.returncode, current.stderr
    assert f"{head_revision()} (head)" in current.stdout
    with engine_of(path) as engine:
        assert [head_revision()] == revision_rows(engine)
    expected = [] if start == "empty" else sorted(V02_RUNS)
    assert expected == sorted(r["run_id"] for r in WorkflowDB(path).list_runs())


# ── an installed wheel carries the migrations ───────────────────────────────


def test_wheel_install_migrates_without_a_checkout(tmp_path: Path) -> None:
    """A wheel holds pocoflow/_migrations; installed in a venv it builds a new database from
    its own migrations, run from a folder outside the checkout."""
    source = tmp_path / "src"  # a clean copy: no stale build/ or egg-info of the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "*.db", "*.db-*", ".*_cache"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(source)], check=True, capture_output=True)
    (wheel,) = dist.glob("pocoflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pocoflow/_migrations/env.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
               for n in names), names
    assert "pocoflow/_migrations/script.py.mako" in names
    for revision in ("0001", "0002", "0003", "0004", "0005"):
        assert any(n.startswith(f"pocoflow/_migrations/versions/{revision}") and n.endswith(".py")
                   for n in names), names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    # pocoflow's dependencies come from the environment running these tests (a venv or
    # not), listed by path: a .pth line adds a folder without running that folder's own
    # .pth files, so the checkout's editable install does not shadow the wheel
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.stdout.strip()) / "_outer_env.pth").write_text("\n".join(sorted(ours)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q",
                    str(wheel)], check=True, capture_output=True, env=env)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    code = (
        "from pocoflow import Flow, Node, Store, WorkflowDB\n"
        "from pocoflow.persistence.migrate import head_revision, migrations_dir, revision_of\n"
        "from pocoflow.persistence.connect import create_db_engine, to_url\n"
        "class One(Node):\n"
        "    def post(self, store, prep_res, exec_res):\n"
        "        store['one'] = 1\n"
        "db = WorkflowDB('wheel.db')\n"
        "Flow(start=One(), db=db, flow_name='w', run_id='w-1').run(Store({}))\n"
        "print(db.get_run('w-1')['status'])\n"
        "print(revision_of(create_db_engine(to_url('wheel.db'))) == head_revision())\n"
        "print(migrations_dir())\n"
    )
    done = subprocess.run([str(python), "-c", code], cwd=outside, capture_output=True,
                          text=True, check=False, env=env)

    assert 0 == done.returncode, done.stderr
    status, at_head, migrations = done.stdout.splitlines()
    assert "completed" == status
    assert "True" == at_head
    assert Path(migrations).resolve().is_relative_to(venv.resolve())
    assert not Path(migrations).resolve().is_relative_to(ROOT)
    assert (outside / "wheel.db").exists()
