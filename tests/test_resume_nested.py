"""Resume inside nested flows: a run that stopped in a flow used as a node goes on at
the inner node where it stopped; no inner or outer step that was recorded runs again."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pocoflow import Flow, Node, Pause, WorkflowDB

CALLS: list[str] = []


class Mark(Node):
    """Appends its name to CALLS and to store["trail"]; fails while its name is in FAIL."""

    FAIL: ClassVar[set[str]] = set()

    def __init__(self, name: str) -> None:
        super().__init__()
        self.label = name

    @property
    def name(self) -> str:
        return self.label

    def exec(self, prep_res: Any) -> None:
        CALLS.append(self.label)
        if self.label in Mark.FAIL:
            raise RuntimeError(f"{self.label} failed")

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["trail"] = [*store.get("trail", []), self.label]


class Ask(Node):
    """Pauses until the store holds an answer."""

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        CALLS.append("Ask")
        if "answer" not in store:
            raise Pause("waiting for an answer")
        store["trail"] = [*store.get("trail", []), f"Ask={store['answer']}"]


def chain(*nodes: Any) -> Any:
    for a, b in itertools.pairwise(nodes):
        a.then("default", b)
    return nodes[0]


def two_levels(db_url: str) -> Flow:
    deep = Flow(chain(Mark("D1"), Mark("D2"), Mark("D3")), flow_name="deep")
    mid = Flow(chain(Mark("M1"), deep, Mark("M2")), flow_name="mid")
    return Flow(chain(Mark("Start"), mid, Mark("End")), db_url=db_url, flow_name="outer",
                run_id="nest-1")


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    Mark.FAIL = set()


def test_failure_two_flows_deep_resumes_at_the_failing_inner_node(db_url: str) -> None:
    """A run that failed in a flow nested in a flow resumes at that innermost node: every
    node before it, at every level, ran exactly once in all."""
    Mark.FAIL = {"D2"}
    with pytest.raises(RuntimeError, match="D2 failed"):
        two_levels(db_url).run({})
    assert ["Start", "M1", "D1", "D2"] == CALLS

    Mark.FAIL = set()
    CALLS.clear()
    store = two_levels(db_url).resume("nest-1")

    assert ["D2", "D3", "M2", "End"] == CALLS
    assert ["Start", "M1", "D1", "D2", "D3", "M2", "End"] == store["trail"]
    db = WorkflowDB(db_url)
    assert "completed" == db.get_run("nest-1")["status"]
    assert {"nest-1.1": "completed", "nest-1.1.1": "completed"} == {
        r["run_id"]: r["status"] for r in db.list_runs(include_nested=True)
        if r["parent_run_id"]}
    assert store.as_dict() == db.load_checkpoint("nest-1", 2).as_dict()
    inner_ends = [e["node_name"] for e in db.get_events("nest-1.1.1") if e["event"] == "node_end"]
    assert ["D1", "D2", "D3"] == inner_ends


def test_pause_inside_a_nested_flow_resumes_there_with_the_update(db_url: str) -> None:
    """A Pause raised inside a nested flow ends the run paused; resume(updates=...) goes on
    at the pausing inner node with the update, skipping the inner nodes already done."""
    def build() -> Flow:
        inner = Flow(chain(Mark("I1"), Ask(), Mark("I2")), flow_name="inner")
        return Flow(chain(Mark("Start"), inner, Mark("End")), db_url=db_url,
                    flow_name="outer", run_id="ask-1")

    build().run({})
    assert "paused" == WorkflowDB(db_url).get_run("ask-1")["status"]
    CALLS.clear()

    store = build().resume("ask-1", updates={"answer": 42})

    assert ["Ask", "I2", "End"] == CALLS
    assert ["Start", "I1", "Ask=42", "I2", "End"] == store["trail"]
    assert "completed" == WorkflowDB(db_url).get_run("ask-1")["status"]


SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_resume_nested import Mark, chain
    from pocoflow import Flow

    def build(url):
        inner = Flow(chain(Mark("I1"), Mark("I2")), flow_name="inner")
        return Flow(chain(Mark("Start"), inner, Mark("End")), db_url=url, flow_name="outer",
                    run_id="kill-1"), inner

    if __name__ == "__main__":
        flow, inner = build(sys.argv[1])
        # dies after the nested flow's last step is committed, before the outer run
        # records that the nested flow finished
        inner.on("flow_end", lambda steps, store: os.kill(os.getpid(), signal.SIGKILL))
        flow.run({{}})
""")


def test_killed_right_after_a_nested_flow_finished_goes_on_after_it(db_url: str,
                                                                    tmp_path: Path) -> None:
    """A process killed after a nested flow's last step, before the outer run recorded
    the nested flow as done, resumes after the nested flow: none of it runs again."""
    script = tmp_path / "killed.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    child = subprocess.run([sys.executable, str(script), db_url], capture_output=True,
                           text=True, timeout=60, check=False)
    assert -signal.SIGKILL == child.returncode, child.stderr
    db = WorkflowDB(db_url)
    assert "interrupted" == db.get_run("kill-1")["status"]

    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        flow, _ = importlib.import_module("killed").build(db_url)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("killed", None)
    store = flow.resume("kill-1")

    assert ["End"] == CALLS
    assert ["Start", "I1", "I2", "End"] == store["trail"]
    assert ("completed", 3) == (db.get_run("kill-1")["status"],
                                db.get_run("kill-1")["total_steps"])
