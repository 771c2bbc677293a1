"""Calls that must end: a hang fails the test instead of stalling the suite."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def bounded(call: Callable[[], Any], seconds: float = 60.0) -> BaseException | None:
    """Run *call* in a thread; return what it raised (None: nothing). Fails the test if
    it is still running after *seconds*: a hang, not a slow failure."""
    raised: list[BaseException | None] = [None]

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            raised[0] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the call still hangs after {seconds} s"
    return raised[0]
