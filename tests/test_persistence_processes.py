"""Several processes on one database, heartbeats of long steps, and secrets kept out of
messages: what a deployment relies on beyond one process."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pocoflow import AsyncNode, Flow, WorkflowDB
from pocoflow.persistence.connect import to_url
from pocoflow.persistence.database import Database
from tests.postgres_server import create_database

WRITER = textwrap.dedent("""
    import sys
    from pocoflow import Flow, Node

    class Step(Node):
        def post(self, store, prep_res, exec_res):
            store["n"] = store.get("n", 0) + 1
            store.setdefault("log", []).append(f"{sys.argv[2]}-{store['n']}")
            return "again" if store["n"] < 5 else "done"

    step = Step()
    step.then("again", step)
    flow = Flow(start=step, db_url=sys.argv[1], flow_name="proc-" + sys.argv[2])
    for _ in range(int(sys.argv[3])):
        flow.run({})
""")


def test_processes_writing_runs_to_one_database_at_once_lose_nothing(db_url: str,
                                                                     tmp_path: Path) -> None:
    """Three processes, each running 15 five-step flows on one database at the same time,
    all finish without 'database is locked' and every run is recorded whole."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    WorkflowDB(db_url)  # created and migrated once, so the processes race on writes only
    children = [subprocess.Popen([sys.executable, str(script), db_url, str(i), "15"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for i in range(3)]
    outputs = [child.communicate(timeout=120)[0] for child in children]

    assert [0, 0, 0] == [child.returncode for child in children], outputs
    db = WorkflowDB(db_url)
    runs = db.list_runs(100)
    assert 45 == len(runs)
    assert {("completed", 5)} == {(r["status"], r["total_steps"]) for r in runs}
    for run in runs[::9]:
        assert [0, 1, 2, 3, 4] == [c["step"] for c in db.get_checkpoints(run["run_id"])]
        store = db.load_checkpoint(run["run_id"], 4)
        who = run["flow_name"].removeprefix("proc-")
        assert [f"{who}-{n}" for n in range(1, 6)] == store["log"]


class LongStep(AsyncNode):
    """Sleeps for several lease periods inside one step."""

    async def exec_async(self, prep_res: object) -> None:
        import anyio

        await anyio.sleep(1.5)


@pytest.mark.anyio
async def test_a_step_longer_than_the_lease_keeps_its_run_running(db_url: str) -> None:
    """A node that runs for several lease periods keeps its run 'running' (the heartbeat
    thread refreshes it), not 'interrupted', as another reader sees it mid-step."""
    import anyio

    flow = Flow(start=LongStep(), db=WorkflowDB(db_url, lease_seconds=0.4), flow_name="long",
                run_id="long-run")
    reader = WorkflowDB(db_url, lease_seconds=0.4)
    seen: list[str] = []

    async def watch() -> None:
        await anyio.sleep(1.0)  # well past the lease, inside the step
        seen.append(reader.get_run("long-run")["status"])

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        await flow.run_async({})

    assert ["running"] == seen
    assert "completed" == reader.get_run("long-run")["status"]


def test_password_never_appears_in_errors_or_logs(postgres_base_url: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A database URL's password is hidden in PocoFlow's errors, reprs and log lines,
    while the lines that name the database are written."""
    secret = "hunter2-secret"
    with pytest.raises(ValueError, match="supports") as caught:
        WorkflowDB(f"mysql://admin:{secret}@127.0.0.1/db")
    assert secret not in str(caught.value)

    plain = create_database(postgres_base_url, "pf_test_secret")
    url = plain.replace("://postgres@", f"://postgres:{secret}@")  # the server trusts any
    with caplog.at_level(logging.DEBUG, logger="pocoflow"):
        db = WorkflowDB(url)
        Flow(start=AsyncNode(), db=db, flow_name="secret").run({})
    Database.forget(to_url(url))

    assert "Upgrading database postgresql+psycopg://postgres:***@" in caplog.text
    assert secret not in caplog.text
    assert secret not in repr(db)
    assert secret not in db.url


def test_forgetting_a_database_folds_the_wal_into_the_file(tmp_path: Path) -> None:
    """Database.forget checkpoints SQLite's WAL: the file alone holds every run."""
    path = tmp_path / "pocoflow.db"
    Flow(start=AsyncNode(), db_path=path, flow_name="x").run({})
    Database.forget(to_url(path))

    wal = Path(f"{path}-wal")
    assert (not wal.exists()) or 0 == wal.stat().st_size
    assert ["completed"] == [r["status"] for r in WorkflowDB(path).list_runs()]


def _record_in_child(db: WorkflowDB, run_id: str) -> None:
    Flow(start=AsyncNode(), db=db, flow_name="forked", run_id=run_id).run({})


def test_a_forked_child_uses_its_own_connections(tmp_path: Path) -> None:
    """A WorkflowDB opened before a fork works in the child: the child opens its own
    engine instead of sharing the parent's connections, and both runs are recorded."""
    import multiprocessing

    db = WorkflowDB(tmp_path / "pocoflow.db")
    Flow(start=AsyncNode(), db=db, flow_name="parent", run_id="before-fork").run({})
    child = multiprocessing.get_context("fork").Process(target=_record_in_child,
                                                        args=(db, "in-child"))
    child.start()
    child.join(60)

    assert 0 == child.exitcode
    Flow(start=AsyncNode(), db=db, flow_name="parent", run_id="after-fork").run({})
    assert {"before-fork", "in-child", "after-fork"} == {
        r["run_id"] for r in db.list_runs() if r["status"] == "completed"}
    assert f":{child.pid}:" in db.get_run("in-child")["owner"]  # its own engine and owner
