"""A resume whose updates hold a key checkpoints cannot hold is refused before the run is
claimed, as ``db.resume`` refuses it: the paused run stays exactly as it was. (It used to
be claimed and run, the bad key kept only in memory: the run paused again with the
update silently gone, or failed at its next checkpoint.)"""

from __future__ import annotations

import re
from typing import Any

import pytest

from pocoflow import CheckpointEncodeError, Flow, Node, Pause, WorkflowDB


class Ask(Node):
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        if "answer" not in store:
            raise Pause("needs an answer")


@pytest.mark.parametrize("key", [1, None, ("a", 1)])
def test_resume_updates_with_a_key_that_is_not_a_str_change_nothing(db_url: str,
                                                                    key: Any) -> None:
    """CheckpointEncodeError (a TypeError) naming the key; the run stays paused with
    the same row, events and checkpoints, and a good resume then completes it."""
    db = WorkflowDB(db_url)
    flow = Flow(Ask(), db=db, run_id="asks", flow_name="asks")
    flow.run({})
    before = db.get_run("asks"), db.get_events("asks"), db.get_checkpoints("asks")

    with pytest.raises(CheckpointEncodeError, match=re.escape(f"store key {key!r} is a")) as caught:
        flow.resume("asks", updates={key: "x"})

    assert isinstance(caught.value, TypeError)
    assert "Use a string key" in str(caught.value)
    assert before == (db.get_run("asks"), db.get_events("asks"), db.get_checkpoints("asks"))
    assert {"answer": 42} == flow.resume("asks", updates={"answer": 42}).as_dict()
