"""A resume that is refused changes nothing: the run stays as it was, resumable."""

from __future__ import annotations

from typing import Any

import pytest

from pocoflow import Flow, Node, ResumeError, WorkflowDB


class First(Node):
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        store["first"] = True
        return "next"


class Flaky(Node):
    fail = True

    def exec(self, prep_res: Any) -> None:
        if Flaky.fail:
            raise ValueError("flaky")

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["flaky"] = "done"


class Other(Node):
    pass


def build(db_url: str) -> Flow:
    first, flaky = First(), Flaky()
    first.then("next", flaky)
    return Flow(start=first, db_url=db_url, flow_name="refusals", run_id="r-1")


def test_resume_with_the_wrong_flow_leaves_the_run_resumable(db_url: str) -> None:
    """Resuming with a flow that lacks the stopped node is a ResumeError, and the run is
    left failed (not claimed), so the right flow resumes it afterwards."""
    Flaky.fail = True
    with pytest.raises(ValueError, match="flaky"):
        build(db_url).run({})
    db = WorkflowDB(db_url)
    before = db.get_run("r-1")

    with pytest.raises(ResumeError, match="Flaky"):
        Flow(start=Other(), db_url=db_url, flow_name="refusals").resume("r-1")

    assert before == db.get_run("r-1")
    Flaky.fail = False
    store = build(db_url).resume("r-1")
    assert {"first": True, "flaky": "done"} == dict(store)
    assert "completed" == db.get_run("r-1")["status"]


def test_resume_with_a_bad_updates_argument_leaves_the_run_as_it_was(db_url: str) -> None:
    """updates= that is not a mapping is a TypeError before anything is written."""
    Flaky.fail = True
    with pytest.raises(ValueError, match="flaky"):
        build(db_url).run({})
    db = WorkflowDB(db_url)
    before = db.get_run("r-1")

    with pytest.raises(TypeError, match="mapping"):
        build(db_url).resume("r-1", updates=[("flaky", 1)])  # type: ignore[arg-type]

    assert before == db.get_run("r-1")
