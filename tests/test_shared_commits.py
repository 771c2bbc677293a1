"""Concurrent runs of one process share commits, and lose none of their guarantees.

When many runs of one event loop have a step ready at the same moment, their
writes go to the database in one transaction (issue "Beyond one process":
1,000 concurrent runs must not cost 7,000 commits). What a user relies on
stays true: each step is durable before its run's next node starts, a write
refused for one run (a taken run id, a run taken over) fails that run only,
and a cancelled run's last step is not lost.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sqlalchemy
import sqlalchemy.pool

from pocoflow import AsyncNode, Flow, Node, Store, WorkflowDB
from pocoflow.errors import PersistenceError, RunExistsError, RunTakenOverError
from pocoflow.persistence import writer as writer_module
from pocoflow.persistence.database import Database

RUNS = 40
STEPS = 5
pytestmark = pytest.mark.anyio


class Checked(Node):
    """Before each step, reads the database: the previous step of its own run must
    already be there (``store["seen"]`` keeps the last step each one found; steps
    count from 0)."""

    threaded = False

    def __init__(self, db: WorkflowDB) -> None:
        super().__init__()
        self.db = db

    def prep(self, store: Any) -> Any:
        steps = [row["step"] for row in self.db.checkpoint_steps(store.run_id)]
        store["seen"] = [*store.get("seen", []), max(steps, default=-1)]
        return None

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["n"] = store.get("n", 0) + 1


def chain(make: Any, steps: int = STEPS) -> Any:
    nodes = [make() for _ in range(steps)]
    for before, after in itertools.pairwise(nodes):
        before.then("default", after)
    return nodes[0]


def database_of(db: WorkflowDB) -> Database:
    return db.records.database


def start_runs(group: Any, flow: Flow, stores: list[Store]) -> list[BaseException | None]:
    """Start a run of *flow* per store in *group*; the list fills with the error each
    run raised (an interrupt too; a cancel is kept and raised on, for the group)."""
    outcome: list[BaseException | None] = [None] * len(stores)

    async def one(index: int) -> None:
        try:
            await flow.run_async(stores[index])
        except anyio.get_cancelled_exc_class() as exc:
            outcome[index] = exc
            raise
        except BaseException as exc:  # a KeyboardInterrupt is an outcome looked at too
            outcome[index] = exc

    for index in range(len(stores)):
        group.start_soon(one, index)
    return outcome


async def run_many(flow: Flow, stores: list[Store]) -> list[BaseException | None]:
    """Run every store at once in one task group; per run, the error it raised."""
    async with anyio.create_task_group() as group:
        outcome = start_runs(group, flow, stores)
    return outcome


async def test_concurrent_steps_share_commits(db_url: str) -> None:
    db = WorkflowDB(db_url)
    flow = Flow(chain(lambda: Checked(db)), db=db, flow_name="shared")
    db.checkpoint_steps("none")  # opened (and migrated) before the count starts
    writer = database_of(db).writer
    before = writer.commits
    stores = [Store({"i": i}) for i in range(RUNS)]
    assert await run_many(flow, stores) == [None] * RUNS

    writes = RUNS * (STEPS + 2)  # per run: its start, one per step, its end
    assert writer.commits - before < writes / 4, "ready steps did not share commits"
    for store in stores:  # each step found its run's previous step already durable
        assert store["seen"] == list(range(-1, STEPS - 1))
        run = db.get_run(store.run_id)
        assert run is not None
        assert run["status"] == "completed"
        assert [c["step"] for c in db.checkpoint_steps(store.run_id)] == list(range(STEPS))
        assert db.load_checkpoint(store.run_id, STEPS - 1)["n"] == STEPS


async def test_a_taken_run_id_fails_that_run_only(db_url: str) -> None:
    db = WorkflowDB(db_url)
    Flow(chain(lambda: Checked(db), 1), db=db, flow_name="first", run_id="taken").run({})
    stores = [Store({"i": i}) for i in range(10)]
    flows = [
        Flow(
            chain(lambda: Checked(db)), db=db, flow_name="many", run_id="taken" if i == 3 else None
        )
        for i in range(10)
    ]
    outcome: list[BaseException | None] = [None] * 10

    async def one(index: int) -> None:
        try:
            await flows[index].run_async(stores[index])
        except Exception as exc:
            outcome[index] = exc

    async with anyio.create_task_group() as group:
        for index in range(10):
            group.start_soon(one, index)

    assert isinstance(outcome[3], RunExistsError)
    assert "taken" in str(outcome[3])
    assert [o for i, o in enumerate(outcome) if i != 3] == [None] * 9
    first = db.get_run("taken")
    assert first is not None
    assert first["flow_name"] == "first"
    for index, store in enumerate(stores):
        if index != 3:
            assert db.get_run(store.run_id)["status"] == "completed"  # type: ignore[index]


async def test_a_run_taken_over_fails_alone(db_url: str) -> None:
    """Another process claims one run mid-way: that run stops with RunTakenOverError
    and writes nothing more; the runs that shared its commits finish."""
    db = WorkflowDB(db_url)
    victim: dict[str, str] = {}

    class Stolen(Checked):
        def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
            super().post(store, prep_res, exec_res)
            if store["i"] == 0 and store["n"] == 2:  # another owner claims the row
                victim["run_id"] = store.run_id
                db.update_run(store.run_id, owner="elsewhere:1:x:y")

    flow = Flow(chain(lambda: Stolen(db)), db=db, flow_name="stolen")
    stores = [Store({"i": i}) for i in range(12)]
    outcome = await run_many(flow, stores)

    assert isinstance(outcome[0], RunTakenOverError)
    assert outcome[1:] == [None] * 11
    steps = [c["step"] for c in db.checkpoint_steps(victim["run_id"])]
    assert max(steps) < STEPS  # its later steps were not written
    for store in stores[1:]:
        assert db.get_run(store.run_id)["status"] == "completed"  # type: ignore[index]


async def test_a_cancelled_run_keeps_its_last_step(db_url: str) -> None:
    """Cancelling the task group while steps wait for a shared commit: every step that
    finished is in the database, every run ends 'cancelled', the file stays usable."""
    db = WorkflowDB(db_url)

    class Sleepy(AsyncNode):
        async def exec_async(self, prep_res: Any) -> None:
            await anyio.sleep(0.005)

        async def post_async(self, store: Any, prep_res: Any, exec_res: Any) -> None:
            store["n"] = store.get("n", 0) + 1

    flow = Flow(chain(Sleepy, 50), db=db, flow_name="cancelled")
    stores = [Store() for _ in range(20)]
    with anyio.move_on_after(0.2):
        await run_many(flow, stores)
    for store in stores:
        run = db.get_run(store.run_id)
        assert run is not None
        assert run["status"] in ("cancelled", "completed")
        steps = [c["step"] for c in db.checkpoint_steps(store.run_id)]
        assert steps == list(range(len(steps)))
        if steps:
            assert db.load_checkpoint(store.run_id, steps[-1])["n"] == steps[-1] + 1
    assert db.list_runs(status="running") == []


def test_runs_in_flight_counts_back_to_zero(tmp_path: Path) -> None:
    """The count that turns shared commits on goes back to zero after failures too."""
    db = WorkflowDB(tmp_path / "count.db")

    class Boom(Node):
        threaded = False

        def exec(self, prep_res: Any) -> None:
            raise ValueError("boom")

    async def main() -> None:
        flow = Flow(Boom(), db=db, flow_name="boom")
        assert await run_many(flow, [Store() for _ in range(5)]) != [None] * 5
        ok = Flow(chain(lambda: Checked(db)), db=db, flow_name="ok")
        assert await run_many(ok, [Store() for _ in range(5)]) == [None] * 5

    anyio.run(main)
    assert database_of(db).runs_in_flight == 0


async def test_an_interrupt_in_a_shared_commit_leaves_the_database_usable(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C (KeyboardInterrupt) landing while one run commits the steps of many:
    that run raises it, every other run of the batch gets its own PersistenceError
    naming it (not one exception object raised in ten tasks), the transaction is
    rolled back rather than left holding the database's write lock, and the next runs
    record as usual."""
    db = WorkflowDB(db_url)
    db.checkpoint_steps("none")  # opened (and migrated) before the interrupt is armed
    real_apply = writer_module.apply_locked if "sqlite" in db_url else writer_module.apply_all
    calls = itertools.count()
    shared: list[int] = []  # how many runs the interrupted commit carried

    def interrupted(*args: Any) -> Any:
        writes = args[-1]
        if len(writes) > 1 and next(calls) == 2:  # the third shared commit: mid-run
            shared.append(len(writes))
            raise KeyboardInterrupt
        return real_apply(*args)

    name = "apply_locked" if "sqlite" in db_url else "apply_all"
    monkeypatch.setattr(writer_module, name, interrupted)
    flow = Flow(chain(lambda: Checked(db)), db=db, flow_name="interrupted")
    stores = [Store({"i": i}) for i in range(10)]
    outcome = await run_many(flow, stores)

    interrupts = [o for o in outcome if isinstance(o, KeyboardInterrupt)]
    refusals = [o for o in outcome if isinstance(o, PersistenceError)]
    assert len(interrupts) == 1
    assert len(refusals) == shared[0] - 1
    assert len({id(o) for o in interrupts + refusals}) == shared[0]  # each its own error
    for store, error in zip(stores, outcome, strict=True):
        if isinstance(error, PersistenceError):
            assert f"Run '{store.run_id}'" in str(error)
            assert "KeyboardInterrupt" in str(error)
            assert error.__cause__ is interrupts[0]
        elif error is None:  # a run whose step was not in that commit
            assert db.get_run(store.run_id)["status"] == "completed"  # type: ignore[index]
        steps = [c["step"] for c in db.checkpoint_steps(store.run_id)]
        assert steps == list(range(len(steps)))  # what was recorded is whole

    monkeypatch.setattr(writer_module, name, real_apply)
    after = [Store({"i": i}) for i in range(5)]
    assert await run_many(flow, after) == [None] * 5  # not wedged by an open transaction
    for store in after:
        assert db.get_run(store.run_id)["status"] == "completed"  # type: ignore[index]


async def test_runs_cancelled_while_their_start_waits_for_the_database_end_cancelled(
    db_url: str,
) -> None:
    """Another process holds the database's write lock as runs start, and the runs are
    cancelled while their start waits for it: once the lock is let go, each run is
    recorded start to end as 'cancelled' (its start could not be cut short, so neither
    is its end), not left 'running' (read as interrupted) with no end."""
    db = WorkflowDB(db_url)
    db.checkpoint_steps("none")  # opened (and migrated) before the lock is taken
    engine = sqlalchemy.create_engine(db_url, poolclass=sqlalchemy.pool.NullPool)
    holder = engine.connect()
    if "sqlite" in db_url:
        holder.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        holder.exec_driver_sql("BEGIN")
        holder.exec_driver_sql("LOCK TABLE pf_runs IN EXCLUSIVE MODE")

    class Yielding(AsyncNode):  # (a node that awaits is where a cancel gets in)
        async def exec_async(self, prep_res: Any) -> None:
            await anyio.lowlevel.checkpoint()

    flow = Flow(chain(Yielding), db=db, flow_name="held")
    stores = [Store({"i": i}) for i in range(6)]
    try:
        async with anyio.create_task_group() as group:
            outcome = start_runs(group, flow, stores)
            await anyio.sleep(0.3)  # the starts are waiting for the lock by now
            group.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.2)
                holder.rollback()  # let go: the starts commit, then the runs stop
    finally:
        holder.close()
        engine.dispose()

    cancelled = anyio.get_cancelled_exc_class()
    assert all(isinstance(o, cancelled) for o in outcome)
    for store in stores:
        run = db.get_run(store.run_id)
        assert run is not None
        assert run["status"] == "cancelled"
        kinds = [e["event"] for e in db.get_events(store.run_id)]
        assert kinds[0] == "flow_start"
        assert kinds[-1] == "flow_end"
    assert db.list_runs(status="interrupted") == []
