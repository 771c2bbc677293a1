"""A retry policy that can never work is refused before the run starts: an infinite or
NaN retry_delay or retry_backoff (an infinite delay hung the run forever at its first
retry) and a NaN timeout."""

from __future__ import annotations

import math
from typing import Any

import pytest

from pocoflow import Flow, FlowConfigError, Node
from tests.reliability.hangs import bounded

RAN: list[int] = []


class Flaky(Node):
    def exec(self, prep_res: Any) -> None:
        RAN.append(1)
        if len(RAN) == 1:
            raise ValueError("once")


@pytest.mark.parametrize(("option", "value"), [
    ("retry_delay", math.inf), ("retry_delay", math.nan),
    ("retry_backoff", math.inf), ("retry_backoff", math.nan),
    ("timeout", math.nan),
])
def test_a_retry_policy_that_cannot_work_is_refused_before_the_run(option: str,
                                                                     value: float) -> None:
    """FlowConfigError (a ValueError) naming the node, the option and the value; no node
    ran."""
    RAN.clear()
    node = Flaky(name="Fetch", max_retries=2, **{option: value})
    error = bounded(lambda: Flow(node).run({}))

    assert isinstance(error, FlowConfigError), repr(error)
    assert isinstance(error, ValueError)
    assert f"Node 'Fetch': {option} must be" in str(error)
    assert repr(value) in str(error)
    assert [] == RAN


def test_an_infinite_timeout_is_still_no_timeout() -> None:
    """timeout=math.inf stays allowed: it means no limit."""
    RAN.clear()
    Flow(Flaky(max_retries=2, timeout=math.inf)).run({})
    assert [1, 1] == RAN
