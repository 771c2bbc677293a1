"""Text a database column cannot hold (a lone surrogate from ``os.fsdecode`` of a bad file
name, a NUL byte, which PostgreSQL refuses) is stored escaped: the caller still gets the
run's own exception, the run ends with its status and error, and it resumes."""

from __future__ import annotations

import os
from typing import Any

import pytest

from pocoflow import Flow, Node, Store, WorkflowDB

#: What ``os.fsdecode`` makes of a file name that is not UTF-8.
BAD_NAME = os.fsdecode(b"report-\xff.txt")
SURROGATE = "\udcff"


class Open(Node):
    """Fails with *error* while ``store["fail"]`` is set, else returns *action*."""

    def __init__(self, error: BaseException | None = None, action: str = "default") -> None:
        super().__init__(name="Open")
        self.error = error
        self.action = action

    def prep(self, store: Store) -> Any:
        return store.get("fail", False)

    def exec(self, fail: Any) -> Any:
        if fail and self.error is not None:
            raise self.error
        return None

    def post(self, store: Store, prep_res: Any, exec_res: Any) -> str:
        store["opened"] = store.get("opened", 0) + 1
        return self.action


class Done(Node):
    def post(self, store: Store, prep_res: Any, exec_res: Any) -> None:
        store["done"] = True


def events_of(db: WorkflowDB, run_id: str) -> list[tuple[str, Any, Any]]:
    return [(e["event"], e["action"], e["error_msg"]) for e in db.get_events(run_id)]


@pytest.mark.parametrize("message", [f"no such file: {BAD_NAME}", "bad byte \x00 here"],
                         ids=["surrogate", "nul"])
def test_an_error_message_the_database_cannot_hold_fails_the_run_with_it(
        db_url: str, message: str) -> None:
    """A node's exception whose message holds a lone surrogate or a NUL reaches the caller
    as it was raised; the run is recorded failed, its error escaped, its events whole;
    and the run resumes to completed."""
    error = FileNotFoundError(message)
    db = WorkflowDB(db_url)
    flow = Flow(start=Open(error), db=db, run_id="bad-text")

    with pytest.raises(FileNotFoundError) as caught:
        flow.run(Store({"fail": True}))

    assert error is caught.value
    run = db.get_run("bad-text")
    shown = message.replace(SURROGATE, "\\udcff").replace("\x00", "\\x00")
    assert ("failed", shown) == (run["status"], run["error_msg"])
    assert [("flow_start", None, None), ("node_start", None, None),
            ("node_error", None, shown), ("flow_end", None, shown)] == events_of(db, "bad-text")

    store = flow.resume("bad-text", updates={"fail": False})

    assert 1 == store["opened"]
    assert "completed" == db.get_run("bad-text")["status"]


@pytest.mark.parametrize("action", [f"open {BAD_NAME}", "go\x00on"], ids=["surrogate", "nul"])
def test_an_action_the_database_cannot_hold_is_recorded_escaped(db_url: str,
                                                                 action: str) -> None:
    """A node returning an action with a lone surrogate or a NUL is followed along its
    edge as usual, and its node_end event holds the action escaped."""
    db = WorkflowDB(db_url)
    start = Open(action=action)
    start.then(action, Done())
    store = Flow(start=start, db=db, run_id="odd-action").run({})

    assert store["done"] is True
    run = db.get_run("odd-action")
    assert ("completed", 2) == (run["status"], run["total_steps"])
    shown = action.replace(SURROGATE, "\\udcff").replace("\x00", "\\x00")
    assert shown in [action for _, action, _ in events_of(db, "odd-action")]


def test_a_flow_name_and_run_id_from_a_bad_file_name_are_recorded_and_found(
        db_url: str) -> None:
    """A flow named after a file whose name is not UTF-8 (its run ids carry that name)
    records its runs; the run is found, listed and resumed by the ids and names the
    program holds, and a failing run still ends failed with its own error."""
    db = WorkflowDB(db_url)
    run_id = f"{BAD_NAME}-1"
    flow = Flow(start=Open(ValueError("bad row")), db=db, flow_name=BAD_NAME, run_id=run_id)

    with pytest.raises(ValueError, match="bad row"):
        flow.run(Store({"fail": True}))

    run = db.get_run(run_id)
    assert ("failed", "bad row") == (run["status"], run["error_msg"])
    assert "report-\\udcff.txt" == run["flow_name"]
    assert [run["run_id"]] == [r["run_id"] for r in db.list_runs(flow_name=BAD_NAME)]
    assert 4 == len(db.get_events(run_id))

    flow.resume(run_id, updates={"fail": False})

    assert "completed" == db.get_run(run_id)["status"]
    assert 1 == db.load_checkpoint(run_id, 0)["opened"]
    handle = Flow(start=Open(), db=db, flow_name=BAD_NAME).run_background({})
    handle.wait(60)
    assert "completed" == handle.status


def test_the_database_api_stores_such_text_escaped(db_url: str) -> None:
    """WorkflowDB's own writes (0.2's create_run, save_event, update_run) take such text
    too, and reads by the same run id find it."""
    db = WorkflowDB(db_url)
    run_id = f"api-{SURROGATE}"
    db.create_run(run_id, flow_name=f"flow-{SURROGATE}")
    db.save_event(run_id, "node_error", node_name="N\x00", error_msg=f"oops {BAD_NAME}")
    db.update_run(run_id, status="failed", error_msg="nul \x00")

    run = db.get_run(run_id)
    assert ("api-\\udcff", "flow-\\udcff", "failed", "nul \\x00") == (
        run["run_id"], run["flow_name"], run["status"], run["error_msg"])
    [event] = db.get_events(run_id)
    assert ("N\\x00", "oops report-\\udcff.txt") == (event["node_name"], event["error_msg"])
