"""Run ids: default ids never collide, and a new run never overwrites a recorded one."""

from __future__ import annotations

from typing import Any

import pytest

from pocoflow import Flow, Node, RunExistsError, WorkflowDB
from pocoflow.engine import new_run_id


class Mark(Node):
    """Counts its executions in ``self.calls`` and writes ``store["by"]``."""

    def __init__(self, by: str) -> None:
        super().__init__(name="Mark")
        self.by = by
        self.calls = 0

    def exec(self, prep_res: Any) -> None:
        self.calls += 1

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["by"] = self.by


def test_a_new_run_on_an_existing_run_id_is_refused_before_any_node_runs(db_url: str) -> None:
    """Flow(run_id=...) naming a recorded run raises RunExistsError naming the run and the
    fix; the node never runs and the stored run (row, events, checkpoints) is untouched."""
    Flow(start=Mark("first"), db_url=db_url, run_id="report-7").run({})
    db = WorkflowDB(db_url)
    before = (db.get_run("report-7"), db.get_events("report-7"),
              db.get_checkpoints("report-7"))
    second = Mark("second")

    with pytest.raises(RunExistsError, match=r"Run 'report-7' already exists.*resume"):
        Flow(start=second, db_url=db_url, run_id="report-7").run({})

    assert 0 == second.calls
    assert before == (db.get_run("report-7"), db.get_events("report-7"),
                      db.get_checkpoints("report-7"))
    assert "first" == db.load_checkpoint("report-7", 0)["by"]


def test_a_run_whose_id_looks_like_a_nested_runs_is_never_overwritten(db_url: str) -> None:
    """A run recorded as 'job.1' is not overwritten by the nested flow that run 'job'
    starts at step 1 (the same id): that nested start is refused, naming both and the
    fix, 'job' ends failed, and 'job.1' keeps its row, events and checkpoints."""
    db = WorkflowDB(db_url)
    Flow(start=Mark("billing"), db=db, run_id="job.1", flow_name="billing").run({})
    before = (db.get_run("job.1"), db.get_events("job.1"), db.get_checkpoints("job.1"))
    inner = Flow(start=Mark("inner"), flow_name="inner")
    first = Mark("outer")
    first.then("default", inner)

    with pytest.raises(RunExistsError, match=r"Run 'job' cannot record its nested flow's "
                       r"run 'job\.1': another run .* has that id"):
        Flow(start=first, db=db, run_id="job", flow_name="outer").run({})

    assert before == (db.get_run("job.1"), db.get_events("job.1"), db.get_checkpoints("job.1"))
    assert {"job", "job.1"} == {r["run_id"] for r in db.list_runs()}
    assert "failed" == db.get_run("job")["status"]  # type: ignore[index]


def test_a_refused_run_id_is_also_a_value_error() -> None:
    """RunExistsError is caught as ValueError (bad input) too."""
    assert issubclass(RunExistsError, ValueError)


def test_default_run_ids_are_unique_and_carry_128_random_bits() -> None:
    """100,000 default ids of one flow are all different; each is the flow name and 36
    Crockford base32 characters (48-bit time in ms, then 128 random bits)."""
    flow = Flow(start=Mark("x"), flow_name="many")
    ids = {new_run_id(flow) for _ in range(100_000)}

    assert 100_000 == len(ids)
    tails = {run_id.removeprefix("many-") for run_id in ids}
    assert {36} == {len(tail) for tail in tails}
    randoms = {tail[10:] for tail in tails}  # the time prefix aside
    assert 100_000 == len(randoms)


def test_default_run_ids_sort_by_start_time(tmp_path: Any) -> None:
    """Ids made a few milliseconds apart sort in the order they were made."""
    import time

    flow = Flow(start=Mark("x"), flow_name="sorted")
    made = []
    for _ in range(5):
        made.append(new_run_id(flow))
        time.sleep(0.003)
    assert made == sorted(made)
