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
