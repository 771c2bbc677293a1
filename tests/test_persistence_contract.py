"""The run database contract: WorkflowDB and AsyncWorkflowDB on every backend.

Each test takes the ``db_url`` fixture, so it runs on a SQLite file and on a
real PostgreSQL server. The 0.2 methods are called exactly as pocoflow 0.2's
``Flow.run`` and its users called them. Flows writing to the database are in
``test_persistence_flows.py``.
"""

from __future__ import annotations

import json
import logging
import socket
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from pocoflow import AsyncWorkflowDB, RunNotFoundError, Store, WorkflowDB

# The columns pocoflow 0.2 returned; newer columns may come on top of them.
RUN_KEYS_02 = {"run_id", "flow_name", "status", "started_at", "completed_at", "total_steps",
               "current_node", "error_msg"}
EVENT_KEYS_02 = {"id", "run_id", "step", "node_name", "event", "action", "elapsed_ms",
                 "error_msg", "ts"}
CHECKPOINT_KEYS_02 = {"id", "run_id", "step", "node_name", "store_json", "created_at"}


def iso(seconds_ago: float = 0.0) -> str:
    """A UTC timestamp *seconds_ago* seconds back, written as PocoFlow writes them."""
    moment = datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)
    return moment.isoformat(timespec="microseconds")


def at(second: int) -> str:
    """A fixed ``started_at`` that sorts by *second* (so ordering never depends on a clock)."""
    return (datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=second)).isoformat(
        timespec="microseconds")


def make_runs(db: WorkflowDB, specs: list[tuple[str, str, str, int]]) -> None:
    """Create runs from (run_id, flow_name, status, started_at second) tuples."""
    for run_id, flow_name, status, second in specs:
        db.create_run(run_id, flow_name)
        db.update_run(run_id, status=status, started_at=at(second))


# ── runs ────────────────────────────────────────────────────────────────────


def test_create_run_inserts_a_running_run_with_02_keys(db_url: str) -> None:
    """create_run inserts a run in status running with every column 0.2 returned."""
    db = WorkflowDB(db_url)
    db.create_run("r1", flow_name="greet")

    run = db.get_run("r1")

    assert run is not None
    assert RUN_KEYS_02 <= set(run)
    assert ("r1", "greet", "running") == (run["run_id"], run["flow_name"], run["status"])
    assert (None, None, None) == (run["completed_at"], run["total_steps"], run["error_msg"])
    assert datetime.fromisoformat(run["started_at"]).tzinfo is not None


def test_create_run_is_ignored_when_the_run_exists(db_url: str) -> None:
    """A second create_run of one run_id changes nothing (0.2's INSERT OR IGNORE)."""
    db = WorkflowDB(db_url)
    db.create_run("r1", flow_name="first")
    db.update_run("r1", status="completed", total_steps=3)
    before = db.get_run("r1")

    db.create_run("r1", flow_name="second")

    assert before == db.get_run("r1")
    assert 1 == len(db.list_runs())


def test_update_run_sets_the_02_fields(db_url: str) -> None:
    """update_run writes status, completed_at, total_steps, current_node and error_msg."""
    db = WorkflowDB(db_url)
    db.create_run("r1", "greet")
    stamp = iso()

    db.update_run("r1", current_node="Load")
    db.update_run("r1", total_steps=2)
    db.update_run("r1", status="failed", error_msg="boom", completed_at=stamp)

    run = db.get_run("r1")
    assert run is not None
    assert {"status": "failed", "error_msg": "boom", "completed_at": stamp, "total_steps": 2,
            "current_node": "Load"} == {k: run[k] for k in
                                        ("status", "error_msg", "completed_at", "total_steps",
                                         "current_node")}


def test_get_run_returns_none_for_an_unknown_run(db_url: str) -> None:
    """get_run of a run_id never created is None, not an error."""
    db = WorkflowDB(db_url)
    db.create_run("known")

    assert db.get_run("unknown") is None


def test_list_runs_is_newest_first_and_honours_limit(db_url: str) -> None:
    """list_runs returns runs by started_at, newest first, at most *limit* of them."""
    db = WorkflowDB(db_url)
    make_runs(db, [("old", "f", "completed", 1), ("newest", "f", "completed", 3),
                   ("middle", "f", "completed", 2)])

    assert ["newest", "middle", "old"] == [r["run_id"] for r in db.list_runs()]
    assert ["newest", "middle"] == [r["run_id"] for r in db.list_runs(2)]
    assert ["newest"] == [r["run_id"] for r in db.list_runs(limit=1)]
    assert all(RUN_KEYS_02 <= set(r) for r in db.list_runs())


def test_list_runs_filters_by_status_and_flow_name(db_url: str) -> None:
    """status= and flow_name= each narrow list_runs, and combine with AND."""
    db = WorkflowDB(db_url)
    make_runs(db, [("a1", "alpha", "completed", 1), ("a2", "alpha", "failed", 2),
                   ("b1", "beta", "completed", 3), ("b2", "beta", "paused", 4),
                   ("a3", "alpha", "completed", 5)])

    def ids(**filters: Any) -> list[str]:
        return [r["run_id"] for r in db.list_runs(**filters)]

    assert ["a3", "b1", "a1"] == ids(status="completed")
    assert ["a3", "a2", "a1"] == ids(flow_name="alpha")
    assert ["a3", "a1"] == ids(status="completed", flow_name="alpha")
    assert ["b2"] == ids(status="paused")
    assert [] == ids(status="cancelled")
    assert [] == ids(flow_name="gamma")


def test_list_runs_pages_are_stable_and_do_not_overlap(db_url: str) -> None:
    """limit/offset pages, ties in started_at included, add up to the full list exactly once."""
    db = WorkflowDB(db_url)
    make_runs(db, [(f"run-{n:02d}", "f", "completed", n // 3) for n in range(23)])
    everything = [r["run_id"] for r in db.list_runs(limit=100)]

    pages = [[r["run_id"] for r in db.list_runs(limit=5, offset=offset)]
             for offset in range(0, 25, 5)]

    assert 23 == len(set(everything))
    assert [5, 5, 5, 5, 3] == [len(page) for page in pages]
    assert everything == [run_id for page in pages for run_id in page]
    assert pages == [[r["run_id"] for r in db.list_runs(limit=5, offset=offset)]
                     for offset in range(0, 25, 5)]
    assert [] == db.list_runs(limit=5, offset=23)


def test_list_runs_pages_a_filtered_list(db_url: str) -> None:
    """Paging applies after the filter: pages of one status hold only that status."""
    db = WorkflowDB(db_url)
    make_runs(db, [(f"run-{n:02d}", "f", "failed" if n % 2 else "completed", n)
                   for n in range(10)])

    first = db.list_runs(limit=3, status="failed")
    second = db.list_runs(limit=3, offset=3, status="failed")

    assert ["run-09", "run-07", "run-05"] == [r["run_id"] for r in first]
    assert ["run-03", "run-01"] == [r["run_id"] for r in second]


# ── events ──────────────────────────────────────────────────────────────────


def test_events_come_back_in_order_with_02_keys(db_url: str) -> None:
    """save_event rows (0.2 keyword set, ts given or not) come back in insertion order."""
    db = WorkflowDB(db_url)
    db.create_run("r1", "greet")
    stamp = iso()
    db.save_event("r1", "flow_start", node_name="Load", ts=stamp)
    db.save_event("r1", "node_start", step=0, node_name="Load")
    db.save_event("r1", "node_end", step=0, node_name="Load", action="default",
                  elapsed_ms=1.5)
    db.save_event("r1", "node_error", step=1, node_name="Save", error_msg="boom")
    db.save_event("r1", "flow_end", step=1)

    events = db.get_events("r1")

    assert all(EVENT_KEYS_02 <= set(e) for e in events)
    assert ["flow_start", "node_start", "node_end", "node_error", "flow_end"] == [
        e["event"] for e in events]
    assert [None, 0, 0, 1, 1] == [e["step"] for e in events]
    assert stamp == events[0]["ts"]
    assert all(e["ts"] for e in events)
    assert ("default", 1.5) == (events[2]["action"], events[2]["elapsed_ms"])
    assert ("Save", "boom") == (events[3]["node_name"], events[3]["error_msg"])
    assert sorted(e["id"] for e in events) == [e["id"] for e in events]
    assert [] == db.get_events("no-such-run")


def test_events_of_two_runs_stay_apart(db_url: str) -> None:
    """get_events returns only the events of the run asked for."""
    db = WorkflowDB(db_url)
    for run_id in ("r1", "r2"):
        db.create_run(run_id)
    db.save_event("r1", "flow_start")
    db.save_event("r2", "flow_start")
    db.save_event("r1", "flow_end", step=0)

    assert [("r1", "flow_start"), ("r1", "flow_end")] == [
        (e["run_id"], e["event"]) for e in db.get_events("r1")]
    assert ["flow_start"] == [e["event"] for e in db.get_events("r2")]


# ── checkpoints ─────────────────────────────────────────────────────────────


def test_checkpoints_round_trip(db_url: str) -> None:
    """save_checkpoint → get_checkpoints (0.2 keys, by step) and load_checkpoint (a Store)."""
    db = WorkflowDB(db_url)
    db.create_run("r1", "greet")
    db.save_checkpoint("r1", 1, "Transform", Store({"name": "world", "words": ["hello"]}))
    db.save_checkpoint("r1", 0, "Load", Store({"name": "world", "nested": {"a": [1, 2]}}))

    rows = db.get_checkpoints("r1")
    loaded = db.load_checkpoint("r1", 1)

    assert all(CHECKPOINT_KEYS_02 <= set(row) for row in rows)
    assert [(0, "Load"), (1, "Transform")] == [(row["step"], row["node_name"]) for row in rows]
    assert {"name": "world", "nested": {"a": [1, 2]}} == json.loads(rows[0]["store_json"])
    assert {"name": "world", "words": ["hello"]} == json.loads(rows[1]["store_json"])
    assert isinstance(loaded, Store)
    assert {"name": "world", "words": ["hello"]} == loaded.as_dict()
    assert {"name": "world", "nested": {"a": [1, 2]}} == db.load_checkpoint("r1", 0).as_dict()


def test_save_checkpoint_replaces_the_same_step(db_url: str) -> None:
    """Saving a step again replaces its checkpoint (0.2's INSERT OR REPLACE)."""
    db = WorkflowDB(db_url)
    db.create_run("r1")
    db.save_checkpoint("r1", 0, "First", Store({"v": 1, "gone": True}))
    db.save_checkpoint("r1", 0, "Retry", Store({"v": 2}))

    rows = db.get_checkpoints("r1")

    assert [(0, "Retry")] == [(row["step"], row["node_name"]) for row in rows]
    assert {"v": 2} == json.loads(rows[0]["store_json"])
    assert {"v": 2} == db.load_checkpoint("r1", 0).as_dict()


@pytest.mark.parametrize(("run_id", "step"), [("r1", 5), ("unknown-run", 0)])
def test_load_checkpoint_of_a_missing_step_raises_key_error(db_url: str, run_id: str,
                                                           step: int) -> None:
    """load_checkpoint of a step or run with no checkpoint raises KeyError naming the run."""
    db = WorkflowDB(db_url)
    db.create_run("r1")
    db.save_checkpoint("r1", 0, "Load", Store({"v": 1}))

    with pytest.raises(KeyError, match=run_id) as caught:
        db.load_checkpoint(run_id, step)

    assert isinstance(caught.value, RunNotFoundError)


# ── bad input ───────────────────────────────────────────────────────────────


def test_update_run_ignores_unknown_fields_with_a_warning_and_keeps_the_known_ones(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Unknown update_run fields are ignored, as in pocoflow 0.2 (a custom runner's own
    bookkeeping), with a WARNING on pocoflow.db naming them; the known fields are set."""
    db = WorkflowDB(db_url)
    db.create_run("r1")

    with caplog.at_level(logging.WARNING, logger="pocoflow"):
        db.update_run("r1", status="failed", stauts="failed", worker="host-3")

    run = db.get_run("r1")
    assert run is not None
    assert "failed" == run["status"]
    assert "stauts" not in run
    (record,) = caplog.records
    assert ("pocoflow.db", logging.WARNING) == (record.name, record.levelno)
    assert "['stauts', 'worker']" in record.getMessage()
    assert "'r1'" in record.getMessage()


def test_update_run_with_only_unknown_fields_writes_nothing(db_url: str) -> None:
    """update_run with nothing it knows leaves the run as it was."""
    db = WorkflowDB(db_url)
    db.create_run("r1")
    before = db.get_run("r1")

    db.update_run("r1", retries=0)

    assert before == db.get_run("r1")


def test_update_run_with_a_bad_status_raises_value_error(db_url: str) -> None:
    """A status outside the known set is a ValueError naming it, and nothing is written."""
    db = WorkflowDB(db_url)
    db.create_run("r1")

    with pytest.raises(ValueError, match="finished"):
        db.update_run("r1", status="finished", total_steps=4)

    run = db.get_run("r1")
    assert run is not None
    assert ("running", None) == (run["status"], run["total_steps"])


@pytest.mark.parametrize("status", ["done", "RUNNING", ""])
def test_list_runs_with_a_bad_status_raises_value_error(db_url: str, status: str) -> None:
    """list_runs(status=...) with an unknown status is a ValueError naming it."""
    db = WorkflowDB(db_url)

    with pytest.raises(ValueError, match=repr(status)):
        db.list_runs(status=status)


# ── the async twin ──────────────────────────────────────────────────────────


@pytest.mark.anyio
async def test_async_workflow_db_keeps_the_02_contract(db_url: str) -> None:
    """AsyncWorkflowDB's awaitable methods behave as WorkflowDB's, on asyncio and trio."""
    db = await AsyncWorkflowDB(db_url).open()
    await db.create_run("r1", "greet")
    await db.create_run("r1", "ignored")
    await db.update_run("r1", started_at=at(1))
    await db.create_run("r2", "other")
    await db.update_run("r2", status="completed", total_steps=1, started_at=at(2))
    await db.save_event("r1", "flow_start", node_name="Load")
    await db.save_event("r1", "node_end", step=0, node_name="Load", action="default",
                        elapsed_ms=2.0)
    await db.save_checkpoint("r1", 0, "Load", Store({"v": 1}))
    await db.save_checkpoint("r1", 0, "Load", Store({"v": 2}))

    r1 = await db.get_run("r1")
    assert r1 is not None
    assert ("greet", "running") == (r1["flow_name"], r1["status"])
    assert await db.get_run("nope") is None
    assert ["r2", "r1"] == [r["run_id"] for r in await db.list_runs()]
    assert ["r1"] == [r["run_id"] for r in await db.list_runs(1, offset=1)]
    assert ["r2"] == [r["run_id"] for r in await db.list_runs(status="completed")]
    assert ["flow_start", "node_end"] == [e["event"] for e in await db.get_events("r1")]
    assert [{"v": 2}] == [json.loads(c["store_json"]) for c in await db.get_checkpoints("r1")]
    assert {"v": 2} == (await db.load_checkpoint("r1", 0)).as_dict()
    with pytest.raises(KeyError):
        await db.load_checkpoint("r1", 1)
    await db.update_run("r1", colour="red", total_steps=7)  # unknown: ignored (as in 0.2)
    assert 7 == (await db.get_run("r1"))["total_steps"]  # type: ignore[index]
    with pytest.raises(ValueError, match="sideways"):
        await db.update_run("r1", status="sideways")
    with pytest.raises(ValueError, match="sideways"):
        await db.list_runs(status="sideways")


@pytest.mark.anyio
async def test_async_and_sync_facades_share_one_database(db_url: str) -> None:
    """What WorkflowDB writes, its .aio twin and a new AsyncWorkflowDB read, and back."""
    sync_db = WorkflowDB(db_url)
    sync_db.create_run("from-sync", "s")
    await sync_db.aio.save_event("from-sync", "flow_start")
    await AsyncWorkflowDB(db_url).create_run("from-async", "a")

    assert {"from-sync", "from-async"} == {r["run_id"] for r in sync_db.list_runs()}
    assert ["flow_start"] == [e["event"] for e in sync_db.get_events("from-sync")]


# ── interrupted runs ────────────────────────────────────────────────────────


DEAD_OWNER = f"{socket.gethostname()}:999999:x"  # a pid no process has on this host


def test_a_running_run_whose_owner_pid_is_dead_is_interrupted(db_url: str) -> None:
    """A running run owned by a dead process of this host reads as interrupted everywhere."""
    db = WorkflowDB(db_url)
    db.create_run("orphan", "f")
    db.update_run("orphan", owner=DEAD_OWNER, heartbeat_at=iso())

    run = db.get_run("orphan")

    assert run is not None
    assert "interrupted" == run["status"]
    assert ["interrupted"] == [r["status"] for r in db.list_runs()]
    assert ["orphan"] == [r["run_id"] for r in db.list_runs(status="interrupted")]
    assert [] == db.list_runs(status="running")


def test_a_running_run_with_a_stale_heartbeat_is_interrupted(db_url: str) -> None:
    """A running run whose heartbeat is older than lease_seconds reads as interrupted."""
    db = WorkflowDB(db_url, lease_seconds=30)
    make_runs(db, [("stale", "f", "running", 1), ("fresh", "f", "running", 2),
                   ("done", "f", "completed", 3)])
    db.update_run("stale", owner="elsewhere:1:x", heartbeat_at=iso(seconds_ago=120))
    db.update_run("fresh", owner="elsewhere:2:x", heartbeat_at=iso())

    stale, fresh = db.get_run("stale"), db.get_run("fresh")

    assert stale is not None
    assert fresh is not None
    assert ("interrupted", "running") == (stale["status"], fresh["status"])
    assert ["stale"] == [r["run_id"] for r in db.list_runs(status="interrupted")]
    assert ["fresh"] == [r["run_id"] for r in db.list_runs(status="running")]
    assert {"stale": "interrupted", "fresh": "running", "done": "completed"} == {
        r["run_id"]: r["status"] for r in db.list_runs()}


def test_lease_seconds_decides_when_a_heartbeat_is_stale(db_url: str) -> None:
    """The same two-minute-old heartbeat is stale under a 30 s lease, live under an hour's."""
    WorkflowDB(db_url).create_run("r1")
    WorkflowDB(db_url).update_run("r1", owner="elsewhere:1:x", heartbeat_at=iso(120))
    short, long = WorkflowDB(db_url, lease_seconds=30), WorkflowDB(db_url, lease_seconds=3600)

    assert "interrupted" == short.get_run("r1")["status"]  # type: ignore[index]
    assert "running" == long.get_run("r1")["status"]  # type: ignore[index]
    assert ["r1"] == [r["run_id"] for r in short.list_runs(status="interrupted")]
    assert [] == long.list_runs(status="interrupted")


def test_interrupted_is_not_stored_and_other_statuses_are_never_interrupted(
        db_url: str) -> None:
    """Only running runs can read as interrupted; the stored status is left as it was."""
    db = WorkflowDB(db_url)
    make_runs(db, [("failed-old", "f", "failed", 1), ("running-old", "f", "running", 2)])
    for run_id in ("failed-old", "running-old"):
        db.update_run(run_id, owner=DEAD_OWNER, heartbeat_at=iso(3600))

    assert "failed" == db.get_run("failed-old")["status"]  # type: ignore[index]
    assert "interrupted" == db.get_run("running-old")["status"]  # type: ignore[index]
    assert {"interrupted": 1, "failed": 1} == db.count_runs()
